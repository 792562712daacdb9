"""A team publishes records to its product over HTTP (``POST /v1/products/{p}/records``).

Records are validated against the product's schema (compiled once per schema version); a batch
with an invalid record writes nothing to the topic and copies the invalid ones to the
dead-letter topic (``core/publishing.py`` says why all-or-nothing). Valid batches are written
with the idempotent ``acks=all`` producer; the answer gives each record's partition and offset.

``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key-header): the first request with a key
claims it; its outcome is kept for ``idempotency_window_seconds`` under (product, caller, key):

- the same key with the same records again answers what the first answered, writing nothing;
- the same key with other records is refused (``idempotency_key_reused``);
- while the first is still running, a second is refused (``idempotency_in_progress``);
- when Kafka acknowledged only some records of the first, the entry keeps which ones: the
  retry writes only the rest. A record whose acknowledgement never came (delivery timed out)
  may have been written nonetheless; that is Kafka's own producer guarantee across sessions.

Nothing is lost: every record is written, or refused with a reason to the caller (and, when
invalid, copied to the dead-letter topic), or the request fails as a whole with 503 and the
caller retries it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.contracts import Product
from gateway.core.identity import TeamMember
from gateway.core.publishing import (
    IncomingRecord,
    RecordRefusal,
    dead_letter_headers,
    fingerprint,
    refusals,
)
from gateway.core.schemas import RecordSchema, SchemaViolation
from gateway.errors import (
    BrokerUnavailable,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    RecordsInvalid,
)
from gateway.services.products import managed_product
from gateway.services.registry import Registry

log = logging.getLogger(__name__)

#: Per record: ``(partition, offset)``, or the name of the Kafka error that refused it.
Outcome = tuple[int, int] | str
#: Key, value and headers of a record to write.
OutgoingRecord = tuple[str | None, bytes, dict[str, str]]


#: A product's values in its record format (``adapters/kafka/schema_registry.py`` for Avro):
#: ``ValueError`` (saying which field, never its value) for a value that does not fit,
#: ``GatewayError`` when the format's schema cannot be fetched now.
ValueEncoder = Callable[[Any], bytes]


class RecordSink(Protocol):
    """Kafka, for publishing (``adapters/kafka/publisher.py``)."""

    def write(self, topic: str, records: Sequence[OutgoingRecord]) -> list[Outcome]: ...
    def ensure_topic(self, topic: str, partitions: int = 1) -> None: ...


@dataclass
class IdempotencyEntry:
    """What became of the first request with a key: the records it carried (``fingerprint``),
    those Kafka acknowledged (index → partition, offset), and its final answer once it has one
    (``refused``: the schema errors it answered with)."""

    fingerprint: str
    written: dict[int, tuple[int, int]] = field(default_factory=dict)
    complete: bool = False
    refused: list[dict[str, Any]] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "written": {str(i): list(at) for i, at in self.written.items()},
            "complete": self.complete,
            "refused": self.refused,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IdempotencyEntry:
        return cls(
            fingerprint=data["fingerprint"],
            written={int(i): (at[0], at[1]) for i, at in data["written"].items()},
            complete=data["complete"],
            refused=data["refused"],
        )


class IdempotencyStore(Protocol):
    """``adapters/stores/idempotency.py``: in memory, or shared by replicas in Redis."""

    def claim(self, key: str, ttl: float) -> bool: ...
    def release(self, key: str) -> None: ...
    def get(self, key: str) -> IdempotencyEntry | None: ...
    def put(self, key: str, entry: IdempotencyEntry, ttl: float) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Published:
    product: Product
    positions: list[tuple[int, int]]
    #: The answer repeats an earlier request's with the same Idempotency-Key.
    replayed: bool = False


@dataclass
class PublishService:
    registry: Callable[[], Registry]
    sink: RecordSink
    idempotency: IdempotencyStore
    window_seconds: float
    #: How long a claim on a key lasts if its holder dies before releasing it.
    claim_seconds: float = 60.0
    #: The value encoder of a product not in JSON (``None``: values are written as JSON).
    encoders: Callable[[Product], ValueEncoder | None] = lambda product: None
    #: Told how many records of a product were written or refused (Prometheus).
    on_outcome: Callable[[str, str, int], None] = lambda product, outcome, count: None
    _schemas: dict[tuple[str, str], RecordSchema | None] = field(default_factory=dict)

    def schema_of(self, product: Product) -> RecordSchema | None:
        """The product's compiled schema (compiled once per product and schema version)."""
        key = (product.product, product.version)
        if key not in self._schemas:
            schema = product.json_schema
            self._schemas[key] = RecordSchema(schema) if schema is not None else None
        return self._schemas[key]

    def product(self, member: TeamMember, name: str) -> Product:
        return managed_product(self.registry(), member, name)

    def publish(
        self,
        member: TeamMember,
        name: str,
        records: Sequence[IncomingRecord],
        *,
        idempotency_key: str | None,
        request_id: str,
    ) -> Published:
        """Blocking (call from a worker thread)."""
        product = self.product(member, name)
        if idempotency_key is None:
            return self._publish(member, product, records, None, request_id)
        key = f"{product.product}\0{member.subject}\0{idempotency_key}"
        if not self.idempotency.claim(key, self.claim_seconds):
            raise IdempotencyInProgress(
                "a request with this Idempotency-Key is still running; retry when it is done"
            )
        try:
            entry = self.idempotency.get(key)
            digest = fingerprint(records)
            if entry is not None and entry.fingerprint != digest:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with other records; use a new key"
                )
            entry = entry or IdempotencyEntry(digest)
            if entry.refused is not None:
                raise self._refusal(product, entry.refused)
            if entry.complete:
                positions = [entry.written[i] for i in range(len(records))]
                return Published(product, positions, replayed=True)
            return self._publish(member, product, records, (key, entry), request_id)
        finally:
            self.idempotency.release(key)

    def _publish(
        self,
        member: TeamMember,
        product: Product,
        records: Sequence[IncomingRecord],
        idempotent: tuple[str, IdempotencyEntry] | None,
        request_id: str,
    ) -> Published:
        refused = refusals(records, self.schema_of(product))
        encode = self.encoders(product)
        values: list[bytes] = []
        if not refused and encode is not None:
            for index, record in enumerate(records):
                try:
                    values.append(encode(record.value))
                except ValueError as exc:
                    violation = SchemaViolation("", product.format.value, str(exc))
                    refused.append(RecordRefusal(index, [violation], reason="encoding_failed"))
        if refused:
            errors = self._dead_letter(member, product, records, refused, request_id)
            if idempotent is not None:
                key, entry = idempotent
                entry.refused = errors
                self.idempotency.put(key, entry, self.window_seconds)
            self.on_outcome(product.product, "refused", len(refused))
            raise self._refusal(product, errors)

        written = dict(idempotent[1].written) if idempotent else {}
        pending = [i for i in range(len(records)) if i not in written]
        outgoing = [
            (records[i].key, values[i] if values else records[i].value_bytes(), records[i].headers)
            for i in pending
        ]
        outcomes = self.sink.write(product.topic, outgoing)
        self.on_outcome(
            product.product, "written", sum(1 for o in outcomes if not isinstance(o, str))
        )
        failed = []
        for index, outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, str):
                failed.append(outcome)
            else:
                written[index] = outcome
        if idempotent is not None:
            key, entry = idempotent
            entry.written = written
            entry.complete = not failed
            self.idempotency.put(key, entry, self.window_seconds)
        if failed:
            log.warning(
                "publish to %s: %d of %d records not acknowledged (%s)",
                product.product, len(failed), len(records), failed[0],
            )  # fmt: skip
            retry = "retry with the same Idempotency-Key to write the rest" if idempotent else (
                "retry (send an Idempotency-Key so that a retry writes only the rest)"
            )  # fmt: skip
            raise BrokerUnavailable(
                f"Kafka acknowledged {len(records) - len(failed)} of {len(records)} records "
                f"({failed[0]}); {retry}",
                code="product_unavailable" if "TOPIC" in failed[0] else None,
            )
        return Published(product, [written[i] for i in range(len(records))])

    def _dead_letter(
        self,
        member: TeamMember,
        product: Product,
        records: Sequence[IncomingRecord],
        refused: list[RecordRefusal],
        request_id: str,
    ) -> list[dict[str, Any]]:
        """Copy the refused records to the dead-letter topic; their errors for the answer. If
        the copy fails the request fails (503): a refusal is only answered once recorded."""
        copies: list[OutgoingRecord] = []
        for refusal in refused:
            record = records[refusal.index]
            headers = dead_letter_headers(
                record,
                refusal,
                product=product.product,
                schema_version=product.version,
                caller=member.subject,
                request_id=request_id,
            )
            copies.append((record.key, record.value_bytes(), headers))
        self.sink.ensure_topic(product.dlq_topic)
        outcomes = self.sink.write(product.dlq_topic, copies)
        lost = [o for o in outcomes if isinstance(o, str)]
        if lost:
            raise BrokerUnavailable(
                f"the invalid records could not be copied to {product.dlq_topic} ({lost[0]}); "
                "nothing was written; retry"
            )
        return [{"record": r.index, **violation} for r in refused for violation in r.as_json()]

    @staticmethod
    def _refusal(product: Product, errors: list[dict[str, Any]]) -> RecordsInvalid:
        count = len({e["record"] for e in errors})
        return RecordsInvalid(
            f"{count} record(s) do not conform to {product.product} schema {product.version}; "
            f"nothing was written; they were copied to {product.dlq_topic}",
            errors=errors,
            dead_letter_topic=product.dlq_topic,
        )
