"""Traces reach an OTLP/HTTP collector when one is configured: server spans named by route,
the ledger's wait for Kafka inside the request that waited, and no secret in any span."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gateway.client import GatewayClient
from gateway.core.jose import sign_detached
from tests.conftest import World
from tests.test_cli import gateway_serve, wait_ready

CONTRACT = "acme-globex-orders"


class Collector:
    """An OTLP/HTTP trace receiver on loopback, as an OpenTelemetry Collector answers."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.bodies: list[bytes] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.path == "/v1/traces"
                assert self.headers["Content-Type"] == "application/x-protobuf"
                collector.bodies.append(body)
                collector.requests.append(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[Any]:
        return [
            span
            for request in self.requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    try:
        yield running
    finally:
        running.close()


def test_spans_of_a_partners_requests_reach_the_collector(
    world: World, kafka_bootstrap: str, produce_orders: Any, collector: Collector
) -> None:
    produce_orders(world.topic, 2)
    env = {"GATEWAY_TRACING__ENDPOINT": collector.url, "GATEWAY_REPLICA": "replica-a"}
    with gateway_serve(world, kafka_bootstrap, "--org", "acme", env=env) as (port, _):
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        with GatewayClient(url, org="globex", key=world.key("globex")) as client:
            token = client.fetch_token()
        auth = {"Authorization": f"Bearer {token}"}
        # A caller's trace context, user agent and path are its own: none reaches a span.
        given_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        headers = {**auth, "traceparent": f"00-{given_trace}-00f067aa0ba902b7-01"}
        headers["User-Agent"] = "partner-agent/9.9"
        with httpx.Client(timeout=10) as http:
            pulled = http.get(
                f"{url}/v1/contracts/{CONTRACT}/records",
                params={"from": "earliest", "limit": "2", "wait": "5"},
                headers=headers,
            ).json()
            receipt = pulled["receipt"]
            signature = sign_detached(receipt.encode("ascii"), world.key("globex"), org="globex")
            acknowledged = http.post(
                f"{url}/v1/contracts/{CONTRACT}/acknowledgements",
                headers=auth,
                json={"receipt": receipt, "signature": signature},
            )
            assert acknowledged.status_code == 201, acknowledged.text
    # (stopped: the spans still batched were sent at exit)
    spans = collector.spans()
    by_name = {span.name: span for span in spans}
    assert {
        "POST /oauth/token",
        "GET /v1/contracts/{contract_id}/records",
        "POST /v1/contracts/{contract_id}/acknowledgements",
        "ledger record",
    } <= set(by_name), sorted(by_name)
    waited = by_name["ledger record"]
    answered = by_name["POST /v1/contracts/{contract_id}/acknowledgements"]
    assert waited.trace_id == answered.trace_id, "the ledger's wait is inside the request"
    resource = collector.requests[0].resource_spans[0].resource
    attributes = {a.key: a.value.string_value for a in resource.attributes}
    assert attributes["service.name"] == "exchange-gateway"
    assert attributes["service.instance.id"] == "replica-a"
    everything = b"".join(collector.bodies)
    for secret in (token, signature, token.split(".")[2]):
        assert secret.encode() not in everything, "a token or signature in a span"
    for said in (b"partner-agent", b"earliest", b"127.0.0.1", bytes.fromhex(given_trace)):
        assert said not in everything, f"{said!r}: what a caller sent, in a span"
    pull = by_name["GET /v1/contracts/{contract_id}/records"]
    assert not pull.parent_span_id, "a request's span is a root: callers do not join traces"
    assert {a.key: a.value.int_value for a in pull.attributes if a.key.endswith("code")} == {
        "http.response.status_code": 200
    }
    allowed = {"http.request.method", "http.route", "http.response.status_code", "ledger.kind"}
    assert {a.key for span in spans for a in span.attributes} <= allowed


def test_no_spans_unless_the_gateway_is_told(
    world: World, kafka_bootstrap: str, collector: Collector
) -> None:
    """Tracing is the operator's decision for this process (``GATEWAY_TRACING__ENDPOINT``):
    an ``OTEL_…`` variable meant for another program in the same environment turns nothing on."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_TRACES_EXPORTER": "otlp"}
    env["FASTAPI_OTEL_AUTO_CONFIGURE"] = "true"  # nor FastAPI's own telemetry
    with gateway_serve(world, kafka_bootstrap, "--org", "acme", env=env) as (port, _):
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        with GatewayClient(url, org="globex", key=world.key("globex")) as client:
            client.fetch_token()
    assert collector.requests == []
