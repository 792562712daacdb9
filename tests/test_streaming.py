"""End to end over real sockets: broker → gateway (uvicorn) → partner, for SSE, NDJSON, pull."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.core.jose import compact_payload
from tests.conftest import SOAK, RunningGateway, World
from tests.sse import Event, open_raw_stream, parse_events
from tests.test_shared_reading import until

CONTRACT = "acme-globex-orders"


def projected(order: dict[str, Any]) -> dict[str, Any]:
    """What the contract in ``conftest`` lets through."""
    return {
        "order_id": order["order_id"],
        "amount": order["amount"],
        "customer": {"country": order["customer"]["country"]},
    }


def sse_read(
    http: httpx.Client,
    gw: RunningGateway,
    token: str,
    *,
    cursor: str | None = None,
    params: dict[str, str] | None = None,
    max_bytes: int | None = None,
    until_records: int | None = None,
    until: Callable[[list[Event]], bool] | None = None,
) -> list[Event]:
    """Read one SSE connection, cutting it after ``max_bytes`` (mid-event, possibly)."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    if cursor:
        headers["Last-Event-ID"] = cursor
    events: list[Event] = []
    pending = b""
    total = records = 0
    url = f"{gw.url}/v1/contracts/{CONTRACT}/stream"
    with http.stream("GET", url, headers=headers, params=params) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for chunk in response.iter_raw():
            if max_bytes is not None:
                chunk = chunk[: max_bytes - total]
            total += len(chunk)
            pending += chunk
            cut = pending.rfind(b"\n\n") + 2
            if cut >= 2:  # parse only what is complete, once (a fast client)
                fresh = parse_events(pending[:cut])
                pending = pending[cut:]
                events.extend(fresh)
                records += sum(e.event == "record" for e in fresh)
            if max_bytes is not None and total >= max_bytes:
                break
            if until_records is not None and records >= until_records:
                break
            if until is not None and until(events):
                break
    return events


def test_sse_delivers_exactly_the_produced_records_projected(
    serve: Callable[..., RunningGateway], world: World, produce_orders: Any, http: httpx.Client
) -> None:
    orders = produce_orders(world.topic, 60)
    gw = serve()
    events = sse_read(http, gw, gw.token("globex"), until_records=60)
    records = [e.json() for e in events if e.event == "record"]
    assert sorted(r["value"]["order_id"] for r in records) == sorted(o["order_id"] for o in orders)
    by_id = {o["order_id"]: o for o in orders}
    for record in records:
        assert record["value"] == projected(by_id[record["key"]])
        assert set(record) == {"partition", "offset", "timestamp", "key", "value"}
        assert record["timestamp"].endswith("Z")
    # Per-partition order is preserved.
    for partition in {r["partition"] for r in records}:
        offsets = [r["offset"] for r in records if r["partition"] == partition]
        assert offsets == sorted(offsets)
    # Nothing outside the contract's fields ever appears on the wire.
    raw = "".join(e.data for e in events)
    assert "email" not in raw
    assert "Name " not in raw


@pytest.mark.soak
def test_resume_after_100_random_disconnects_over_two_partitions_is_exact(
    serve: Callable[..., RunningGateway], world: World, produce_orders: Any, http: httpx.Client
) -> None:
    cycles = 100 * SOAK
    orders = produce_orders(world.topic, 15 * cycles)
    gw = serve()
    token = gw.token("globex")
    rng = random.Random(20261121)
    received: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(cycles):
        # Cut anywhere: inside an event's id, data, or between events.
        events = sse_read(http, gw, token, cursor=cursor, max_bytes=rng.randint(1, 2500))
        for event in events:
            if event.event == "record":
                received.append(event.json())
                cursor = event.id
    remaining = len(orders) - len(received)
    assert 0 < remaining < len(orders), "the cuts should leave work for the last connection"
    for event in sse_read(http, gw, token, cursor=cursor, until_records=remaining):
        if event.event == "record":
            received.append(event.json())
    positions = [(r["partition"], r["offset"]) for r in received]
    assert len(positions) == len(set(positions)), "a record was delivered twice"
    assert sorted(r["key"] for r in received) == sorted(o["order_id"] for o in orders)
    assert {p for p, _ in positions} == {0, 1}


