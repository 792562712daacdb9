"""Faults from outside: the broker taken away and given back (a proxy in front of it is cut)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from gateway.adapters.kafka.admin import create_topic
from gateway.adapters.kafka.embedded import EmbeddedKafka, free_port, wait_for_port
from gateway.adapters.kafka.producer import produce
from gateway.settings import KafkaSettings
from tests.conftest import RunningGateway, World, order, produce_exact
from tests.processes import Processes
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


def scraped(gw: RunningGateway) -> set[str]:
    """The lines Prometheus would scrape from the gateway now."""
    return set(generate_latest(gw.gateway.metrics.registry).decode().splitlines())


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
    produce_exact(
        config, world.topic, [(f"o-{n}", json.dumps(order(n)).encode()) for n in range(3)]
    )
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
    # ... and what the operator's alerts read (docs/operations.md) says it too.
    until(lambda: {"gateway_kafka_up 0.0", "gateway_ledger_up 0.0"} <= scraped(gw), timeout=5)
    # The live stream ends with a clear reason (the partner resumes with its cursor).
    _, end = stream.wait_end(timeout=15)
    assert end["reason"] == "ledger_unavailable"
    stream.close()

    proxy.restore()
    healed = until(lambda: http.get(f"{gw.url}/readyz").status_code == 200, timeout=30)
    assert {"gateway_kafka_up 1.0", "gateway_ledger_up 1.0"} <= scraped(gw)
    produce(config, world.topic, [("o-3", json.dumps(order(3)).encode())])
    # Readiness is the ledger's; the replica's other Kafka clients reconnect on their own
    # backoff, and until they have, a request is refused (503, Retry-After): a partner retries.
    headers = {"Authorization": f"Bearer {gw.token('globex')}"}
    url = f"{gw.url}/v1/contracts/{CONTRACT}/records"
    deadline = time.monotonic() + 20
    while (
        resumed := http.get(url, headers=headers, params={"cursor": cursor, "wait": "5"})
    ).status_code != 200:
        assert resumed.status_code == 503, resumed.text
        assert resumed.headers["retry-after"], "refused with when to try again"
        assert time.monotonic() < deadline, resumed.text
        time.sleep(min(float(resumed.headers["retry-after"]), 1.0))
    assert [r["key"] for r in resumed.json()["records"]] == ["o-3"], "exactly where it stopped"
    print(f"outage shown in {shown:.1f} s, refused in {answered:.2f} s, healed in {healed:.1f} s")
    assert shown < 3
    assert answered < 1
    assert healed < 15


def test_a_replica_started_while_kafka_is_away_checks_the_ledger_topic_before_it_serves(
    broker_behind_proxy: tuple[EmbeddedKafka, TcpProxy],  # first: it outlives the gateway
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
) -> None:
    """The check of the topics at start got no answer: the replica listens, not ready, and
    once Kafka answers the check runs, creates the ledger topic (infinite retention) and the
    replica serves; nothing was recorded before."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        ConfigResource,
        ResourceType,
    )

    broker, proxy = broker_behind_proxy
    proxy.cut()
    gw = serve(ready=False, kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers))
    assert http.get(f"{gw.url}/readyz").json()["ledger"] != "ok"
    assert token_answer(http, gw).status_code == 503, "no token while nothing can be recorded"

    proxy.restore()
    until(lambda: http.get(f"{gw.url}/readyz").status_code == 200, timeout=30)
    assert token_answer(http, gw).status_code == 200
    topic = gw.gateway.settings.ledger_topic
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    (described,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    retention = described.result(timeout=10)
    assert (retention["retention.ms"].value, retention["retention.bytes"].value) == ("-1", "-1")


def token_answer(http: httpx.Client, gw: RunningGateway) -> httpx.Response:
    from tests.test_authorization import token_request

    return token_request(http, gw, gw.assertion("globex"))


def test_a_deleted_ledger_topic_is_noticed_and_nothing_new_starts(
    serve: Callable[..., RunningGateway], kafka_config: dict[str, str], http: httpx.Client
) -> None:
    """A replica whose chain no longer continues refuses rather than start silently over."""
    from confluent_kafka.admin import AdminClient

    gw = serve()
    token = gw.token("globex")
    topic = gw.gateway.settings.ledger_topic
    config: dict[str, str | int | float | bool] = {**kafka_config}
    admin = AdminClient(config)
    for future in admin.delete_topics([topic]).values():
        future.result(timeout=10)
    until(lambda: http.get(f"{gw.url}/readyz").status_code == 503, timeout=5)
    problem = http.get(f"{gw.url}/readyz").json()["ledger"]
    assert "does not exist" in problem
    refused = http.get(
        f"{gw.url}/v1/contracts/{CONTRACT}/records", headers={"Authorization": f"Bearer {token}"}
    )
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "ledger_unavailable"


def test_a_ledger_topic_recreated_between_two_probes_is_noticed(
    serve: Callable[..., RunningGateway], kafka_config: dict[str, str], http: httpx.Client
) -> None:
    """Deleted and created again empty within the second between two probes: the topic looks
    the same, but this replica's chain no longer continues in it."""
    gw = serve()
    token = gw.token("globex")
    recreate(kafka_config, gw.gateway.settings.ledger_topic, 1)
    until(lambda: http.get(f"{gw.url}/readyz").status_code == 503, timeout=5)
    assert "created again" in http.get(f"{gw.url}/readyz").json()["ledger"]
    refused = http.get(
        f"{gw.url}/v1/contracts/{CONTRACT}/records", headers={"Authorization": f"Bearer {token}"}
    )
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "ledger_unavailable"


def test_a_replica_killed_mid_stream_leaves_at_most_a_second_unrecorded_and_resumes_exactly(
    world: World,
    kafka_bootstrap: str,
    kafka_config: dict[str, str],
    http: httpx.Client,
    processes: Processes,
) -> None:
    """3 kills during a 6,000-record stream once left 3,950 delivered records unrecorded."""
    from gateway.adapters.kafka.ledger import read_entries
    from gateway.client import GatewayClient
    from gateway.services.report import build_report
    from tests.test_cli import GATEWAY, wait_ready
    from tests.test_quotas import backlog, with_quotas

    with_quotas(world, "{records_per_second: 200}")
    backlog(kafka_config, world.topic, 3000)
    ledger_topic = f"ledger-{uuid.uuid4().hex[:8]}"

    def replica() -> tuple[str, Any]:
        port = free_port()
        args = ["serve", "--contracts", str(world.contracts_dir), "--keys", str(world.keys_dir)]
        args += ["--state", str(world.root / "state"), "--bootstrap-servers", kafka_bootstrap]
        gateway = processes.start(
            [*GATEWAY, *args, "--port", str(port), "--org", "acme"],
            stop_signal=signal.SIGKILL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "GATEWAY_LEDGER_TOPIC": ledger_topic},
        )
        url = f"http://127.0.0.1:{port}"
        wait_for_port("127.0.0.1", port, timeout=20)
        wait_ready(url)
        return url, gateway

    url, gateway = replica()
    with GatewayClient(url, org="globex", key=world.key("globex")) as client:
        token = client.fetch_token()
    stream = LiveStream(http, url, token)
    stream.wait_records(500, timeout=20)
    processes.stop(gateway)  # SIGKILL: no goodbye, no final ledger entry
    time.sleep(0.5)
    received = [e for _, e in stream.events if e.event == "record"]
    stream.close()

    entries = list(read_entries(kafka_config, ledger_topic, idle=0.5))
    (delivery,) = build_report(entries, CONTRACT).deliveries
    assert delivery.end_reason == "unfinished"
    unrecorded = len(received) - delivery.records
    assert unrecorded <= 200, f"{unrecorded} records sent and not recorded (1 s is 200)"
    assert delivery.records <= len(received) + 20, "what is recorded was about to be sent"
    # Killed, its chain was never closed: verify says so (signed up to its last checkpoint).
    from joserfc.jwk import KeySet

    from gateway.core.jose import verify_compact
    from gateway.core.ledger import prove

    key_file = world.root / "state" / "ledger-signing.jwks.json"
    ledger_keys = KeySet.import_key_set(json.loads(key_file.read_text()))
    problems, proofs = prove(
        entries, lambda t: verify_compact(t, ledger_keys), now=datetime.now(UTC), live_seconds=0
    )
    assert [p.kind for p in problems] == ["open"]
    assert proofs[0].proven >= 0, "its start was signed at once"

    url, _ = replica()
    with GatewayClient(url, org="globex", key=world.key("globex")) as client:
        token = client.fetch_token()
    resumed = http.get(
        f"{url}/v1/contracts/{CONTRACT}/records",
        headers={"Authorization": f"Bearer {token}"},
        params={"cursor": received[-1].id, "limit": "1000", "wait": "5"},
    ).json()["records"]
    before = {(r["partition"], r["offset"]) for r in (e.json() for e in received)}
    after = {(r["partition"], r["offset"]) for r in resumed}
    assert not before & after, "nothing twice"
    for partition in {p for p, _ in before | after}:
        sent = sorted(o for p, o in before | after if p == partition)
        assert sent == list(range(len(sent))), f"no gap in partition {partition}"
    print(f"received {len(received)}, recorded {delivery.records}, resumed {len(resumed)}")


