"""FastAPI dependencies: the services of this app and the authenticated caller (a partner on
the partner API, a member of an internal team on the internal one)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.core.identity import TeamMember
from gateway.errors import AuthenticationFailed
from gateway.logs import note
from gateway.services.authorization import Partner
from gateway.services.container import Gateway


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def bearer_token(request: Request) -> str:
    """The RFC 6750 §2.1 bearer token of the request."""
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationFailed("an access token is required (Authorization: Bearer)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def current_partner(request: Request, gateway: GatewayDep) -> Partner:
    partner = gateway.tokens.verify(bearer_token(request))
    note(org=partner.org)  # the request's log lines name the organisation from here on
    return partner


def current_team_member(request: Request, gateway: GatewayDep) -> TeamMember:
    # A plain function: FastAPI runs it in a worker thread, where fetching the identity
    # provider's keys may block.
    return gateway.team_tokens.verify(bearer_token(request))


CurrentPartner = Annotated[Partner, Depends(current_partner)]
CurrentTeamMember = Annotated[TeamMember, Depends(current_team_member)]