def test_ndjson_stream_carries_cursors_and_resumes(
    serve: Callable[..., RunningGateway], world: World, produce_orders: Any, http: httpx.Client
) -> None:
    orders = produce_orders(world.topic, 30)
    gw = serve()
    headers = {"Authorization": f"Bearer {gw.token('globex')}", "Accept": "application/x-ndjson"}
    url = f"{gw.url}/v1/contracts/{CONTRACT}/stream"

    def read(params: dict[str, str], count: int) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        with http.stream("GET", url, headers=headers, params=params) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/x-ndjson")
            for line in response.iter_lines():
                lines.append(json.loads(line))
                if len(lines) == count:
                    break
        return lines

    first = read({}, 10)
    assert all(
        set(r) == {"partition", "offset", "timestamp", "key", "value", "cursor"} for r in first
    )
    rest = read({"cursor": first[-1]["cursor"]}, 20)
    keys = [r["key"] for r in first + rest]
    assert sorted(keys) == sorted(o["order_id"] for o in orders)
    assert len(set(keys)) == 30


def test_pull_pages_through_everything_then_reports_no_news(
    serve: Callable[..., RunningGateway], world: World, produce_orders: Any, http: httpx.Client
) -> None:
    orders = produce_orders(world.topic, 120)
    gw = serve()
    headers = {"Authorization": f"Bearer {gw.token('globex')}"}
    url = f"{gw.url}/v1/contracts/{CONTRACT}/records"
    received: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "50", "wait": "2"}
    for _ in range(20):
        body = http.get(url, headers=headers, params=params).json()
        received.extend(body["records"])
        params = {"limit": "50", "wait": "2", "cursor": body["cursor"]}
        if len(received) >= len(orders):
            break
    assert sorted(r["key"] for r in received) == sorted(o["order_id"] for o in orders)
    assert len({(r["partition"], r["offset"]) for r in received}) == len(orders)
    started = time.monotonic()
    empty = http.get(url, headers=headers, params={**params, "wait": "1"}).json()
    assert empty["records"] == []
    assert empty["cursor"] == params["cursor"]
    assert time.monotonic() - started >= 0.9, "long-poll waits while nothing is new"


def test_from_latest_only_sees_new_records(
    serve: Callable[..., RunningGateway], world: World, produce_orders: Any, http: httpx.Client
) -> None:
    produce_orders(world.topic, 5)
    gw = serve()
    headers = {"Authorization": f"Bearer {gw.token('globex')}", "Accept": "text/event-stream"}
    url = f"{gw.url}/v1/contracts/{CONTRACT}/stream"
    buffer = b""
    with http.stream("GET", url, headers=headers, params={"from": "latest"}) as response:
        assert response.status_code == 200
        threading.Thread(target=produce_orders, args=(world.topic, 3, 100)).start()
        for chunk in response.iter_raw():
            buffer += chunk
            if len([e for e in parse_events(buffer) if e.event == "record"]) >= 3:
                break
    keys = sorted(e.json()["key"] for e in parse_events(buffer) if e.event == "record")
    assert keys == ["o-100", "o-101", "o-102"]


def test_from_time_starts_at_that_moment(
    serve: Callable[..., RunningGateway], world: World, produce_orders: Any, http: httpx.Client
) -> None:
    produce_orders(world.topic, 4)
    time.sleep(0.05)
    moment = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.05)
    produce_orders(world.topic, 4, start=50)
    gw = serve()
    events = sse_read(http, gw, gw.token("globex"), params={"from": moment}, until_records=4)
    keys = sorted(e.json()["key"] for e in events if e.event == "record")
    assert keys == ["o-50", "o-51", "o-52", "o-53"]


def test_stream_ends_when_the_token_expires(
    serve: Callable[..., RunningGateway], http: httpx.Client
) -> None:
    gw = serve(token_lifetime_seconds=2, heartbeat_seconds=0.5)
    started = time.monotonic()
    events = sse_read(
        http, gw, gw.token("globex"), until=lambda ev: any(e.event == "end" for e in ev)
    )
    assert time.monotonic() - started < 5
    end = [e for e in events if e.event == "end"]
    assert end[0].json() == {"reason": "token_expired"}
    assert any(e.comment for e in events), "idle streams carry heartbeat comments"


