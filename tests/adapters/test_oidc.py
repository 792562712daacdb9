"""Internal callers' tokens against a local OpenID Connect provider (discovery + JWKS on
loopback): what is accepted, what is refused, and how the provider's keys are followed."""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from gateway.adapters.oidc import NoIdentityProvider, OidcTokenVerifier
from gateway.core.identity import TeamMember
from gateway.dev_identity import AUDIENCE, DevIdentityProvider
from gateway.errors import AuthenticationFailed, IdentityProviderUnavailable
from gateway.settings import OidcSettings


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(identity_provider: DevIdentityProvider) -> Clock:
    """The time of the gateway and of the provider's tokens."""
    clock = Clock()
    identity_provider.clock = clock
    return clock


@pytest.fixture
def verifier(identity_provider: DevIdentityProvider, clock: Clock) -> Iterator[OidcTokenVerifier]:
    settings = OidcSettings(issuer=identity_provider.url, audience=AUDIENCE, admin_team="admins")
    v = OidcTokenVerifier(settings, clock=clock)
    yield v
    v.close()


def test_a_token_of_the_provider_names_the_caller_and_their_teams(
    identity_provider: DevIdentityProvider, verifier: OidcTokenVerifier
) -> None:
    member = verifier.verify(identity_provider.token("alice", ("orders-team", "web")))
    assert member == TeamMember("alice", frozenset({"orders-team", "web"}), admin=False)
    assert verifier.verify(identity_provider.token("root", ("admins",))).admin


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"audience": "another-service"}, "invalid_token"),
        ({"issuer": "https://evil.example"}, "invalid_token"),
        ({"lifetime": -120}, "token_expired"),
    ],
)
def test_a_token_for_another_audience_issuer_or_time_is_refused(
    identity_provider: DevIdentityProvider,
    verifier: OidcTokenVerifier,
    claims: dict[str, Any],
    code: str,
) -> None:
    with pytest.raises(AuthenticationFailed) as refused:
        verifier.verify(identity_provider.token(**claims))
    assert refused.value.code == code


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None = None) -> str:
    """A JWT built by hand (no JOSE library would make these on purpose)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(hmac_key, signing_input.encode(), "sha256").digest() if hmac_key else b""
    return f"{signing_input}.{_b64(mac)}"


def test_unsigned_symmetric_and_foreign_key_tokens_are_refused(
    identity_provider: DevIdentityProvider, verifier: OidcTokenVerifier
) -> None:
    good = jwt.decode(identity_provider.token(), identity_provider.keys[0]).claims
    kid = identity_provider.keys[0].kid
    public_pem = identity_provider.keys[0].as_pem(private=False)
    attempts = [
        _forged({"alg": "none", "kid": kid}, good),
        # The classic confusion: HS256 keyed with the provider's public key.
        _forged({"alg": "HS256", "kid": kid}, good, hmac_key=public_pem),
        # A key of its own under the provider's key id.
        jwt.encode({"alg": "RS256", "kid": kid}, good, RSAKey.generate_key(2048)),
        "not-a-jwt",
        "",
    ]
    for token in attempts:
        with pytest.raises(AuthenticationFailed):
            verifier.verify(token)


def test_a_rotated_key_is_followed_and_unknown_key_ids_cannot_hammer_the_provider(
    identity_provider: DevIdentityProvider, verifier: OidcTokenVerifier, clock: Clock
) -> None:
    verifier.verify(identity_provider.token())
    assert identity_provider.fetches == 1
    clock.now += 31
    identity_provider.rotate(keep_old=False)
    assert verifier.verify(identity_provider.token("bob")).subject == "bob"
    assert identity_provider.fetches == 2

    stranger = RSAKey.generate_key(2048, parameters={"kid": "made-up"})
    for _ in range(20):
        with pytest.raises(AuthenticationFailed):
            verifier.verify(identity_provider.token(key=stranger))
    assert identity_provider.fetches == 2, "a made-up key id within 30 s fetches nothing"


def test_a_key_the_provider_withdrew_stops_working_once_the_cache_expires(
    identity_provider: DevIdentityProvider, verifier: OidcTokenVerifier, clock: Clock
) -> None:
    old = identity_provider.keys[0]
    verifier.verify(identity_provider.token())
    identity_provider.rotate(keep_old=False)
    assert verifier.verify(identity_provider.token(key=old)).subject == "alice"
    clock.now += 301
    with pytest.raises(AuthenticationFailed):
        verifier.verify(identity_provider.token(key=old))


def test_when_the_provider_is_down_cached_keys_still_verify(
    identity_provider: DevIdentityProvider, verifier: OidcTokenVerifier, clock: Clock
) -> None:
    verifier.verify(identity_provider.token())
    identity_provider.available = False
    clock.now += 301
    assert verifier.verify(identity_provider.token()).subject == "alice"


def test_with_no_keys_and_the_provider_down_callers_get_unavailable_not_a_pass(
    identity_provider: DevIdentityProvider, verifier: OidcTokenVerifier
) -> None:
    identity_provider.available = False
    with pytest.raises(IdentityProviderUnavailable):
        verifier.verify(identity_provider.token())


def test_a_discovery_document_naming_another_issuer_is_not_trusted(
    identity_provider: DevIdentityProvider, verifier: OidcTokenVerifier
) -> None:
    identity_provider.discovery_issuer = "https://someone-else.example"
    with pytest.raises(IdentityProviderUnavailable, match="another issuer"):
        verifier.verify(identity_provider.token())


def test_the_teams_claim_may_be_nested_and_a_malformed_one_grants_nothing(
    identity_provider: DevIdentityProvider,
) -> None:
    settings = OidcSettings(
        issuer=identity_provider.url, audience=AUDIENCE, teams_claim="realm_access.roles"
    )
    v = OidcTokenVerifier(settings)
    try:
        nested = identity_provider.token(realm_access={"roles": ["orders-team"]})
        assert v.verify(nested).teams == {"orders-team"}
        assert v.verify(identity_provider.token(realm_access={"roles": 7})).teams == set()
        assert v.verify(identity_provider.token()).teams == set()  # no realm_access at all
    finally:
        v.close()


def test_without_a_provider_every_internal_caller_is_refused() -> None:
    with pytest.raises(AuthenticationFailed, match="GATEWAY_OIDC__ISSUER"):
        NoIdentityProvider().verify("anything")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"issuer": "http://idp.example.com"}, "https"),
        ({"issuer": "https://idp.example.com"}, "audience"),
        ({"issuer": "https://idp.example.com", "algorithms": ["HS256"]}, "asymmetric"),
    ],
)
def test_insecure_provider_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OidcSettings(**{"audience": "gw", **settings} if "audience" not in message else settings)
