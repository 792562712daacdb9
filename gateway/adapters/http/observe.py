"""What every HTTP request leaves behind for operators, in one plain-ASGI middleware (a
stream's writes pass through one small wrapper, nothing more):

- the log context of its lines (``logs.request_context``) and ``X-Request-ID`` on its answer;
- ``gateway_http_requests_total`` and ``gateway_http_request_duration_seconds`` (the time
  until its answer began: for a stream, until it opened);
- with tracing on, its server span: named by method and route template, holding those and the
  status only (no path, query, header or address a caller sent), a root span whatever
  ``traceparent`` says (the edge of the company: callers do not decide what is sampled).

Labels come from bounded sets (``metrics.py``): the route that matched (its template, never the
path asked for), ``unmatched`` otherwise; the method if the API has it, ``other``. A request
whose client left before an answer began is not counted as an error.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.logs import CONTEXT, request_context
from gateway.metrics import GatewayMetrics
from gateway.tracing import tracer

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(scope: Any) -> str:
    """The template of the route that matched (FastAPI puts it in the scope), or
    ``unmatched``: a label never holds a path a caller made up."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class Observed:
    def __init__(self, app: Any, metrics: GatewayMetrics, traced: bool = False) -> None:
        self.app = app
        self._requests = metrics.http_requests
        self._duration = metrics.http_duration
        self._traced = traced

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = request_context(scope)
        token = CONTEXT.set(context)
        header = (b"x-request-id", context["request_id"].encode("latin-1"))
        began = time.perf_counter()
        method = scope["method"] if scope["method"] in METHODS else "other"
        span: Any = None
        answered = False

        async def observed(message: Any) -> None:
            nonlocal answered
            if not answered and message["type"] == "http.response.start":
                answered = True
                message = {**message, "headers": [*message.get("headers", []), header]}
                self._count(scope, method, message["status"], began, span)
            await send(message)

        try:
            with contextlib.ExitStack() as spans:
                if self._traced:
                    span = spans.enter_context(
                        tracer.start_as_current_span(
                            method,
                            context=Context(),
                            kind=SpanKind.SERVER,
                            attributes={"http.request.method": method},
                        )
                    )
                await self.app(scope, receive, observed)
        except Exception:  # not a client gone (a cancellation): the server answers 500
            if not answered:
                self._count(scope, method, 500, began, span)
            raise
        finally:
            CONTEXT.reset(token)

    def _count(self, scope: Any, method: str, status: int, began: float, span: Any) -> None:
        route = route_of(scope)
        self._requests.labels(route, method, str(status)).inc()
        self._duration.labels(route, method).observe(time.perf_counter() - began)
        if span is not None and span.is_recording():
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
