"""Traces (OpenTelemetry), off unless an OTLP endpoint is configured (``GATEWAY_TRACING__…``).

When on: a server span per HTTP request (named by method and route template, never the path a
caller sent; no headers, no bodies), and spans around the calls that wait on Kafka: a ledger
entry awaiting its acknowledgement, a publish awaiting its records' acknowledgements. Spans go
to an OTLP/HTTP collector in batches from a background thread. Off, every span is the API's
no-op: the record path carries no tracing at all (a span per record would cost more than the
record). A stream's writes get no span of their own (``exclude_spans``): one span covers the
stream from opening to end.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

#: Spans of the gateway's own calls (the no-op tracer until ``configure`` sets a provider).
tracer = trace.get_tracer("exchange_gateway")


def configure(endpoint: str, *, service: str, instance: str, sample_ratio: float) -> Any:
    """Send this process's spans to ``endpoint`` (``http://collector:4318``); the provider, to
    wrap the app with and to shut down at exit."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.instance.id": instance}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def traced_app(app: Any, provider: Any) -> Any:
    """``app`` with a server span per HTTP request."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    def name_only(scope: Any) -> tuple[str, dict[str, Any]]:
        # The route is known only once routed: HttpMetrics renames the span then.
        return str(scope.get("method", "HTTP")), {}

    return OpenTelemetryMiddleware(
        app,
        tracer_provider=provider,
        default_span_details=name_only,
        exclude_spans=["receive", "send"],
    )


def name_request(method: str, route: str) -> None:
    """Name the current request's span by its route template (a no-op when tracing is off)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
