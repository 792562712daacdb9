"""The internal API for the teams that publish data products (``/v1/products``).

Callers authenticate with the company's identity provider (``CurrentTeamMember``); partner
tokens are not accepted here, nor these tokens on the partner API.
"""

from __future__ import annotations

import re
import uuid
from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Request, Response

from gateway.adapters.http.deps import CurrentTeamMember, GatewayDep
from gateway.adapters.http.openapi import errors
from gateway.adapters.http.schemas import (
    RECORD_SCHEMA,
    ConsumerPublic,
    ConsumersPublic,
    ProductPublic,
    ProductsPublic,
    PublishedPublic,
)
from gateway.core.identity import TeamMember
from gateway.core.publishing import parse_records
from gateway.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from gateway.services.consumption import consumers_of
from gateway.services.container import Gateway
from gateway.services.products import managed_product, products_managed_by

router = APIRouter(tags=["products"])


@router.get("/v1/products", responses=errors(401, 503))
def list_products(member: CurrentTeamMember, gateway: GatewayDep) -> ProductsPublic:
    """The products the caller's teams own (every product for the admin team)."""
    products = products_managed_by(gateway.registry, member)
    return ProductsPublic(products=[ProductPublic.of(p) for p in products])


@router.get("/v1/products/{product}", responses=errors(401, 404, 503))
def show_product(product: str, member: CurrentTeamMember, gateway: GatewayDep) -> ProductPublic:
    """One product's descriptor, as loaded."""
    return ProductPublic.of(managed_product(gateway.registry, member, product))


@router.get("/v1/products/{product}/consumers", responses=errors(401, 404, 503))
async def product_consumers(
    product: str, member: CurrentTeamMember, gateway: GatewayDep
) -> ConsumersPublic:
    """Every contract on the product with its partner, state, validity, live streams, last
    delivery, records and bytes today, quota use and lag (records behind the log end)."""
    return await consumers_public(gateway, member, product)


async def consumers_public(gateway: Gateway, member: TeamMember, name: str) -> ConsumersPublic:
    found = managed_product(gateway.registry, member, name)
    ends = await anyio.to_thread.run_sync(gateway.ends_of, found.topic)
    views = await consumers_of(
        found, gateway.registry, gateway.consumption, gateway.quotas, ends, gateway.clock()
    )
    return ConsumersPublic(
        product=found.product,
        topic=found.topic,
        log_end={p: end for p, (_, end) in ends.items()},
        consumers=[ConsumerPublic.of(v) for v in views],
    )


NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/ndjson")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@router.post(
    "/v1/products/{product}/records",
    response_model=PublishedPublic,
    responses=errors(400, 401, 404, 409, 413, 415, 422, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "array", "items": RECORD_SCHEMA}},
                "application/x-ndjson": {"schema": RECORD_SCHEMA},
            },
        }
    },
)
async def publish_records(
    product: str,
    request: Request,
    member: CurrentTeamMember,
    gateway: GatewayDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    """Publish records to a product the caller's team owns.

    Each value is validated against the product's schema. One invalid record refuses the whole
    request (422 with every error; nothing is written; the invalid ones are copied to the
    dead-letter topic). Otherwise every record is written with ``acks=all`` and the answer
    gives each one's partition and offset, in request order. With an ``Idempotency-Key`` a
    retry within the window writes nothing twice (``Idempotent-Replayed: true`` on a replayed
    answer).
    """
    settings = gateway.settings.publish
    found = gateway.publishing.product(member, product)  # 404 before reading the body
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("application/json", *NDJSON_TYPES):
        raise UnsupportedMediaType(
            f"send application/json (an array of records) or application/x-ndjson, "
            f"not {media_type or 'a body without Content-Type'}"
        )
    key = _idempotency_key(idempotency_key)
    body = await read_body(request, settings.max_body_bytes)
    records = parse_records(
        body, ndjson=media_type in NDJSON_TYPES, max_records=settings.max_records
    )
    await gateway.quotas.admit_publish(found.team, len(records))
    published = await anyio.to_thread.run_sync(
        partial(
            gateway.publishing.publish,
            member,
            product,
            records,
            idempotency_key=key,
            request_id=uuid.uuid4().hex,
        )
    )
    headers = {"Idempotent-Replayed": "true"} if published.replayed else None
    return Response(
        PublishedPublic.encode(published), media_type="application/json", headers=headers
    )


def _idempotency_key(value: str | None) -> str | None:
    """The key as a Structured Field string (``"…"``) or a bare token."""
    if value is None:
        return None
    key = value.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return key


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; at most {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
