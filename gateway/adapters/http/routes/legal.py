"""Read-only review pages for legal, server-rendered, printable, no JavaScript.

Only users with the ``legal`` role (``GATEWAY_LEGAL_USERS``, HTTP Basic) may open them; a
partner's bearer token never does.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from fastapi.templating import Jinja2Templates

from gateway.adapters.http.charts import LevelsView, levels_view, usage_chart
from gateway.adapters.http.deps import GatewayDep
from gateway.core.diff import diff_contracts
from gateway.core.jose import SignatureInfo, describe_signature
from gateway.core.lifecycle import ContractHistory
from gateway.errors import (
    ContractNotFound,
    DocumentInvalid,
    InvalidRequest,
    LegalAuthenticationFailed,
    StoreUnavailable,
)
from gateway.services.container import DeliveryIndex, Gateway
from gateway.services.evidence import bundle_from
from gateway.services.passwords import check_login

log = logging.getLogger(__name__)
templates = Jinja2Templates(directory=Path(__file__).parent.parent / "templates")
_basic = HTTPBasic(auto_error=False, realm="legal")
_attempts: defaultdict[str, anyio.Lock] = defaultdict(anyio.Lock)


async def legal_user(
    request: Request,
    gateway: GatewayDep,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> str:
    """The legal user logging in. Failures are throttled per user name and per address, and
    an unknown name costs the same as a wrong password (it does not show which names exist)."""
    if credentials is None:
        raise LegalAuthenticationFailed("the legal pages need a legal user's credentials")
    address = request.client.host if request.client else "unknown"
    throttled = [f"user:{credentials.username}", f"addr:{address}"]
    users = [(u.username, u.password_hash.get_secret_value()) for u in gateway.settings.legal_users]
    # One attempt per user name at a time in this replica: guesses sent in parallel would
    # otherwise all pass the check before any of their failures is counted.
    lock = _attempts[credentials.username]
    try:
        async with lock:
            await gateway.quotas.check_login(throttled)
            if await anyio.to_thread.run_sync(
                check_login, users, credentials.username, credentials.password
            ):
                return credentials.username
            await gateway.quotas.login_failed(throttled)
    finally:  # no lock kept for every name anyone ever tried
        if not lock.locked() and not lock.statistics().tasks_waiting:
            _attempts.pop(credentials.username, None)
    raise LegalAuthenticationFailed("unknown user or wrong password")


# Pages for people, not part of the partner API: left out of the OpenAPI document.
router = APIRouter(
    prefix="/legal", tags=["legal"], dependencies=[Depends(legal_user)], include_in_schema=False
)


def signatures(values: list[str]) -> list[SignatureInfo]:
    return [info for info in map(describe_signature, values) if info is not None]


def _history(gateway: Any, contract_id: str) -> ContractHistory:
    history: ContractHistory | None = gateway.registry.histories.get(contract_id)
    if history is None:
        raise ContractNotFound(f"no contract {contract_id!r}")
    return history


@router.get("", response_class=HTMLResponse)
def contracts(request: Request, gateway: GatewayDep) -> HTMLResponse:
    now = datetime.now(UTC)
    rows = []
    for cid, history in sorted(gateway.registry.histories.items()):
        status = history.status_at(now)
        doc = status.governing or history.latest
        signed = {s.org for s in signatures(doc.contract.signatures)}
        rows.append(
            {
                "id": cid,
                "doc": doc,
                "c": doc.contract,
                "status": status.verdict,
                "signed": [
                    (org, org in signed) for org in (doc.contract.provider, doc.contract.consumer)
                ],
            }
        )
    refused = gateway.registry.refusals
    return templates.TemplateResponse(
        request, "legal/contracts.html", {"rows": rows, "refused": refused, "now": now}
    )


@router.get("/contracts/{contract_id}", response_class=HTMLResponse)
async def contract(request: Request, contract_id: str, gateway: GatewayDep) -> HTMLResponse:
    now = datetime.now(UTC)
    history = _history(gateway, contract_id)
    status = history.status_at(now)
    doc = status.governing or history.latest
    product = gateway.registry.products.get(doc.contract.product)
    schema = (product.json_schema or {}) if product else {}
    versions = []
    previous = None
    for entry in history.versions:
        versions.append(
            {
                "entry": entry,
                "c": entry.doc.contract,
                "signatures": signatures(entry.doc.contract.signatures),
                "changes": diff_contracts(previous.contract, entry.doc.contract)
                if previous
                else [],
                "governing": status.governing is entry.doc,
            }
        )
        previous = entry.doc
    fields = [
        {"path": path, "action": str(rule), "classification": classification(schema, path)}
        for path, rule in doc.contract.fields.items()
    ]
    return templates.TemplateResponse(
        request,
        "legal/contract.html",
        {
            "doc": doc,
            "c": doc.contract,
            "status": status.verdict,
            "fields": fields,
            "versions": versions,
            "statements": history.statements,
            "now": now,
            "signatures": signatures(doc.contract.signatures),
            "levels": await _levels(gateway, contract_id),
        },
    )


async def _levels(gateway: Gateway, contract_id: str) -> LevelsView | None:
    """The contract's service levels; ``None`` while the figures' store does not answer (the
    page says so: the contract's terms are still worth reading)."""
    try:
        return levels_view(*await gateway.service_levels.report(contract_id))
    except StoreUnavailable as exc:
        log.warning("service levels of %s not shown: %s", contract_id, exc.detail)
        return None


def classification(schema: dict[str, Any], path: str) -> str:
    """The product schema's ``x-classification`` for a field, if it states one."""
    node: Any = schema
    for part in path.split("."):
        properties = node.get("properties") if isinstance(node, dict) else None
        node = properties.get(part) if isinstance(properties, dict) else None
        if node is None:
            return "-"
    return str(node.get("x-classification", "-")) if isinstance(node, dict) else "-"


#: Deliveries on one page of legal's delivery history.
PAGE_SIZE = 50


def deliveries_context(index: DeliveryIndex, c: Any, *, page: int) -> dict[str, Any]:
    """What the delivery page shows of contract ``c``: from the index, never the whole ledger
    (``bench/legal_pages.py`` measures it over 1,000,000 entries)."""
    total = index.count(c.contract)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(max(1, page), pages)
    days = index.by_day(c.contract)
    return {
        "c": c,
        "deliveries": index.deliveries(c.contract, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE),
        "totals": index.totals_by_version(c.contract),
        "version_numbers": index.version_numbers(c.contract),
        "days": days,
        "chart": usage_chart(days),
        "page": page,
        "pages": pages,
        "total": total,
        "now": datetime.now(UTC),
    }


@router.get("/contracts/{contract_id}/deliveries", response_class=HTMLResponse)
async def deliveries(
    request: Request,
    contract_id: str,
    gateway: GatewayDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> HTMLResponse:
    history = _history(gateway, contract_id)
    await anyio.to_thread.run_sync(gateway.follow)  # what the ledger holds up to now
    context = deliveries_context(gateway.index, history.latest.contract, page=page)
    return templates.TemplateResponse(request, "legal/deliveries.html", context)


@router.get("/contracts/{contract_id}/evidence")
async def evidence(
    contract_id: str,
    gateway: GatewayDep,
    since: Annotated[datetime | None, Query(alias="from")] = None,
    until: Annotated[datetime | None, Query(alias="to")] = None,
) -> Response:
    """The evidence bundle for the period (docs/ledger.md), to keep and check offline with
    ``gateway ledger verify-evidence``."""
    _history(gateway, contract_id)
    now = datetime.now(UTC)
    start = since or datetime(1970, 1, 1, tzinfo=UTC)
    end = until or now
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidRequest("from and to are RFC 3339 times with a UTC offset")
    entries = await anyio.to_thread.run_sync(gateway.ledger_entries)
    try:
        bundle = bundle_from(
            entries,
            gateway.registry,
            gateway.archive,
            contract=contract_id,
            since=start,
            until=end,
            gateway_keys={"keys": gateway.ledger_public_jwks},
            now=now,
        )
    except DocumentInvalid as exc:
        raise InvalidRequest(exc.detail) from None
    name = f"evidence-{contract_id}-{start:%Y%m%d}-{end:%Y%m%d}.json"
    return Response(
        orjson.dumps(bundle, option=orjson.OPT_INDENT_2),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
