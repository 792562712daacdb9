"""Data products and data-sharing contracts, and the decision whether a contract is active.

A contract is *active* at time ``t`` when, and only when:

1. its document is well formed and uses only what this gateway implements (an unknown key or
   field action refuses the contract; nothing is silently ignored);
2. it names a known product owned by its provider (and the gateway's own organisation, if set);
3. it carries a valid signature by the provider AND one by the consumer, with keys published in
   ``keys/``, over its RFC 8785 canonical form, and no other signature;
4. ``valid_from <= t < valid_until``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from joserfc.jwk import KeySet
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from gateway.core.documents import canonical_bytes, canonical_hash, key_lines
from gateway.core.filters import parse_filter
from gateway.core.jose import signature_header, verify_detached
from gateway.core.quotas import Quotas
from gateway.core.service_levels import ServiceLevels
from gateway.errors import DocumentInvalid, FilterSyntaxError, SignatureInvalid

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=128)]
FieldPath = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9_$@-]+(\[\])?(\.[A-Za-z0-9_$@-]+(\[\])?)*$", max_length=512
    ),
]


_Model = TypeVar("_Model", bound=BaseModel)


class FieldAction(enum.StrEnum):
    """What happens to a field on its way out. Unlisted fields are dropped."""

    CLEAR = "clear"
    DROP = "drop"
    ENCRYPT = "encrypt"  # a JWE only the consumer can decrypt
    HASH = "hash"  # a keyed pseudonym, stable within one contract version
    MASK = "mask"  # characters replaced by a declared pattern


class Mask(BaseModel):
    """``keep_first``/``keep_last`` characters stay; the others become ``char``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_first: int = Field(default=0, ge=0, le=64)
    keep_last: int = Field(default=0, ge=0, le=64)
    char: str = Field(default="*", min_length=1, max_length=1)

    def apply(self, value: Any) -> Any:
        if value is None:
            return None
        text = value if isinstance(value, str) else str(value)
        keep = self.keep_first + self.keep_last
        if len(text) <= keep:
            return self.char * len(text)
        tail = text[len(text) - self.keep_last :] if self.keep_last else ""
        return text[: self.keep_first] + self.char * (len(text) - keep) + tail


class FieldRule(BaseModel):
    """A field's rule as written in a contract: ``clear``, ``drop``, ``encrypt``, ``hash``, or
    ``{mask: {keep_first: 0, keep_last: 4, char: "*"}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: FieldAction
    mask: Mask | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_document(cls, value: Any) -> Any:
        if isinstance(value, FieldAction | str):
            if value == "mask":
                raise ValueError("mask needs a pattern, e.g. {mask: {keep_last: 4}}")
            if value not in {a.value for a in FieldAction}:
                raise ValueError(
                    f"unknown action {value!r}: use clear, drop, encrypt, hash or {{mask: …}}"
                )
            return {"action": value}
        if isinstance(value, Mapping) and set(value) == {"mask"}:
            return {"action": "mask", "mask": value["mask"]}
        if isinstance(value, Mapping) and "action" in value:
            return value
        raise ValueError(
            "a field rule is clear, drop, encrypt, hash or {mask: {keep_first, keep_last, char}}"
        )

    @model_serializer
    def _as_document(self) -> Any:
        if self.mask is not None:
            return {"mask": self.mask.model_dump()}
        return self.action.value

    def __str__(self) -> str:
        if self.mask is not None:
            m = self.mask
            return f"mask (keep first {m.keep_first}, last {m.keep_last}, with {m.char!r})"
        return self.action.value


class RecordFormat(enum.StrEnum):
    """How a product's record values are encoded in its topic: JSON, or Avro or JSON Schema in
    the Schema Registry wire format (magic byte, schema id, payload). Partners receive JSON."""

    JSON = "json"
    AVRO = "avro"
    JSON_SCHEMA = "json-schema"


class Support(BaseModel):
    """Where partners and other teams ask about the product (ODCS ``support``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = None
    channel: str | None = Field(default=None, min_length=1, description="e.g. #team-orders")

    @model_validator(mode="after")
    def _some(self) -> Support:
        if not (self.email or self.url or self.channel):
            raise ValueError("name at least one of email, url, channel")
        return self


#: A relative path to a JSON or YAML file: no leading ``/``, no ``..`` (checked below).
SchemaRef = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._/-]*\.(json|ya?ml)$")
]
SemVer = Annotated[str, StringConstraints(pattern=r"^\d+\.\d+\.\d+$")]
TopicName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,249}$")]


