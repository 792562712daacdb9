"""Consumption figures per contract: deltas of deliveries, hours, lag (in-memory store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.stores.consumption import MemoryConsumptionStore
from gateway.core.ledger import DeliveryEntry
from gateway.errors import StoreUnavailable
from gateway.services.consumption import ConsumptionTracker, lag_of

T0 = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)


def entry(
    delivery: str, records: int, size: int, end: dict[int, int], reason: str
) -> DeliveryEntry:
    return DeliveryEntry(
        kind="stream", contract="c1", versions=("v",), org="globex", client="globex",
        format="sse", start={}, end=end, records=records, bytes=size, bytes_by_day={},
        started=T0, ended=T0, end_reason=reason, delivery=delivery,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_progress_and_end_reports_count_each_record_once_per_hour() -> None:
    clock = Clock()
    tracker = ConsumptionTracker(MemoryConsumptionStore(clock=lambda: clock().timestamp()), clock)

    async def scenario() -> Any:
        tracker.note(entry("d1", 10, 100, {0: 10}, "in_progress"))
        tracker.note(entry("d1", 25, 250, {0: 20, 1: 5}, "in_progress"))
        await tracker.flush()
        clock.now = T0 + timedelta(hours=1)
        tracker.note(entry("d1", 30, 300, {0: 25, 1: 5}, "disconnected"))
        tracker.note(entry("d2", 4, 40, {1: 9}, "disconnected"))  # a pull, reported once
        await tracker.flush()
        return await tracker.read("c1", hours=3)

    seen = anyio.run(scenario)
    assert seen.positions == {0: 25, 1: 9}
    assert seen.last_delivery == T0 + timedelta(hours=1)
    assert [(h.records, h.bytes) for h in seen.hours] == [(0, 0), (25, 250), (9, 90)]
    assert seen.today(clock.now) == (34, 340)


class FailingOnce(MemoryConsumptionStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    async def add(self, *args: Any, **kwargs: Any) -> None:
        if self.fail:
            self.fail = False
            raise StoreUnavailable("down")
        await super().add(*args, **kwargs)


def test_figures_that_could_not_be_stored_are_kept_for_the_next_flush() -> None:
    clock = Clock()
    tracker = ConsumptionTracker(FailingOnce(), clock)

    async def scenario() -> Any:
        tracker.note(entry("d1", 10, 100, {0: 10}, "in_progress"))
        await tracker.flush()  # fails
        tracker.note(entry("d1", 12, 120, {0: 12}, "in_progress"))
        await tracker.flush()
        return await tracker.read("c1", hours=1)

    seen = anyio.run(scenario)
    assert seen.positions == {0: 12}
    assert (seen.hours[-1].records, seen.hours[-1].bytes) == (12, 120)


@given(
    st.dictionaries(
        st.integers(0, 3), st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=4
    ),
    st.dictionaries(st.integers(0, 5), st.integers(-5, 120), max_size=6),
)
def test_lag_is_what_lies_between_each_position_and_its_end(
    bounds: dict[int, tuple[int, int]], positions: dict[int, int]
) -> None:
    ends = {p: (min(a, b), max(a, b)) for p, (a, b) in bounds.items()}
    lag = lag_of(positions, ends)
    assert 0 <= lag <= sum(end - first for first, end in ends.values())
    at_end = {p: end for p, (_, end) in ends.items()}
    assert lag_of(at_end, ends) == 0
    assert lag_of({}, ends) == sum(end - first for first, end in ends.values())
