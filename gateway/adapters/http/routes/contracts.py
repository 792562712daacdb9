"""The partner API: contracts, streams (SSE, NDJSON) and pull."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from gateway.adapters.http.deps import CurrentPartner, GatewayDep
from gateway.adapters.http.openapi import PARTNER_ERRORS, errors
from gateway.adapters.http.problems import problem
from gateway.adapters.http.schemas import (
    ContractPublic,
    ContractsPublic,
    ServiceLevelsPublic,
    service_levels_public,
)
from gateway.adapters.http.streaming import StreamResponse
from gateway.core.contracts import Contract, Product
from gateway.core.delivered import asyncapi_document, record_schema
from gateway.core.jose import b64url
from gateway.core.records import StreamFormat
from gateway.errors import ContractNotFound, InvalidRequest
from gateway.services.authorization import Partner
from gateway.services.container import Gateway
from gateway.services.datakeys import encryption_key
from gateway.services.offers import verified_signers, version_of
from gateway.services.streams import Start, Stream

router = APIRouter(prefix="/v1/contracts", tags=["contracts"])

CursorParam = Annotated[
    str | None, Query(max_length=16_384, description="resume after this cursor")
]
FromParam = Annotated[
    str | None,
    Query(alias="from", description="first connection: earliest | latest | RFC 3339 time"),
]


def negotiate(accept: str | None) -> StreamFormat | None:
    """The stream format the client prefers (RFC 9110 §12.5.1); SSE when it does not say."""
    if not accept:
        return StreamFormat.SSE
    ranked: list[tuple[float, int, int, StreamFormat]] = []
    for index, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        for preference, fmt in enumerate(StreamFormat):  # SSE first on a wildcard
            if q > 0 and media in (fmt.value, "*/*", fmt.value.split("/")[0] + "/*"):
                ranked.append((-q, index, preference, fmt))
    return min(ranked)[3] if ranked else None


@router.get("", responses=errors(401, 503))
def list_contracts(partner: CurrentPartner, gateway: GatewayDep) -> ContractsPublic:
    streams = gateway.streams
    registry = streams.registry()
    now = streams.clock()
    return ContractsPublic(
        contracts=[
            ContractPublic.of(doc, registry.verdict(doc.contract.contract, now))
            for doc in registry.active_contracts_for(partner.org, now)
        ]
    )


def _delivered(contract_id: str, partner: Partner, gateway: Gateway) -> tuple[Product, Contract]:
    registry = gateway.streams.registry()
    doc = registry.contract_for(partner.org, contract_id, gateway.streams.clock())
    product = registry.products.get(doc.contract.product)
    if product is None:  # pragma: no cover - a contract on an unknown product is refused
        raise ContractNotFound(f"no contract {contract_id!r}")
    return product, doc.contract


@router.get("/{contract_id}/schema", responses=errors(401, 403, 404))
def contract_schema(contract_id: str, partner: CurrentPartner, gateway: GatewayDep) -> Response:
    """The JSON Schema (2020-12) of one record as this contract delivers it: only the fields
    it allows; encrypted fields as compact JWE strings, hashed ones as pseudonyms, masked ones
    as strings."""
    product, contract = _delivered(contract_id, partner, gateway)
    return Response(
        orjson.dumps(record_schema(product, contract)), media_type="application/schema+json"
    )


@router.get("/{contract_id}/asyncapi", responses=errors(401, 403, 404))
def contract_asyncapi(contract_id: str, partner: CurrentPartner, gateway: GatewayDep) -> Response:
    """The AsyncAPI 3.0 document of this contract: the stream and pull channels, OAuth 2.0
    client credentials with the token URL, and every message with its payload schema."""
    product, contract = _delivered(contract_id, partner, gateway)
    document = asyncapi_document(
        product,
        contract,
        base_url=gateway.settings.issuer(),
        token_url=gateway.authorization.token_endpoint,
    )
    return Response(orjson.dumps(document), media_type="application/json")


@router.get("/{contract_id}", responses=errors(401, 403, 404))
def get_contract(contract_id: str, partner: CurrentPartner, gateway: GatewayDep) -> Response:
    """The contract document exactly as signed (signatures included)."""
    doc = gateway.streams.registry().contract_for(partner.org, contract_id, gateway.streams.clock())
    document: dict[str, Any] = orjson.loads(doc.canonical)
    document["signatures"] = list(doc.contract.signatures)
    return Response(
        orjson.dumps(document),
        media_type="application/json",
        headers={"ETag": f'"{doc.hash}"', "Cache-Control": "no-store"},
    )


class SignaturesPublic(BaseModel):
    """A contract version's terms, the exact bytes its parties sign, and their signatures.

    ``payload`` is the base64url of the exact bytes to sign (the RFC 8785 canonical JSON of
    ``terms``; its SHA-256 is ``version``). A signature in ``signatures`` is a compact JWS with
    the payload left out (``header..signature``): put ``payload`` between the dots and any JOSE
    library verifies it against the signer's published JWKS."""

    contract: str
    version: str
    number: int
    provider: str
    consumer: str
    valid_from: datetime
    valid_until: datetime
    #: The parties whose signature verifies, and those whose signature is awaited.
    signed_by: list[str]
    awaiting: list[str]
    terms: dict[str, Any]
    payload: str
    signatures: list[str]
    #: Where the detached JWS goes.
    sign_at: str