def recreate(kafka_config: dict[str, str], topic: str, partitions: int) -> None:
    """Delete ``topic`` and create it again, empty (what an operator's mistake looks like)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**kafka_config})
    for future in admin.delete_topics([topic]).values():
        future.result(timeout=10)
    deadline = time.monotonic() + 10
    while True:  # the deletion settles before the name can be taken again
        try:
            create_topic(kafka_config, topic, partitions)
            return
        except Exception:
            assert time.monotonic() < deadline, "the topic could not be created again"
            time.sleep(0.1)


def test_a_cursor_past_the_end_of_a_recreated_topic_is_refused_clearly(
    serve: Callable[..., RunningGateway],
    world: World,
    kafka_config: dict[str, str],
    produce_orders: Any,
    http: httpx.Client,
) -> None:
    """The topic was recreated: the partner's cursor points at offsets that do not exist (yet).
    Reading on would silently skip whatever is produced up to there; the partner is told.

    The partner read 10 records before (its cursor is minted here with the gateway's cursor
    key): no stream may be reading the topic while it is deleted, since librdkafka crashes on
    the test broker's answer to a fetch of a deleted topic (docs/testing.md)."""
    from gateway.adapters.stores.state_dir import load_secrets
    from gateway.core.cursor import CursorCodec

    produce_orders(world.topic, 10, partition=0)
    gw = serve()
    codec = CursorCodec(load_secrets(world.root / "state", create=False).cursor_secret)
    first = {"cursor": codec.encode(CONTRACT, {0: 10, 1: 0})}
    auth = {"Authorization": f"Bearer {gw.token('globex')}"}
    url = f"{gw.url}/v1/contracts/{CONTRACT}/records"

    recreate(kafka_config, world.topic, 2)
    produce_orders(world.topic, 3, partition=0)
    stream = http.build_request(
        "GET",
        f"{gw.url}/v1/contracts/{CONTRACT}/stream",
        headers={**auth, "Accept": "text/event-stream", "Last-Event-ID": first["cursor"]},
    )
    pull = http.build_request("GET", url, headers=auth, params={"cursor": first["cursor"]})
    for request in (pull, stream):
        answer = http.send(request, stream=True)
        answer.read() if answer.status_code != 200 else answer.close()
        assert answer.status_code == 409, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["code"] == "cursor_out_of_range"
        assert "partition 0" in problem["detail"]
        assert "offset 10" in problem["detail"]
        assert "ends at 3" in problem["detail"]


