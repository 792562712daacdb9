"""Faults from outside: the broker taken away and given back (a proxy in front of it is cut)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from gateway.adapters.kafka.admin import create_topic
from gateway.adapters.kafka.embedded import EmbeddedKafka, free_port
from gateway.adapters.kafka.producer import produce
from gateway.settings import KafkaSettings
from tests.conftest import RunningGateway, World, order
from tests.sse import LiveStream
from tests.tcp_proxy import TcpProxy

CONTRACT = "acme-globex-orders"


@pytest.fixture
def broker_behind_proxy() -> Iterator[tuple[EmbeddedKafka, TcpProxy]]:
    """A broker of the test's own, reached only through a proxy the test can cut."""
    port = free_port()
    proxy = TcpProxy(port)
    broker = EmbeddedKafka(port=port, advertised_port=proxy.port)
    try:
        broker.start()
        yield broker, proxy
    finally:
        proxy.close()
        broker.stop()


def until(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition`` held (fails after ``timeout``)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - start


def test_a_broker_outage_refuses_fast_shows_at_once_and_heals_by_itself(
    broker_behind_proxy: tuple[EmbeddedKafka, TcpProxy],  # first: it outlives the gateway
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
) -> None:
    broker, proxy = broker_behind_proxy
    config = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(config, world.topic, 2)
    batch: list[tuple[bytes | str | None, bytes]] = [
        (f"o-{n}", json.dumps(order(n)).encode()) for n in range(3)
    ]
    produce(config, world.topic, batch, producer_config={"linger.ms": 0})
    gw = serve(kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers))
    headers = {"Authorization": f"Bearer {gw.token('globex')}"}
    stream = LiveStream(http, gw.url, gw.token("globex"))
    assert len(stream.wait_records(3, timeout=10)) == 3
    cursor = [e.id for _, e in stream.events if e.event == "record"][-1]

    proxy.cut()
    # Readiness says so at once, and new requests are refused at once with the reason.
    shown = until(lambda: http.get(f"{gw.url}/readyz").status_code == 503, timeout=5)
    asked = time.monotonic()
    refused = http.get(f"{gw.url}/v1/contracts/{CONTRACT}/records", headers=headers)
    answered = time.monotonic() - asked
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "ledger_unavailable"
    assert refused.headers["retry-after"]
    assert http.get(f"{gw.url}/livez").status_code == 200, "alive: nothing to restart"
    # The live stream ends with a clear reason (the partner resumes with its cursor).
    _, end = stream.wait_end(timeout=15)
    assert end["reason"] == "ledger_unavailable"
    stream.close()

    proxy.restore()
    healed = until(lambda: http.get(f"{gw.url}/readyz").status_code == 200, timeout=30)
    produce(config, world.topic, [("o-3", json.dumps(order(3)).encode())])
    resumed = http.get(
        f"{gw.url}/v1/contracts/{CONTRACT}/records",
        headers={"Authorization": f"Bearer {gw.token('globex')}"},
        params={"cursor": cursor, "wait": "5"},
    )
    assert resumed.status_code == 200, resumed.text
    assert [r["key"] for r in resumed.json()["records"]] == ["o-3"], "exactly where it stopped"
    print(f"outage shown in {shown:.1f} s, refused in {answered:.2f} s, healed in {healed:.1f} s")
    assert shown < 3
    assert answered < 1
    assert healed < 15


def test_a_deleted_ledger_topic_is_noticed_and_nothing_new_starts(
    serve: Callable[..., RunningGateway], kafka_config: dict[str, str], http: httpx.Client
) -> None:
    """A replica whose chain no longer continues refuses rather than start silently over."""
    from confluent_kafka.admin import AdminClient

    gw = serve()
    topic = gw.gateway.settings.ledger_topic
    admin = AdminClient(kafka_config)
    for future in admin.delete_topics([topic]).values():
        future.result(timeout=10)
    until(lambda: http.get(f"{gw.url}/readyz").status_code == 503, timeout=5)
    problem = http.get(f"{gw.url}/readyz").json()["ledger"]
    assert "does not exist" in problem
    refused = http.post(f"{gw.url}/oauth/token", data={"grant_type": "client_credentials"})
    assert refused.status_code in (400, 503)  # nothing is issued either way
