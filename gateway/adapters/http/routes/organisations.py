"""``GET /v1/organisations/{org}/jwks``: the public keys that verify contract signatures."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from gateway.adapters.http.deps import CurrentPartner, GatewayDep
from gateway.adapters.http.openapi import errors
from gateway.core.jose import public_jwks
from gateway.errors import OrganisationNotFound

router = APIRouter(tags=["organisations"])


@router.get(
    "/v1/organisations/{org}/jwks",
    responses={
        200: {"description": "RFC 7517 JWK Set", "content": {"application/jwk-set+json": {}}},
        **errors(401, 404),
    },
)
def organisation_jwks(org: str, partner: CurrentPartner, gateway: GatewayDep) -> Response:
    """The public JWKS the gateway holds for an organisation: your own, or that of a provider
    of one of your contracts. Both signatures on a contract verify offline against these, and
    you can check the gateway holds the key you confirmed (its ``kid`` is the RFC 7638
    thumbprint)."""
    registry = gateway.streams.registry()
    providers = {
        history.latest.contract.provider
        for history in registry.histories.values()
        if history.latest.contract.consumer == partner.org
    }
    keys = registry.keys.get(org)
    if keys is None or org not in {partner.org, gateway.settings.org, *providers}:
        raise OrganisationNotFound(f"no organisation {org!r} whose keys you may see")
    return Response(
        orjson.dumps(public_jwks(keys)),
        media_type="application/jwk-set+json",
        headers={"Cache-Control": "max-age=60"},
    )