class Product(BaseModel):
    """A data product: one internal topic offered to partners, owned by one internal team.

    The descriptor leans on ODCS v3 (Open Data Contract Standard): a team, a description, the
    schema of a record (JSON Schema, inline), its version, the record format, classification per
    field (``x-classification`` in the schema), retention and support. Field names stay the
    gateway's own where contracts already use them (``product``, ``owner``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    product: Identifier
    #: The organisation offering it (a contract's ``provider``).
    owner: Identifier
    #: The internal team that owns it: only its members (and admins) publish to it or see its
    #: consumers (a team name in the identity provider's teams claim).
    team: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", max_length=128)
    ]
    topic: TopicName
    description: str
    #: The schema's version; raise it with every change of ``schema``.
    version: SemVer = "1.0.0"
    format: RecordFormat = RecordFormat.JSON
    #: JSON Schema of the record value (as partners receive it, for formats decoded to JSON).
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    #: Where ``schema`` was read from: a JSON or YAML file beside the descriptor (or below).
    schema_ref: SchemaRef | None = None
    #: How long the topic keeps records (ISO 8601 period).
    retention: Annotated[str, StringConstraints(pattern=r"^P(\d+[YMWD])+$")] | None = None
    support: Support | None = None
    #: Where refused records go (default ``{topic}.dlq``).
    dead_letter_topic: TopicName | None = None
    #: Defaults for the service levels of contracts on this product (``core/service_levels.py``).
    service_levels: ServiceLevels | None = None

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            # Imported here: the partner's command line reads no product and has no validator.
            from gateway.core.schemas import check_schema

            check_schema(value)
        return value

    @field_validator("schema_ref")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and ".." in value.split("/"):
            raise ValueError("must stay below the descriptor's directory (no '..')")
        return value

    @property
    def dlq_topic(self) -> str:
        return self.dead_letter_topic or f"{self.topic}.dlq"

    def allows_path(self, path: str) -> bool:
        """False when the schema says ``path`` cannot exist: an object level that lists its
        ``properties`` without the name (unless ``additionalProperties`` allows more), or
        ``name[]`` on something that is not an array."""
        node: Any = self.json_schema
        for part in path.split("."):
            if not isinstance(node, dict):
                return True
            name = part.removesuffix("[]")
            properties = _properties(node)
            if properties is None:
                return True  # the schema does not describe this level
            if name not in properties:
                return node.get("additionalProperties") not in (None, False)
            node = properties[name]
            if part.endswith("[]"):
                if isinstance(node, dict) and node.get("type") not in (None, "array"):
                    return False
                node = node.get("items") if isinstance(node, dict) else None
        return True

    def field_paths(self) -> list[str]:
        """Dot paths of the schema's leaf properties (objects are walked into)."""
        return [path for path, _ in self.field_schemas()]

    def field_schemas(self) -> list[tuple[str, Any]]:
        """(dot path, schema) of each leaf property of the schema."""
        found: list[tuple[str, Any]] = []

        def walk(schema: Any, prefix: str) -> None:
            properties = _properties(schema)
            if not properties:
                if prefix:
                    found.append((prefix, schema))
                return
            for name, sub in properties.items():
                walk(sub, f"{prefix}.{name}" if prefix else str(name))

        walk(self.json_schema or {}, "")
        return found


def schema_at(schema: Any, path: str) -> Any:
    """The JSON Schema of ``path`` (``a.b``, ``items[].sku``) within ``schema``, or ``None``
    where ``schema`` does not describe it."""
    node = schema
    for part in path.split("."):
        properties = _properties(node)
        name = part.removesuffix("[]")
        if properties is None or name not in properties:
            return None
        node = properties[name]
        if part.endswith("[]"):
            node = node.get("items") if isinstance(node, dict) else None
    return node


