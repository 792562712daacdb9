"""Shared reading over real sockets: streams at the tail read one consumer's window, streams in
history borrow a catch-up consumer and give it back, nobody is held back or loses a record.
(Partitions added while streams are open: ``adapters/test_shared.py``, as the test broker has no
CreatePartitions.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import psutil

from tests.conftest import RunningGateway, World
from tests.sse import LiveStream
from tests.test_quotas import backlog

CONTRACT = "acme-globex-orders"


def keys(stream: LiveStream) -> list[str]:
    return [r["key"] for r in stream.records()]


def per_partition(records: list[dict[str, Any]]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for record in records:
        found.setdefault(record["partition"], []).append(record["offset"])
    return found


def broker_connections(port: int) -> int:
    """This process's TCP connections to the broker."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def test_streams_at_the_tail_share_one_consumer_and_each_gets_every_record(
    serve: Callable[..., RunningGateway],
    world: World,
    produce_orders: Any,
    http: httpx.Client,
    kafka_bootstrap: str,
) -> None:
    gw = serve(quotas={"defaults": {"concurrent_streams": 20}})
    token = gw.token("globex")
    port = int(kafka_bootstrap.rsplit(":", 1)[1])
    connections_before = broker_connections(port)
    streams = [LiveStream(http, gw.url, token, params={"from": "latest"}) for _ in range(20)]
    try:
        orders = produce_orders(world.topic, 30)
        for stream in streams:
            stream.wait_records(30, timeout=15)
        expected = sorted(o["order_id"] for o in orders)
        for stream in streams:
            assert sorted(keys(stream)) == expected, "every record, once"
            for offsets in per_partition(stream.records()).values():
                assert offsets == sorted(offsets), "in order per partition"
        readers = gw.gateway.streams.source_stats()
        assert readers == {"topic_readers": 1, "partitions_read": 2, "catch_up_readers": 0}
        # A consumer per stream was 2 broker connections each (40 here): now the topic's
        # reader and the metadata consumer, whatever the number of streams.
        assert broker_connections(port) - connections_before <= 4
    finally:
        for stream in streams:
            stream.close()


def test_a_stream_in_history_catches_up_on_a_borrowed_consumer_and_gives_it_back(
    serve: Callable[..., RunningGateway],
    world: World,
    kafka_config: dict[str, str],
    produce_orders: Any,
    http: httpx.Client,
) -> None:
    backlog(kafka_config, world.topic, 3000)
    gw = serve(reading={"catch_up_readers": 1})
    token = gw.token("globex")
    tail = LiveStream(http, gw.url, token, params={"from": "latest"})
    # Two streams from the beginning, one catch-up consumer: the second waits its turn.
    history = [LiveStream(http, gw.url, token) for _ in range(2)]
    try:
        peak = 0
        deadline = time.monotonic() + 30
        while any(len(s.records()) < 3000 for s in history):
            assert time.monotonic() < deadline, "the history was not read in time"
            peak = max(peak, gw.gateway.streams.source_stats()["catch_up_readers"])
            time.sleep(0.02)
        assert peak == 1, "never more catch-up consumers than the pool has"
        produce_orders(world.topic, 10, start=3000)
        for stream in [*history, tail]:
            stream.wait_records(3010 if stream in history else 10, timeout=15)
        until(
            lambda: gw.gateway.streams.source_stats()["catch_up_readers"] == 0,
            timeout=5,
            what="the catch-up consumers given back",
        )
        for stream in history:
            assert sorted(keys(stream), key=lambda k: int(k[2:])) == [
                f"o-{n}" for n in range(3010)
            ], "exactly every record, from history into the live tail"
        assert sorted(keys(tail)) == sorted(f"o-{n}" for n in range(3000, 3010))
    finally:
        for stream in [*history, tail]:
            stream.close()


def test_a_stream_that_falls_behind_the_window_catches_up_without_a_gap(
    serve: Callable[..., RunningGateway],
    world: World,
    kafka_config: dict[str, str],
    http: httpx.Client,
) -> None:
    """A pull that waits while 5,000 records (≈ 2 MiB) pass through a 1 MiB window."""
    gw = serve(reading={"window_bytes": 1024 * 1024})
    auth = {"Authorization": f"Bearer {gw.token('globex')}"}
    url = f"{gw.url}/v1/contracts/{CONTRACT}/records"
    first = http.get(url, headers=auth, params={"from": "latest", "wait": "0"}).json()
    backlog(kafka_config, world.topic, 5000)
    got: list[dict[str, Any]] = []
    cursor = first["cursor"]
    deadline = time.monotonic() + 30
    while len(got) < 5000:
        assert time.monotonic() < deadline, f"only {len(got)} of 5000"
        page = http.get(url, headers=auth, params={"cursor": cursor, "limit": "1000"}).json()
        got.extend(page["records"])
        cursor = page["cursor"]
    assert sorted(r["key"] for r in got) == sorted(f"o-{n}" for n in range(5000))
    for offsets in per_partition(got).values():
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), "no gap"


def test_above_the_process_s_stream_limit_the_answer_is_503_overloaded(
    serve: Callable[..., RunningGateway], http: httpx.Client
) -> None:
    gw = serve(reading={"max_streams": 2})
    token = gw.token("globex")
    streams = [LiveStream(http, gw.url, token, params={"from": "latest"}) for _ in range(2)]
    try:
        refused = http.get(
            f"{gw.url}/v1/contracts/{CONTRACT}/records",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "overloaded"
        assert refused.headers["retry-after"] == "5"
    finally:
        for stream in streams:
            stream.close()
    until(lambda: gw.gateway.streams.open_streams == 0, timeout=5, what="the streams closed")
    answered = http.get(
        f"{gw.url}/v1/contracts/{CONTRACT}/records", headers={"Authorization": f"Bearer {token}"}
    )
    assert answered.status_code == 200, answered.text
