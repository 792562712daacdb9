"""Traces (OpenTelemetry), off unless an OTLP endpoint is configured (``GATEWAY_TRACING__…``).

When on: a server span per HTTP request (``adapters/http/observe.py``: named by method and
route template, holding those and the status only), and inside it spans around the calls that
wait on Kafka: a ledger entry awaiting its acknowledgement, a publish awaiting its records'.
Spans go to an OTLP/HTTP collector in batches from a background thread. Off, every span is the
API's no-op. The record path carries no tracing at all (a span per record would cost more than
the record): a stream is one span from opening to end.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

#: Spans of the gateway's own calls (the no-op tracer until ``configure`` sets a provider).
tracer = trace.get_tracer("exchange_gateway")


def configure(endpoint: str, *, service: str, instance: str, sample_ratio: float) -> Any:
    """Send this process's spans to ``endpoint`` (``http://collector:4318``); the provider, to
    shut down at exit (it sends what is still batched)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.instance.id": instance}),
        sampler=TraceIdRatioBased(sample_ratio),  # requests' spans are roots: the edge decides
    )
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider
