"""Internal callers: the people and services of the provider's own teams.

They authenticate with the company's OpenID Connect provider (``adapters/oidc.py`` verifies the
token); this module only reads the verified claims. A product names its owning team, and only a
member of that team, or of the admin team, may publish to it or see who consumes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TeamMember:
    """An authenticated internal caller."""

    subject: str
    teams: frozenset[str]
    admin: bool = False

    def manages(self, team: str) -> bool:
        """May publish to and watch the products owned by ``team``."""
        return self.admin or team in self.teams


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at a dot path (``realm_access.roles`` for Keycloak), or ``None``."""
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def teams_of(value: Any) -> frozenset[str]:
    """Team names from a claim: a JSON array of strings, or one space-separated string (the
    shape of ``scope``). Anything else names no team: a malformed claim grants nothing."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str) and v)
    return frozenset()


def member_from_claims(
    claims: Mapping[str, Any], *, teams_claim: str, admin_team: str | None
) -> TeamMember:
    """The caller named by verified claims. ``sub`` is required (RFC 9068 §2.2)."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise ValueError("the token names no subject")
    teams = teams_of(claim_at(claims, teams_claim))
    return TeamMember(
        subject=subject, teams=teams, admin=admin_team is not None and admin_team in teams
    )
