"""What an operator's Prometheus scrapes from the metrics port, after partners used the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from gateway.client import client_assertion
from tests.conftest import RunningGateway, World
from tests.test_authorization import token_request

CONTRACT = "acme-globex-orders"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def scrape(serve: Callable[..., RunningGateway]) -> Iterator[tuple[RunningGateway, Any]]:
    """A gateway and its metrics listener, as ``gateway serve`` starts it."""
    gw = serve()
    server, thread = start_http_server(0, "127.0.0.1", gw.gateway.metrics.registry)
    port = server.server_port

    def read() -> Samples:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    try:
        yield gw, read
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_tokens_ledger_kafka_and_the_process_are_measured(
    scrape: tuple[RunningGateway, Any], world: World, produce_orders: Any, http: httpx.Client
) -> None:
    gw, read = scrape
    produce_orders(world.topic, 3)
    token = gw.token("globex")
    # globex's name, initech's key: a forgery
    forged = client_assertion("globex", world.key("initech"), f"{gw.url}/oauth/token")
    refused = token_request(http, gw, forged)
    assert refused.json()["error"] == "invalid_client"
    records = f"{gw.url}/v1/contracts/{CONTRACT}/records"
    for _ in range(2):
        pulled = http.get(records, headers={"Authorization": f"Bearer {token}"})
        assert pulled.status_code == 200
    made_up = "/v1/secret-path-" + "x" * 40
    assert http.get(f"{gw.url}{made_up}").status_code == 404
    assert http.get(records).status_code == 401

    samples = read()
    route = "/v1/contracts/{contract_id}/records"
    assert value(samples, "gateway_http_requests_total", route=route, method="GET", status="200")
    assert value(samples, "gateway_http_requests_total", route=route, method="GET", status="401")
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(samples, "gateway_http_requests_total", **unmatched) == 1
    assert value(samples, "gateway_http_request_duration_seconds_count", route=route, method="GET")
    assert not any(made_up in dict(labels).get("route", "") for _, labels in samples), (
        "a path a caller made up never becomes a label"
    )
    assert value(samples, "gateway_token_requests_total", outcome="issued") == 1
    assert value(samples, "gateway_token_requests_total", outcome="invalid_client") == 1

    assert value(samples, "gateway_ledger_up") == 1
    assert value(samples, "gateway_kafka_up") == 1
    assert ("gateway_ledger_queue_entries", frozenset()) in samples
    assert value(samples, "gateway_ledger_write_seconds_count") > 0, "the token was recorded"
    assert value(samples, "gateway_ledger_failed_entries_total") == 0
    assert value(samples, "gateway_topic_readers") == 1, "the pulls read through one reader"
    assert value(samples, "process_resident_memory_bytes") > 0
    assert any(name == "python_gc_collections_total" for name, _ in samples)
    assert not any(token in repr(key) for key in samples), "no token in any label"
