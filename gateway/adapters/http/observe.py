"""HTTP metrics: every answer counted by route template, method and status, and the time
until it began (``gateway_http_requests_total``, ``gateway_http_request_duration_seconds``).

Plain ASGI, like ``logs.RequestContext``: a stream's writes pass through one small wrapper.
Labels come from bounded sets (``metrics.py``): the route that matched (its template, never
the path asked for), ``unmatched`` otherwise; the method if the API has it, ``other``.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.metrics import GatewayMetrics
from gateway.tracing import name_request

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(scope: Any) -> str:
    """The template of the route that matched (FastAPI puts it in the scope), or
    ``unmatched``: a label never holds a path a caller made up."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class HttpMetrics:
    def __init__(self, app: Any, metrics: GatewayMetrics) -> None:
        self.app = app
        self._requests = metrics.http_requests
        self._duration = metrics.http_duration

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        method = scope["method"] if scope["method"] in METHODS else "other"
        answered = False

        async def observed(message: Any) -> None:
            nonlocal answered
            if not answered and message["type"] == "http.response.start":
                answered = True
                self._count(scope, method, message["status"], began)
            await send(message)

        try:
            await self.app(scope, receive, observed)
        except BaseException:
            if not answered:  # the server answers 500 for it (or the connection is gone)
                self._count(scope, method, 500, began)
            raise

    def _count(self, scope: Any, method: str, status: int, began: float) -> None:
        route = route_of(scope)
        name_request(method, route)
        self._requests.labels(route, method, str(status)).inc()
        self._duration.labels(route, method).observe(time.perf_counter() - began)
