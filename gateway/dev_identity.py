"""A development OpenID Connect provider: discovery and JWKS over HTTP on loopback, access
tokens signed with its own RSA key. ``gateway demo`` gives the demo team its tokens with it, and
the tests stand it in for a company's provider; the gateway fetches from it exactly as from
one. Not for production: it issues any token it is asked for.

``available = False`` makes it answer 503 (a provider that is down), ``discovery_issuer``
states another issuer in discovery, ``rotate`` changes its signing key, ``fetches`` counts the
JWKS requests, and ``clock`` is the time tokens are issued at.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

AUDIENCE = "exchange-gateway"


class DevIdentityProvider:
    """Serves ``/.well-known/openid-configuration`` and ``/jwks`` on a free loopback port."""

    def __init__(self, port: int = 0) -> None:
        self.keys: list[RSAKey] = [self._new_key()]
        self.available = True
        self.fetches = 0
        self.discovery_issuer: str | None = None  # another issuer in discovery, when set
        #: The time tokens are issued at (a test's clock, to move it with the gateway's).
        self.clock: Callable[[], float] = time.time
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not issuer.available:
                    self.send_error(503)
                    return
                if self.path == "/.well-known/openid-configuration":
                    body: dict[str, Any] = {
                        "issuer": issuer.discovery_issuer or issuer.url,
                        "jwks_uri": f"{issuer.url}/jwks",
                        "token_endpoint": f"{issuer.url}/token",
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }
                elif self.path == "/jwks":
                    issuer.fetches += 1
                    body = dict(KeySet(list(issuer.keys)).as_dict(private=False))
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    @staticmethod
    def _new_key() -> RSAKey:
        return RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex[:12], "use": "sig"})

    def rotate(self, *, keep_old: bool = True) -> None:
        """Sign with a new key from now on; the old one stays published unless ``keep_old``."""
        self.keys = [self._new_key(), *(self.keys if keep_old else [])]

    def token(
        self,
        subject: str = "alice",
        groups: Any = ("orders-team",),
        *,
        audience: str = AUDIENCE,
        issuer: str | None = None,
        lifetime: int = 300,
        key: RSAKey | None = None,
        **claims: Any,
    ) -> str:
        now = int(self.clock())
        body: dict[str, Any] = {
            "iss": issuer or self.url,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "exp": now + lifetime,
            "groups": list(groups) if isinstance(groups, tuple) else groups,
            **claims,
        }
        signer = key or self.keys[0]
        header = {"alg": "RS256", "typ": "at+jwt", "kid": signer.kid}
        return jwt.encode(header, body, signer)

    def __enter__(self) -> DevIdentityProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