def test_a_countersignature_is_accepted_only_once_recorded(
    broker_behind_proxy: tuple[EmbeddedKafka, TcpProxy],  # first: it outlives the gateway
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
) -> None:
    """With Kafka away, a countersignature is refused at once (503), changes nothing, and is
    accepted when posted again once the ledger takes writes."""
    from tests.test_offers import OFFER, countersign, headers, offer, signatures_of

    broker, proxy = broker_behind_proxy
    create_topic({"bootstrap.servers": broker.bootstrap_servers}, world.topic, 2)
    offer(world)
    gw = serve(kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers))
    headers(gw)  # the token, before the outage
    proxy.cut()
    until(lambda: http.get(f"{gw.url}/readyz").status_code == 503, timeout=5)
    refused = countersign(http, gw)
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "ledger_unavailable"
    assert "not accepted" in refused.json()["detail"]
    assert signatures_of(http, gw)["awaiting"] == ["globex"]
    listed = http.get(f"{gw.url}/v1/contracts", headers=headers(gw)).json()["contracts"]
    assert OFFER not in [c["contract"] for c in listed]

    proxy.restore()
    until(lambda: http.get(f"{gw.url}/readyz").status_code == 200, timeout=30)
    accepted = countersign(http, gw)
    assert (accepted.status_code, accepted.json()["state"]) == (200, "active"), accepted.text


def test_an_acknowledgement_is_accepted_only_once_recorded(
    broker_behind_proxy: tuple[EmbeddedKafka, TcpProxy],  # first: it outlives the gateway
    serve: Callable[..., RunningGateway],
    world: World,
    http: httpx.Client,
) -> None:
    """With Kafka away, a partner's acknowledgement of a receipt is refused at once (503) and
    nothing is recorded; posted again once the ledger takes writes, it is accepted, once."""
    from tests.test_receipts import CONTRACT, acknowledge, auth

    broker, proxy = broker_behind_proxy
    config = {"bootstrap.servers": broker.bootstrap_servers}
    create_topic(config, world.topic, 2)
    produce_exact(config, world.topic, [(f"o-{n}", json.dumps(order(n)).encode()) for n in (0, 1)])
    gw = serve(kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers))
    body = http.get(
        f"{gw.url}/v1/contracts/{CONTRACT}/records",
        params={"from": "earliest", "wait": "5"},
        headers=auth(gw),
    ).json()
    receipt = body["receipt"]
    proxy.cut()
    until(lambda: http.get(f"{gw.url}/readyz").status_code == 503, timeout=5)
    refused = acknowledge(http, gw, receipt)
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "ledger_unavailable"

    proxy.restore()
    until(lambda: http.get(f"{gw.url}/readyz").status_code == 200, timeout=30)
    accepted = acknowledge(http, gw, receipt)
    assert accepted.status_code == 201, accepted.text
    acknowledged = [e for e in gw.gateway.ledger_entries() if e["kind"] == "acknowledgement"]
    assert [e["receipt"] for e in acknowledged] == [receipt]
