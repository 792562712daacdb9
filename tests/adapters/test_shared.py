"""The shared reader's window: whatever the reader, the trimming and a stream do in whatever
order, a stream reads every record exactly once (from the window, or behind it from its own
consumer). A property, because the first version lost records in one interleaving."""

from __future__ import annotations

import asyncio
import math
import threading
from types import SimpleNamespace
from typing import Any

from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.kafka.shared import (
    COALESCE_SECONDS,
    Alarm,
    SharedSource,
    TopicReader,
    _Signal,
    _Window,
)

PARTITIONS = (0, 1)


def record(partition: int, offset: int, size: int = 10) -> Message:
    return Message(topic="t", partition=partition, offset=offset, value=b"x" * size)


def bare_reader(windows: dict[int, _Window], clock: list[float]) -> TopicReader:
    """A ``TopicReader`` of ``windows`` with no consumer (only the window logic is exercised),
    on the clock ``clock[0]``."""
    reader = object.__new__(TopicReader)
    reader.failure, reader.lock, reader.windows = None, threading.Lock(), windows
    reader._monotonic, reader._published_at = lambda: clock[0], -math.inf
    return reader


def reading(
    windows: dict[int, _Window], positions: dict[int, int], reader: TopicReader | None = None
) -> SharedSource:
    """A ``SharedSource`` over ``windows``, of ``reader`` (by default a bare one whose clock
    never moves: records are published when the test says so)."""
    source = object.__new__(SharedSource)
    source._reader = reader or bare_reader(windows, [0.0])
    source._positions = positions
    return source


def offsets(taken: list[Message] | None) -> list[int] | None:
    return None if taken is None else [m.offset() or 0 for m in taken]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("produce"), st.sampled_from(PARTITIONS), st.integers(1, 40)),
        st.tuples(st.just("take"), st.integers(1, 50), st.just(0)),
        st.tuples(st.just("catch_up"), st.integers(1, 50), st.just(0)),
        st.tuples(st.just("publish"), st.just(0), st.just(0)),
        st.tuples(st.just("tick"), st.just(0), st.just(0)),
    ),
    max_size=60,
)


