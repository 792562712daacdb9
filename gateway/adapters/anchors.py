"""An anchor over HTTP (``services/anchoring.py``): each checkpoint POSTed as JSON,
``{"checkpoint": "<compact JWS>"}``, to a URL the receiver controls (a partner's endpoint, a
transparency log's). Any 2xx answer means it has it."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from gateway.errors import GatewayError


class HttpAnchor:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._url = url
        self._timeout = timeout
        # The host only: a URL may carry a token in its path or query.
        self.name = urlsplit(url).netloc.rsplit("@", 1)[-1]

    def publish(self, checkpoint: str) -> None:
        try:
            response = httpx.post(self._url, json={"checkpoint": checkpoint}, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise GatewayError(f"{self.name} cannot be reached ({type(exc).__name__})") from None
        if not response.is_success:
            raise GatewayError(f"{self.name} answered {response.status_code}")
