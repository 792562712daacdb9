"""Security headers for the server-rendered pages (legal review, teams; HTML, no JavaScript).

A pure ASGI middleware, so the partner API's streams pass through untouched: it only adds
headers to responses under ``/legal`` and ``/teams``. The Content-Security-Policy allows
nothing but the one inline stylesheet of ``base.html``, pinned by its hash, so injected markup
can neither run script, load anything, submit a form, nor be framed.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BASE_TEMPLATE = Path(__file__).parent / "templates" / "legal" / "base.html"


def _style_hashes(template: Path) -> str:
    styles = re.findall(r"<style>(.*?)</style>", template.read_text(), re.DOTALL)
    digests = (base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in styles)
    return " ".join(f"'sha256-{d}'" for d in digests)


LEGAL_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"content-security-policy",
        (
            f"default-src 'none'; style-src {_style_hashes(BASE_TEMPLATE)}; img-src 'self'; "
            "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
        ).encode(),
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class LegalPageHeaders:
    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...] = ("/legal",)) -> None:
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in LEGAL_HEADERS}
                kept = [(n, v) for n, v in message.get("headers", []) if n.lower() not in names]
                message["headers"] = kept + LEGAL_HEADERS
            await send(message)

        await self.app(scope, receive, with_headers)