@given(operations, st.integers(200, 3000), st.integers(0, 5))
def test_a_stream_reads_every_record_once_whatever_the_window_does(
    ops: list[tuple[str, int, int]], budget: int, head_start: int
) -> None:
    logs: dict[int, list[Message]] = {p: [] for p in PARTITIONS}
    for partition in PARTITIONS:  # records before the reader started: history
        logs[partition] = [record(partition, o) for o in range(head_start)]
    windows = {p: _Window(head_start, from_beginning=False) for p in PARTITIONS}
    clock = [0.0]
    reader = bare_reader(windows, clock)
    source = reading(windows, dict.fromkeys(PARTITIONS, 0), reader)
    seen: dict[int, list[int]] = {p: [] for p in PARTITIONS}

    def deliver(records: list[Any]) -> None:
        for message in records:
            seen[message.partition()].append(message.offset())

    for op, a, b in ops:
        if op == "produce":
            for _ in range(b):
                message = record(a, len(logs[a]))
                logs[a].append(message)
                windows[a].add(message)
            for window in windows.values():
                window.trim(budget // len(windows))
        elif op == "publish":  # the wake-up after records arrived
            reader._publish()
        elif op == "tick":  # a stream that looks half the coalescing interval later may publish
            clock[0] += COALESCE_SECONDS / 2
        elif op == "take":
            taken = source._from_window(a)
            if taken is not None:
                deliver(taken)
        else:  # behind the window: a consumer of its own reads the log
            if source._from_window(0) is None:
                for partition in PARTITIONS:
                    start = source._positions[partition]
                    chunk = logs[partition][start : start + a]
                    deliver(chunk)
                    source._positions[partition] = start + len(chunk)
    # Then read to the end, from the window or behind it.
    reader._publish()
    while any(source._positions[p] < len(logs[p]) for p in PARTITIONS):
        taken = source._from_window(1000)
        if taken is None:
            for partition in PARTITIONS:
                deliver(logs[partition][source._positions[partition] :])
                source._positions[partition] = len(logs[partition])
        else:
            deliver(taken)
            if not taken:
                break
    for partition in PARTITIONS:
        assert seen[partition] == list(range(len(logs[partition]))), "every record, once"


def test_a_partition_added_to_the_topic_is_assigned_from_its_beginning() -> None:
    """The test broker has no CreatePartitions, so the reader's refresh meets a stub."""
    reader = TopicReader({"bootstrap.servers": "127.0.0.1:9"}, "t", window_bytes=1 << 20)
    real = reader._consumer
    assigned: list[Any] = []
    reader._consumer = SimpleNamespace(  # type: ignore[assignment]
        list_topics=lambda topic, timeout: SimpleNamespace(
            topics={"t": SimpleNamespace(error=None, partitions={0: None, 1: None, 2: None})}
        ),
        incremental_assign=assigned.extend,
    )
    try:
        reader.windows = {p: _Window(5, from_beginning=False) for p in PARTITIONS}
        reader._add_new_partitions()
        assert [(tp.partition, tp.offset) for tp in assigned] == [(2, -2)]
        reader.windows[2].add(record(2, 0))
        reader._publish()
        # A stream opened before the partition existed has no position in it: it starts at 0.
        source = reading(reader.windows, {0: 5, 1: 5})
        taken = source._from_window(10)
        assert taken is not None
        assert [(m.partition(), m.offset()) for m in taken] == [(2, 0)]
        assert source._positions == {0: 5, 1: 5, 2: 1}
    finally:
        real.close()


def test_a_stream_served_late_in_a_round_reads_what_came_meanwhile() -> None:
    """A round of a thousand wake-ups outlasts the coalescing interval: the streams served
    within it of the round's start share its slice; those served later read what came since,
    without waiting for the next round."""
    now = [0.0]  # (steps of half the interval add up exactly from 0)
    reader = TopicReader(
        {"bootstrap.servers": "127.0.0.1:9"}, "t", window_bytes=1 << 20, monotonic=lambda: now[0]
    )
    try:
        reader.windows = {0: _Window(0, from_beginning=False)}
        reader.windows[0].add(record(0, 0))
        reader._publish()  # the wake-up
        early, late = (reading(reader.windows, {0: 0}, reader) for _ in range(2))
        reader.windows[0].add(record(0, 1))  # arrives during the round
        now[0] += COALESCE_SECONDS / 2
        assert offsets(early._from_window(10)) == [0]
        now[0] += COALESCE_SECONDS / 2
        assert offsets(late._from_window(10)) == [0, 1]
        assert offsets(early._from_window(10)) == [1]
        # A look within the interval of the publication by the look before: the same slice.
        reader.windows[0].add(record(0, 2))
        now[0] += COALESCE_SECONDS / 2
        assert offsets(late._from_window(10)) == []
        now[0] += COALESCE_SECONDS / 2
        assert offsets(late._from_window(10)) == [2]
    finally:
        reader._consumer.close()


def test_streams_wake_in_the_order_they_began_to_wait() -> None:
    """Each stream then waits about one round between its turns (in no order: up to two)."""

    async def scenario() -> list[int]:
        signal, woke, alarms = _Signal(lambda: None), [], [Alarm() for _ in range(200)]

        async def stream(n: int) -> None:
            await signal.wait(signal.waiter(), 15.0, alarms[n])
            woke.append(n)

        streams = [asyncio.create_task(stream(n)) for n in range(200)]
        await asyncio.sleep(0)  # every stream is waiting
        signal.fire()
        await asyncio.gather(*streams)
        for alarm in alarms:
            alarm.cancel()
        return woke

    assert asyncio.run(scenario()) == list(range(200))
