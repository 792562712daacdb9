"""Partner authentication: OAuth 2.0 client credentials (RFC 6749 §4.4) with authlib.

Clients authenticate with ``private_key_jwt`` (RFC 7523 §2.2; ``client_id`` is the organisation
id and the assertion is signed with its published ``use: sig`` key) or, for clients registered
in settings, ``client_secret_basic`` against an Argon2 hash. Access tokens are JWTs in the
RFC 9068 profile (``typ: at+jwt``), signed ES256 by the gateway's own key.

authlib's protocol core answers ``(status, body, headers)``; the HTTP adapter only translates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    InvalidClientError,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gateway.core.jose import (
    SIGNING_ALGORITHMS,
    access_token_errors,
    eddsa_allowed,
    unverified_claims,
)
from gateway.errors import AuthenticationFailed
from gateway.services.passwords import verify_secret
from gateway.settings import RegisteredClient

# authlib logs issued tokens at DEBUG; tokens must never reach a log.
logging.getLogger("authlib").setLevel(logging.INFO)
log = logging.getLogger(__name__)

PRIVATE_KEY_JWT = "private_key_jwt"
CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 (a method name)
ACCESS_TOKEN_ALG = "ES256"  # noqa: S105 (an algorithm name)


@dataclass(frozen=True)
class PartnerClient(ClientMixin):  # type: ignore[misc]
    """An OAuth client acting for one partner organisation."""

    client_id: str
    org: str
    auth_method: str
    jwks: KeySet | None = None
    secret_hash: str | None = None

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        return ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        if self.secret_hash is None:
            return False
        return verify_secret(self.secret_hash, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class _ClientCredentials(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [PRIVATE_KEY_JWT, CLIENT_SECRET_BASIC]


class Replays(Protocol):
    """Where client assertion ids are remembered until they expire (RFC 7523 §3 item 7)."""

    def first_use(self, key: str, expires_at: float) -> bool: ...


class _PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    CLIENT_AUTH_METHOD = PRIVATE_KEY_JWT

    def __init__(
        self,
        audiences: list[str],
        replays: Replays,
        max_lifetime: int,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self._audiences = audiences
        self._replays = replays
        self._max_lifetime = max_lifetime
        self._clock = clock

    def get_audiences(self) -> list[str]:
        return self._audiences

    def resolve_client_public_key(self, client: PartnerClient) -> KeySet:
        if client.jwks is None:
            raise InvalidClientError(description="The client has no published keys.")
        return KeySet([k for k in client.jwks if k.get("use") == "sig"])

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        # authlib's default registry refuses EdDSA; partners sign with EdDSA or Ed25519.
        try:
            with eddsa_allowed():
                token = jwt.decode(assertion, resolve_key, algorithms=list(SIGNING_ALGORITHMS))
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description="The client assertion does not verify.") from exc
        self.verify_claims(token.claims)
        return token.claims

    def verify_claims(self, claims: Any) -> None:
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp - self._clock() > self._max_lifetime:
            raise InvalidClientError(
                description=f"The client assertion may live at most {self._max_lifetime}s."
            )
        super().verify_claims(claims)

    def validate_jti(self, claims: Any, jti: Any) -> bool:
        return self._replays.first_use(f"{claims['iss']}\0{jti}", float(claims["exp"]) + 60)


class _AccessTokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    """Signs with the first of the gateway's keys only: the others verify (a rotation,
    ``state_dir.py``). authlib's header names no ``kid``, so joserfc would sign with a key of
    the set picked at random (``guess_key(random=True)``), one that replicas restarted
    before the key was added would not know; a set of one key is picked, and named."""

    def __init__(self, issuer: str, keys: KeySet, lifetime: int) -> None:
        super().__init__(issuer, alg=ACCESS_TOKEN_ALG, expires_generator=lambda *_: lifetime)
        self._signing = KeySet(keys.keys[:1])

    def get_jwks(self) -> KeySet:
        return self._signing

    def get_audiences(self, client: PartnerClient, user: Any, scope: Any) -> str:
        return str(self.issuer)

    def get_extra_claims(
        self, client: PartnerClient, grant_type: str, user: Any, scope: Any
    ) -> dict[str, Any]:
        return {"org": client.org}


@dataclass
class TokenRequest:
    """A token endpoint request, independent of the web framework."""

    uri: str
    form: Mapping[str, str]
    authorization: str | None


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, request: TokenRequest) -> None:
        headers = {"Authorization": request.authorization} if request.authorization else {}
        super().__init__("POST", request.uri, headers=headers)
        self._form = dict(request.form)
        self.payload = BasicOAuth2Payload(self._form)

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class PresentedClient:
    """Whom a token request claims to come from, read before authenticating it."""

    #: The identity the request authenticates as (HTTP Basic user, else the assertion's
    #: unverified ``iss``, else ``client_id``): what the brute-force limit is keyed on.
    client_id: str | None
    #: Why the request must be refused before authentication, with its RFC 6749 error.
    conflict: tuple[str, str] | None = None


def presented_client(request: TokenRequest) -> PresentedClient:
    """RFC 6749 §2.3: one authentication method per request, and a ``client_id`` parameter,
    if sent, names the client that authenticates."""
    try:
        basic_user, _ = extract_basic_authorization({"Authorization": request.authorization})
    except UnicodeDecodeError:
        basic_user = None
    assertion = request.form.get("client_assertion")
    issuer = unverified_claims(assertion).get("iss") if assertion else None
    named = request.form.get("client_id") or None
    authenticating = basic_user or (issuer if isinstance(issuer, str) and issuer else None)
    identity = authenticating or named
    if basic_user and assertion:
        return PresentedClient(
            identity, ("invalid_request", "use one client authentication method, not two")
        )
    if named and authenticating and named != authenticating:
        return PresentedClient(
            identity, ("invalid_client", "client_id does not name the client that authenticates")
        )
    return PresentedClient(identity)


class PartnerAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """The token endpoint. ``create_token_response`` answers ``(status, body, headers)``."""

    def __init__(
        self,
        *,
        issuer: str,
        signing_keys: KeySet,
        token_lifetime: int,
        assertion_max_lifetime: int,
        org_keys: Callable[[], Mapping[str, KeySet]],
        registered: list[RegisteredClient],
        replays: Replays,
        on_issued: Callable[[PartnerClient], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(scopes_supported=None)
        self.issuer = issuer
        self.token_endpoint = f"{issuer}/oauth/token"
        self._org_keys = org_keys
        self._on_issued = on_issued
        self._signing_keys = signing_keys
        self._registered = {c.client_id: c for c in registered}
        self.register_grant(_ClientCredentials)
        self.register_token_generator(
            "default", _AccessTokenGenerator(issuer, signing_keys, token_lifetime)
        )
        self.register_client_auth_method(
            PRIVATE_KEY_JWT,
            _PrivateKeyJWT([self.token_endpoint, issuer], replays, assertion_max_lifetime, clock),
        )

    def query_client(self, client_id: str) -> PartnerClient | None:
        registered = self._registered.get(client_id)
        if registered is not None:
            return PartnerClient(
                client_id,
                registered.org,
                CLIENT_SECRET_BASIC,
                secret_hash=registered.secret_hash.get_secret_value(),
            )
        keys = self._org_keys().get(client_id)
        if keys is not None:
            return PartnerClient(client_id, client_id, PRIVATE_KEY_JWT, jwks=keys)
        return None

    def save_token(self, token: dict[str, Any], request: _Request) -> None:
        client: PartnerClient = request.client
        log.info("token issued to client %s of %s", client.client_id, client.org)
        if self._on_issued is not None:
            self._on_issued(client)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def create_oauth2_request(self, request: TokenRequest | _Request) -> _Request:
        return request if isinstance(request, _Request) else _Request(request)

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, headers

    def public_jwks(self) -> dict[str, Any]:
        return dict(self._signing_keys.as_dict(private=False))

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        return {
            "issuer": self.issuer,
            "token_endpoint": self.token_endpoint,
            "jwks_uri": f"{self.issuer}/.well-known/jwks.json",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": [PRIVATE_KEY_JWT, CLIENT_SECRET_BASIC],
            "token_endpoint_auth_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
            "response_types_supported": [],
        }


@dataclass(frozen=True, slots=True)
class Partner:
    """The authenticated caller of the partner API."""

    org: str
    client_id: str
    token_expires_at: datetime


class AccessTokenVerifier:
    """Checks RFC 9068 access tokens this gateway issued."""

    def __init__(
        self, issuer: str, signing_keys: KeySet, clock: Callable[[], float] = time.time
    ) -> None:
        self._keys = signing_keys
        self._claims = jwt.JWTClaimsRegistry(
            now=lambda: int(clock()),
            leeway=0,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": issuer},
            exp={"essential": True},
            org={"essential": True},
            client_id={"essential": True},
        )

    def verify(self, token: str) -> Partner:
        with access_token_errors():
            decoded = jwt.decode(token, self._keys, algorithms=[ACCESS_TOKEN_ALG])
            if decoded.header.get("typ") not in ("at+jwt", "application/at+jwt"):
                raise AuthenticationFailed("not an access token")
            self._claims.validate(decoded.claims)
        claims = decoded.claims
        return Partner(
            org=str(claims["org"]),
            client_id=str(claims["client_id"]),
            token_expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
