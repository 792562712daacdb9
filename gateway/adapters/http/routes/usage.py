"""``GET /v1/usage``: the caller's quotas and what it used, per contract."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.adapters.http.deps import CurrentPartner, GatewayDep
from gateway.adapters.http.openapi import errors
from gateway.adapters.http.schemas import UsagePublic

router = APIRouter(tags=["usage"])


@router.get("/v1/usage", responses=errors(401, 503))
async def usage(partner: CurrentPartner, gateway: GatewayDep) -> UsagePublic:
    """Limits in force (the contract's, bounded by the gateway's ceilings) and today's use.

    ``bytes_today`` counts the UTC calendar day; ``resets_at`` is when it starts again.
    """
    registry = gateway.streams.registry()
    docs = registry.active_contracts_for(partner.org, gateway.streams.clock())
    return UsagePublic.of(await gateway.quotas.usage(partner.org, docs))