class SignaturePosted(BaseModel):
    """``version`` is the hash of the version signed (``SignaturesPublic.version``), so that a
    signature can never land on other terms than those read."""

    version: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    signature: str = Field(min_length=1, max_length=4096)


class SignatureAccepted(BaseModel):
    contract: str
    version: str
    number: int
    #: The contract's state now: ``active``, or ``not_yet_valid`` until ``valid_from``.
    state: str
    detail: str
    signed_by: list[str]
    #: ``False`` when this signature was already in (posting it again changes nothing).
    recorded: bool


@router.get("/{contract_id}/signatures", responses=errors(401, 403, 404))
def get_signatures(
    contract_id: str,
    partner: CurrentPartner,
    gateway: GatewayDep,
    version: Annotated[str | None, Query(max_length=80, description="a version's hash")] = None,
) -> SignaturesPublic:
    """The newest version of the contract (or ``version``): its terms, the exact bytes both
    parties sign, and the signatures so far. An offer is a version ``awaiting`` your
    signature; docs/onboarding.md has the recipe."""
    registry = gateway.streams.registry()
    doc = version_of(registry.history_for(partner.org, contract_id), version)
    if doc is None:
        raise ContractNotFound(f"contract {contract_id!r} has no version {version}")
    c = doc.contract
    signed = verified_signers(doc, registry.keys)
    return SignaturesPublic(
        contract=c.contract,
        version=doc.hash,
        number=c.version,
        provider=c.provider,
        consumer=c.consumer,
        valid_from=c.valid_from,
        valid_until=c.valid_until,
        signed_by=signed,
        awaiting=[org for org in (c.provider, c.consumer) if org not in signed],
        terms=orjson.loads(doc.canonical),
        payload=b64url(doc.canonical),
        signatures=list(c.signatures),
        sign_at=f"/v1/contracts/{c.contract}/signatures",
    )


@router.post("/{contract_id}/signatures", responses=errors(400, 401, 404, 422, 503))
async def post_signature(
    contract_id: str, body: SignaturePosted, partner: CurrentPartner, gateway: GatewayDep
) -> SignatureAccepted:
    """Countersign an offer: a detached compact JWS (EdDSA, with ``kid`` and your ``org`` in
    its protected header) over the offer's ``payload`` bytes, by a key in your published JWKS.
    Accepted once it is recorded in the ledger; the contract is then in force (or will be at
    ``valid_from``)."""
    outcome = await anyio.to_thread.run_sync(
        lambda: gateway.offers.countersign(
            org=partner.org,
            client=partner.client_id,
            contract_id=contract_id,
            version=body.version,
            signature=body.signature,
        )
    )
    doc = outcome.version
    return SignatureAccepted(
        contract=doc.contract.contract,
        version=doc.hash,
        number=doc.contract.version,
        state=outcome.verdict.reason,
        detail=outcome.verdict.detail,
        signed_by=outcome.signed_by,
        recorded=outcome.recorded,
    )


class AcknowledgementPosted(BaseModel):
    """A receipt exactly as the stream (or pull) gave it, and your detached compact JWS over
    its ASCII bytes (EdDSA, ``kid`` and your ``org`` in the protected header)."""

    receipt: str = Field(min_length=1, max_length=16_384)
    signature: str = Field(min_length=1, max_length=4096)


class AcknowledgementAccepted(BaseModel):
    contract: str
    delivery: str
    #: The receipt's number within its delivery.
    seq: int
    records: int
    #: Where the receipt's records end: a cursor to resume after them.
    cursor: str
    recorded: bool = True


@router.post(
    "/{contract_id}/acknowledgements",
    status_code=201,
    responses=errors(400, 401, 404, 422, 503),
)
async def post_acknowledgement(
    contract_id: str, body: AcknowledgementPosted, partner: CurrentPartner, gateway: GatewayDep
) -> AcknowledgementAccepted:
    """Acknowledge a delivery receipt: recorded in the ledger beside the receipt, so neither
    side can later deny what was sent and received. Accepted once Kafka has the entry."""
    done = await anyio.to_thread.run_sync(
        lambda: gateway.acknowledgements.acknowledge(
            org=partner.org,
            client=partner.client_id,
            contract_id=contract_id,
            receipt=body.receipt,
            signature=body.signature,
        )
    )
    return AcknowledgementAccepted(
        contract=contract_id,
        delivery=done.delivery,
        seq=done.seq,
        records=done.records,
        cursor=done.cursor,
    )