def test_a_frozen_client_is_dropped_without_stalling_others(
    serve: Callable[..., RunningGateway],
    world: World,
    kafka_config: dict[str, str],
    http: httpx.Client,
) -> None:
    from gateway.adapters.kafka.producer import produce

    big = "x" * 10_000
    produce(
        kafka_config,
        world.topic,
        [(f"o-{n}", json.dumps({"order_id": big, "amount": n}).encode()) for n in range(3000)],
        producer_config={"linger.ms": 100, "batch.size": 2_000_000, "message.max.bytes": 4_000_000},
    )
    gw = serve(send_timeout_seconds=1)
    token = gw.token("globex")
    frozen = open_raw_stream(int(gw.url.rsplit(":", 1)[1]), token)
    time.sleep(3)  # the frozen client reads nothing while the gateway tries to write ~30 MB
    healthy = sse_read(http, gw, token, until_records=3000)
    assert len([e for e in healthy if e.event == "record"]) == 3000
    frozen.settimeout(10)
    received = 0
    while chunk := frozen.recv(1 << 20):  # drains what was buffered, then the server's close
        received += len(chunk)
    frozen.close()
    assert received < 3000 * 10_000, "the frozen stream was cut, not completed"
    deadline = time.monotonic() + 15
    while True:  # the ledger says why each delivery ended
        reasons = sorted(
            e["end_reason"] for e in gw.gateway.ledger_entries() if e["kind"] == "stream"
        )
        if len(reasons) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "send_timeout" in reasons, reasons


def test_from_a_time_to_come_starts_at_the_end_never_in_history(
    serve: Callable[..., RunningGateway], world: World, produce_orders: Any, http: httpx.Client
) -> None:
    """The test broker answers offset 0 for a future time: the partner got the whole history."""
    produce_orders(world.topic, 5)
    gw = serve()
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    headers = {"Authorization": f"Bearer {gw.token('globex')}"}
    body = http.get(
        f"{gw.url}/v1/contracts/{CONTRACT}/records",
        headers=headers,
        params={"from": later, "wait": "1"},
    ).json()
    assert body["records"] == []


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"cursor": ""}, "invalid_cursor"),
        ({"from": "1969-12-31T23:59:59.999Z"}, "invalid_parameter"),
        ({"from": "1960-01-01T00:00:00Z"}, "invalid_parameter"),
        ({"from": "yesterday"}, "invalid_parameter"),
    ],
)
def test_bad_positions_are_a_clear_400(
    serve: Callable[..., RunningGateway],
    http: httpx.Client,
    params: dict[str, str],
    code: str,
) -> None:
    gw = serve()
    response = http.get(
        f"{gw.url}/v1/contracts/{CONTRACT}/records",
        headers={"Authorization": f"Bearer {gw.token('globex')}"},
        params=params,
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


def stream_ends(gw: RunningGateway) -> list[str]:
    return [e["end_reason"] for e in gw.gateway.ledger_entries() if e["kind"] == "stream"]


def test_a_shutdown_ends_open_streams_with_end_shutdown_and_records_them(
    serve: Callable[..., RunningGateway], world: World, http: httpx.Client, produce_orders: Any
) -> None:
    """SIGTERM during a rollout: the partner hears ``shutdown`` (and resumes elsewhere with its
    cursor) instead of a cut connection, and the delivery is recorded with that reason."""
    produce_orders(world.topic, 3)
    gw = serve()
    token = gw.token("globex")
    read: list[list[Event]] = []
    reader = threading.Thread(target=lambda: read.append(sse_read(http, gw, token)))
    reader.start()
    sent = {"contract": CONTRACT}
    registry = gw.gateway.metrics.registry
    until(
        lambda: registry.get_sample_value("gateway_delivered_records_total", sent) == 3,
        15,
        "the records are sent",
    )
    gw.stop()
    reader.join(timeout=10)
    assert read, "the stream did not end"
    events = read[0]
    assert [e.event for e in events if e.event == "record"] == ["record"] * 3
    assert events[-1].event == "end"
    assert events[-1].json()["reason"] == "shutdown"
    # What was sent since the last receipt has one, just before the end.
    assert events[-2].event == "receipt"
    receipt = json.loads(compact_payload(events[-2].json()["receipt"]) or b"{}")
    assert (receipt["records"], receipt["cursor"]) == (3, events[-3].id)
    assert stream_ends(gw) == ["shutdown"]


def test_a_client_that_leaves_frees_its_stream_and_is_recorded_as_disconnected(
    serve: Callable[..., RunningGateway],
) -> None:
    """An idle stream notices at once that its client left (no write needed): its slot is
    free for the partner's reconnect, and the delivery is recorded."""
    gw = serve(heartbeat_seconds=60)
    token = gw.token("globex")
    client = open_raw_stream(int(gw.url.rsplit(":", 1)[1]), token, "?from=latest")
    client.settimeout(10)
    assert client.recv(65536).startswith(b"HTTP/1.1 200")
    until(lambda: gw.gateway.streams.open_streams == 1, 15, "the stream is open")
    client.close()
    until(lambda: gw.gateway.streams.open_streams == 0, 15, "the stream closed")
    until(lambda: stream_ends(gw) == ["disconnected"], 15, "the delivery is recorded")
