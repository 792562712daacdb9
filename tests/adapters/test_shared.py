"""The shared reader's window: whatever the reader, the trimming and a stream do in whatever
order, a stream reads every record exactly once (from the window, or behind it from its own
consumer). A property, because the first version lost records in one interleaving."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.kafka.shared import SharedSource, TopicReader, _Window

PARTITIONS = (0, 1)


def record(partition: int, offset: int, size: int = 10) -> Message:
    return Message(topic="t", partition=partition, offset=offset, value=b"x" * size)


def reading(windows: dict[int, _Window], positions: dict[int, int]) -> SharedSource:
    """A ``SharedSource`` over ``windows`` (no Kafka: only the window logic is exercised)."""
    source = object.__new__(SharedSource)
    reader = SimpleNamespace(failure=None, lock=threading.Lock(), windows=windows)
    source._reader = reader  # type: ignore[assignment]
    source._positions = positions
    return source


operations = st.lists(
    st.one_of(
        st.tuples(st.just("produce"), st.sampled_from(PARTITIONS), st.integers(1, 40)),
        st.tuples(st.just("take"), st.integers(1, 50), st.just(0)),
        st.tuples(st.just("catch_up"), st.integers(1, 50), st.just(0)),
        st.tuples(st.just("publish"), st.just(0), st.just(0)),
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
    source = reading(windows, dict.fromkeys(PARTITIONS, 0))
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
            for window in windows.values():
                window.published = window.next
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
    for window in windows.values():
        window.published = window.next
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
