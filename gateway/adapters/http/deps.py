"""FastAPI dependencies: the services of this app and the authenticated partner."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.errors import AuthenticationFailed
from gateway.services.authorization import Partner
from gateway.services.container import Gateway


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def current_partner(request: Request, gateway: GatewayDep) -> Partner:
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationFailed("an access token is required (Authorization: Bearer)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("the Authorization header must be 'Bearer <token>'")
    return gateway.tokens.verify(token.strip())


CurrentPartner = Annotated[Partner, Depends(current_partner)]
