"""Internal callers' access tokens, verified against the company's OpenID Connect provider.

The issuer is configured by URL. Its metadata comes from OpenID Connect Discovery 1.0
(``/.well-known/openid-configuration``; §4.3: the ``issuer`` it states must be the configured
one), its keys from the ``jwks_uri`` there. Keys are cached for ``jwks_cache_seconds``; a token
signed with a key id the cache does not hold makes one fetch (at most one per
``jwks_min_refresh_seconds``, so made-up key ids cannot turn callers into a load on the
provider), which is how a rotated key is followed. When the provider cannot be reached, cached
keys keep working; with none cached, callers get ``503 identity_provider_unavailable``.

A token is accepted when its signature verifies with an asymmetric algorithm, ``iss`` is the
issuer, ``aud`` contains the configured audience and ``exp``/``nbf`` hold (with
``leeway_seconds``). The gateway's own partner tokens are signed by the gateway's key under the
gateway's issuer, so they never verify here, and tokens from the provider never verify as
partner tokens (``services/authorization.py`` only knows the gateway's key).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from gateway.core.identity import TeamMember, member_from_claims
from gateway.core.jose import access_token_errors, eddsa_allowed
from gateway.errors import AuthenticationFailed, IdentityProviderUnavailable
from gateway.settings import OidcSettings

log = logging.getLogger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"


class OidcTokenVerifier:
    """Verifies internal callers' tokens (thread-safe; blocking only when fetching keys)."""

    def __init__(
        self,
        settings: OidcSettings,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.issuer is None or settings.audience is None:
            raise ValueError("an OIDC issuer and audience are required")
        self._settings = settings
        self._issuer = settings.issuer.rstrip("/")
        self._http = http or httpx.Client(timeout=settings.timeout_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._claims = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=settings.leeway_seconds,
            iss={"essential": True, "value": self._issuer},
            aud={"essential": True, "value": settings.audience},
            exp={"essential": True},
            sub={"essential": True},
        )

    def close(self) -> None:
        self._http.close()

    def verify(self, token: str) -> TeamMember:
        try:
            header = extract_compact(token.encode()).protected
        except (JoseError, ValueError, TypeError):
            raise AuthenticationFailed("the access token is not valid") from None
        if header.get("alg") not in self._settings.algorithms:
            raise AuthenticationFailed("the access token is not valid")
        keys = self._keys_with(header.get("kid"))
        with access_token_errors():
            with eddsa_allowed():
                decoded = jwt.decode(token, keys, algorithms=list(self._settings.algorithms))
            self._claims.validate(decoded.claims)
            return member_from_claims(
                decoded.claims,
                teams_claim=self._settings.teams_claim,
                admin_team=self._settings.admin_team,
            )

    def _keys_with(self, kid: Any) -> KeySet:
        """The provider's keys, fetched again when stale or when they lack ``kid``."""
        with self._lock:
            now = self._clock()
            age = now - self._fetched_at
            stale = age >= self._settings.jwks_cache_seconds
            unknown = self._keys is None or not any(k.kid == kid for k in self._keys)
            if stale or (unknown and age >= self._settings.jwks_min_refresh_seconds):
                try:
                    self._keys = self._fetch()
                except IdentityProviderUnavailable:
                    if self._keys is None:
                        raise
                    log.warning("identity provider unreachable; using the keys fetched before")
                self._fetched_at = now
            if self._keys is None:  # pragma: no cover - _fetch raised above
                raise IdentityProviderUnavailable("the identity provider's keys are unknown")
            return self._keys

    def _fetch(self) -> KeySet:
        metadata = self._get_json(self._issuer + DISCOVERY_PATH)
        if metadata.get("issuer", "").rstrip("/") != self._issuer:
            raise IdentityProviderUnavailable(
                "the identity provider's discovery document names another issuer"
            )
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise IdentityProviderUnavailable("the identity provider publishes no jwks_uri")
        try:
            keys = KeySet.import_key_set(self._get_json(jwks_uri))  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError):
            raise IdentityProviderUnavailable(
                "the identity provider's JWKS is not a valid key set"
            ) from None
        log.info("identity provider keys fetched: %s", ", ".join(str(k.kid) for k in keys))
        return keys

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = self._http.get(url)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("identity provider %s: %s", url, type(exc).__name__)
            raise IdentityProviderUnavailable(
                "the identity provider cannot be reached; try again"
            ) from None
        if not isinstance(body, dict):
            raise IdentityProviderUnavailable(f"{url} did not answer a JSON object")
        return body


class NoIdentityProvider:
    """Internal endpoints when no OIDC issuer is configured: every caller is refused."""

    def verify(self, token: str) -> TeamMember:
        raise AuthenticationFailed(
            "internal endpoints need an identity provider (GATEWAY_OIDC__ISSUER); none is set"
        )

    def close(self) -> None:
        pass