def _properties(schema: Any) -> dict[str, Any] | None:
    """The ``properties`` of a JSON Schema object level, or ``None`` where it lists none."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    return properties if isinstance(properties, dict) else None


DocumentHash = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Terms(_Part):
    """The legal agreement the contract implements, pinned by the hash of its document."""

    reference: str = Field(min_length=1, description="URL or identifier of the terms document")
    sha256: DocumentHash
    usage: str | None = None


class Retention(_Part):
    """How long the consumer may keep the data and what happens after."""

    period: Annotated[str, StringConstraints(pattern=r"^P(\d+[YMWD])+$")]
    deletion: str = Field(min_length=1)


class Contact(_Part):
    organisation: Identifier
    role: str = Field(min_length=1)
    name: str = Field(min_length=1)
    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$")]


class Contract(BaseModel):
    """A data-sharing contract document as both organisations signed it.

    The legal members follow ODCS v3's vocabulary where it has one (purpose, limitations, terms
    with a document hash, retention with deletion obligations, contacts, jurisdiction).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    contract: Identifier
    version: int = Field(ge=1)
    #: ``sha256:<hex>`` of the previous version's canonical bytes; required from version 2.
    supersedes: DocumentHash | None = None
    provider: Identifier
    consumer: Identifier
    product: Identifier
    purpose: str = Field(min_length=1)
    limitations: list[str] = Field(default_factory=list)
    terms: Terms | None = None
    retention: Retention | None = None
    contacts: list[Contact] = Field(default_factory=list)
    jurisdiction: str | None = None
    valid_from: AwareDatetime
    valid_until: AwareDatetime
    fields: dict[FieldPath, FieldRule] = Field(min_length=1)
    #: Only records matching this expression are sent (see ``core/filters.py``).
    filter: str | None = None
    #: How much and how fast (bounded by the gateway's ceilings; see ``core/quotas.py``).
    quotas: Quotas | None = None
    #: What the provider promises (freshness, availability) and the partner's side of it,
    #: measured by the gateway (``core/service_levels.py``).
    service_levels: ServiceLevels | None = None
    signatures: list[str] = Field(default_factory=list)

    @field_validator("filter")
    @classmethod
    def _parsable_filter(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_filter(value)
            except FilterSyntaxError as exc:
                raise ValueError(exc.detail) from None
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Contract:
        if self.provider == self.consumer:
            raise ValueError("provider and consumer must be different organisations")
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if (self.version == 1) != (self.supersedes is None):
            raise ValueError(
                "version 1 supersedes nothing; every later version names the one before"
            )
        return self


class StatementKind(enum.StrEnum):
    SUSPEND = "suspend"
    RESUME = "resume"
    REVOKE = "revoke"


class Statement(BaseModel):
    """A signed statement about a contract: suspend and resume (by the provider), revoke (either).

    ``contract_version`` is the canonical hash of the version in force when it was made.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    statement: StatementKind
    contract: Identifier
    contract_version: DocumentHash
    issued_by: Identifier
    issued_at: AwareDatetime
    reason: str = Field(min_length=1)
    signatures: list[str] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StatementDocument:
    statement: Statement
    canonical: bytes
    hash: str
    source: str


class ContractState(enum.StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    REFUSED = "refused"
    #: No longer among the gateway's contracts (its file was removed).
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True, slots=True)
class ContractDocument:
    """A parsed contract together with the exact bytes its parties signed."""

    contract: Contract
    canonical: bytes
    hash: str
    source: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a contract may be used, and if not, why (a stable reason code and a sentence)."""

    state: ContractState
    reason: str
    detail: str

    @property
    def active(self) -> bool:
        return self.state is ContractState.ACTIVE


def describe_validation_error(
    exc: ValidationError, text: str | None = None, *, whole: str | None = "document"
) -> str:
    """One part per problem, naming the field (``whole`` for the whole, or no name) and, given
    the YAML text, its line; never the value given (it may be a secret)."""
    lines = key_lines(text) if text else {}
    parts = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or whole
        message = err["msg"].removeprefix("Value error, ")
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
        if where is None:
            parts.append(message)
        else:
            parts.append(f"line {line}, {where}: {message}" if line else f"{where}: {message}")
    return "; ".join(parts)


def _validated(model: type[_Model], data: dict[str, Any], source: str, text: str | None) -> _Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DocumentInvalid(f"{source}: {describe_validation_error(exc, text)}") from None


#: Reads a product's ``schema_ref`` (a path relative to the descriptor) into its JSON Schema.
SchemaFile = Callable[[str], dict[str, Any]]


def parse_product(
    data: dict[str, Any],
    *,
    source: str,
    text: str | None = None,
    schema_file: SchemaFile | None = None,
) -> Product:
    """A product descriptor; a ``schema_ref`` is read with ``schema_file``."""
    if data.get("schema_ref") is not None:
        if "schema" in data:
            raise DocumentInvalid(f"{source}: schema_ref: give schema or schema_ref, not both")
        if schema_file is None:
            raise DocumentInvalid(f"{source}: schema_ref: cannot be read here (no directory)")
        ref = _validated(Product, data, source, text).schema_ref  # the reference is checked
        try:
            data = {**data, "schema": schema_file(str(ref))}
        except DocumentInvalid as exc:
            raise DocumentInvalid(f"{source}: schema_ref {ref}: {exc.detail}") from None
    return _validated(Product, data, source, text)


def parse_contract(
    data: dict[str, Any], *, source: str, text: str | None = None
) -> ContractDocument:
    contract = _validated(Contract, data, source, text)
    return ContractDocument(contract, canonical_bytes(data), canonical_hash(data), source)


def parse_statement(
    data: dict[str, Any], *, source: str, text: str | None = None
) -> StatementDocument:
    statement = _validated(Statement, data, source, text)
    return StatementDocument(statement, canonical_bytes(data), canonical_hash(data), source)


def verify_signatures(doc: ContractDocument, keys: Mapping[str, KeySet]) -> None:
    """Both parties, and only they, signed ``doc``'s canonical bytes; else ``SignatureInvalid``."""
    contract = doc.contract
    verify_signed_by(
        doc.canonical, contract.signatures, (contract.provider, contract.consumer), keys
    )


def verify_signed_by(
    canonical: bytes, signatures: list[str], parties: tuple[str, ...], keys: Mapping[str, KeySet]
) -> None:
    """Each of ``parties``, and only they, signed ``canonical`` once; else ``SignatureInvalid``."""
    signed_by: set[str] = set()
    for signature in signatures:
        org = signature_header(signature).get("org")
        if org not in parties:
            raise SignatureInvalid(f"signature by {org!r}, who may not sign this document")
        if org in signed_by:
            raise SignatureInvalid(f"{org!r} signed more than once")
        org_keys = keys.get(org)
        if org_keys is None:
            raise SignatureInvalid(f"no published keys for {org!r}")
        verify_detached(signature, canonical, org_keys)
        signed_by.add(org)
    missing = [org for org in parties if org not in signed_by]
    if missing:
        raise SignatureInvalid(f"not signed by {' and '.join(missing)}", code="signature_missing")


def assess(
    doc: ContractDocument,
    *,
    products: Mapping[str, Product],
    keys: Mapping[str, KeySet],
    gateway_org: str | None,
    now: datetime,
) -> Verdict:
    """Everything that decides whether ``doc`` is usable at ``now``."""
    contract = doc.contract
    if gateway_org is not None and contract.provider != gateway_org:
        return _refused("wrong_provider", f"provider {contract.provider!r} is not {gateway_org!r}")
    product = products.get(contract.product)
    if product is None:
        return _refused("unknown_product", f"no product {contract.product!r}")
    if product.owner != contract.provider:
        return _refused(
            "wrong_provider", f"product {product.product!r} is owned by {product.owner!r}"
        )
    impossible = [path for path in contract.fields if not product.allows_path(path)]
    if impossible:
        return _refused(
            "unknown_field",
            f"the schema of {product.product!r} says these cannot exist: {', '.join(impossible)}",
        )
    try:
        verify_signatures(doc, keys)
    except SignatureInvalid as exc:
        if exc.code == "signature_missing":
            return Verdict(ContractState.DRAFT, exc.code, exc.detail)
        return _refused(exc.code, exc.detail)
    return validity_at(contract, now)


def validity_at(contract: Contract, now: datetime) -> Verdict:
    """The time part of :func:`assess`, for re-checking a live stream cheaply."""
    if now < contract.valid_from:
        return Verdict(
            ContractState.NOT_YET_VALID,
            "not_yet_valid",
            f"valid from {contract.valid_from.isoformat()}",
        )
    if now >= contract.valid_until:
        return Verdict(
            ContractState.EXPIRED, "expired", f"expired at {contract.valid_until.isoformat()}"
        )
    return Verdict(ContractState.ACTIVE, "active", "signed by both parties and within validity")


def _refused(reason: str, detail: str) -> Verdict:
    return Verdict(ContractState.REFUSED, reason, detail)