@router.get("/{contract_id}/service-levels", responses=errors(401, 404, 503))
async def service_levels(
    contract_id: str,
    partner: CurrentPartner,
    gateway: GatewayDep,
    days: Annotated[int, Query(ge=1, le=35)] = 7,
) -> ServiceLevelsPublic:
    """The contract's service levels as measured, per UTC day, against its objectives:
    freshness (the age of records when written to you) and availability. The same figures
    the provider's team and legal see."""
    gateway.streams.registry().contract_for(partner.org, contract_id, gateway.streams.clock())
    levels, reports = await gateway.service_levels.report(contract_id, days)
    return service_levels_public(contract_id, levels, reports)


@router.get(
    "/{contract_id}/stream",
    response_model=None,
    responses={
        200: {
            "description": "Server-Sent Events, or NDJSON with `Accept: application/x-ndjson`",
            "content": {"text/event-stream": {}, "application/x-ndjson": {}},
        },
        **errors(*PARTNER_ERRORS, 406, 409),
    },
)
async def stream(
    contract_id: str,
    partner: CurrentPartner,
    gateway: GatewayDep,
    request: Request,
    cursor: CursorParam = None,
    start: FromParam = None,
    last_event_id: Annotated[str | None, Header(max_length=16_384)] = None,
) -> Response:
    stream_format = negotiate(request.headers.get("accept"))
    if stream_format is None:
        return problem(
            406,
            "not_acceptable",
            "Not acceptable",
            "streams are served as text/event-stream or application/x-ndjson",
        )
    # A browser's EventSource reconnects to the same URL with Last-Event-ID: that is newer.
    opened = await gateway.streams.open(
        partner,
        contract_id,
        cursor=last_event_id or cursor,
        start=Start.parse(start),
        stream_format=stream_format,
    )
    return StreamResponse(
        opened,
        stream_format,
        send_timeout=gateway.settings.send_timeout_seconds,
        heartbeat_seconds=gateway.settings.heartbeat_seconds,
        watch=request.app.state.send_watch,
        headers=await opened.quota.fields(),
    )


@router.get("/{contract_id}/records", responses=errors(*PARTNER_ERRORS, 409))
async def records(
    contract_id: str,
    partner: CurrentPartner,
    gateway: GatewayDep,
    cursor: CursorParam = None,
    start: FromParam = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    wait: Annotated[float, Query(ge=0, le=30)] = 0,
) -> Response:
    """Pull: ``{"records": [...], "cursor": "...", "receipt": "..."}``; long-polls up to
    ``wait`` seconds. ``records`` holds one record a line (a receipt's digest is over those
    lines' bytes, each with a newline, as NDJSON sends them); ``receipt`` is there when records
    are."""
    opened = await gateway.streams.open(
        partner,
        contract_id,
        cursor=cursor,
        start=Start.parse(start),
        stream_format=StreamFormat.NDJSON,
        kind="pull",
    )
    batch = await gateway.streams.pull(opened, limit=limit, wait=wait)
    # The NDJSON lines of records (control lines, like key announcements, carry "event").
    items = [line for line in batch.data.splitlines() if not line.startswith(b'{"event"')]
    next_cursor = batch.cursor or opened.encoder.cursor()
    receipt = b',"receipt":' + orjson.dumps(opened.receipt_token) if opened.receipt_token else b""
    body = b'{"records":[%s],"cursor":%s,"keys":%s%s%s}' % (
        b"\n" + b",\n".join(items) + b"\n" if items else b"",
        orjson.dumps(next_cursor),
        orjson.dumps(batch.keys),
        lost_to_retention(opened),
        receipt,
    )
    headers = {"Cache-Control": "no-store", **await opened.quota.fields()}
    return Response(body, media_type="application/json", headers=headers)


def lost_to_retention(opened: Stream) -> bytes:
    """``,"gaps":[...]`` when the cursor pointed at records retention had deleted."""
    gaps = opened.gaps()
    return b',"gaps":' + orjson.dumps(gaps) if gaps else b""


@router.get("/{contract_id}/keys", responses=errors(400, 401, 403, 404))
async def keys(
    contract_id: str,
    partner: CurrentPartner,
    gateway: GatewayDep,
    kid: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The contract's data keys, each wrapped to the caller's current encryption key."""
    registry = gateway.streams.registry()
    doc = registry.contract_for(partner.org, contract_id, gateway.streams.clock())
    recipient = encryption_key(registry.keys.get(partner.org), partner.org)
    wrapped = await anyio.to_thread.run_sync(
        gateway.streams.datakeys.wrapped, doc.contract.contract, recipient, kid
    )
    if kid is not None and not wrapped:
        raise InvalidRequest(f"no data key {kid!r} for this contract", code="unknown_key")
    return Response(
        orjson.dumps({"keys": wrapped}),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
