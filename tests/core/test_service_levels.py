"""Service levels: ages into buckets that add up across replicas, exact counts against the
target, the partner's lag releasing the provider, and the verdicts a day's figures give."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.core.service_levels import (
    BOUNDS_MS,
    Availability,
    ConsumerObligations,
    DayTally,
    Freshness,
    ServiceLevels,
    Stamps,
    evaluate,
    measure_ages,
    measure_live,
    measure_stamps,
    percentile_ms,
)

NOW = 1_800_000_000_000
ages = st.lists(st.integers(0, 600_000), max_size=200)


def tally_of(values: list[int], **kwargs: object) -> DayTally:
    tally = DayTally()
    measure_ages(
        tally,
        [(0, 10 + n, NOW - age) for n, age in enumerate(values)],
        now_ms=NOW,
        history=kwargs.get("history", {}),  # type: ignore[arg-type]
        target_ms=kwargs.get("target_ms", 5_000),  # type: ignore[arg-type]
        max_lag_ms=kwargs.get("max_lag_ms"),  # type: ignore[arg-type]
    )
    return tally


@given(ages, ages)
def test_tallies_add_up_like_one_and_survive_the_store(first: list[int], second: list[int]) -> None:
    merged = tally_of(first)
    merged.add(tally_of(second))
    assert merged == tally_of(first + second)
    assert DayTally.from_counts({k: str(v) for k, v in merged.counts().items()}) == merged
    assert merged.records == len(first) + len(second)
    assert merged.within == sum(1 for a in first + second if a <= 5_000)


@given(ages, st.floats(0.5, 1.0))
def test_a_percentile_is_the_bound_of_the_bucket_it_falls_in(
    values: list[int], share: float
) -> None:
    tally = tally_of(values)
    found = percentile_ms(tally.buckets, share)
    if not values:
        assert found is None
        return
    k = len(BOUNDS_MS) if found == -1 else BOUNDS_MS.index(found)

    def at_most(bucket: int) -> int:
        return sum(1 for a in values if bisect.bisect_left(BOUNDS_MS, a) <= bucket)

    assert at_most(k) >= share * len(values)
    assert k == 0 or at_most(k - 1) < share * len(values)


def test_records_the_partner_was_away_for_or_fell_behind_on_are_released() -> None:
    # Offsets 10.. on partition 0: the log ended at 12 when the stream opened.
    tally = tally_of([100, 100, 100, 400_000, 200], history={0: 12}, max_lag_ms=300_000)
    assert tally.released == 3  # two from before the stream, one 400 s old
    assert tally.records == 2


def test_a_day_meets_its_levels_or_says_which_it_breached() -> None:
    levels = ServiceLevels(
        freshness=Freshness(percentile=99, seconds=5), availability=Availability(percent=99.5)
    )
    good = tally_of([100] * 990 + [20_000] * 10)
    good.up_ms, good.down_ms = 86_000_000, 400_000
    report = evaluate(levels, "2026-11-23", good)
    assert (report.freshness_met, report.availability_met, report.breached) == (True, True, [])
    assert report.p50_ms == 100
    bad = tally_of([100] * 980 + [20_000] * 20)
    bad.up_ms, bad.down_ms = 80_000_000, 6_400_000
    report = evaluate(levels, "2026-11-23", bad)
    assert report.breached == ["freshness", "availability"]
    assert report.as_json()["freshness"]["within_target"] == 0.98
    # Nothing measured, nothing declared: no verdict either way.
    assert evaluate(levels, "d", DayTally()).breached == []
    assert evaluate(ServiceLevels(), "d", bad).breached == []


def test_a_contract_takes_what_it_does_not_declare_from_its_product() -> None:
    product = ServiceLevels(
        freshness=Freshness(seconds=60), consumer=ConsumerObligations(max_lag_seconds=600)
    )
    own = ServiceLevels(freshness=Freshness(percentile=95, seconds=2))
    assert own.over(product) == ServiceLevels(
        freshness=Freshness(percentile=95, seconds=2),
        consumer=ConsumerObligations(max_lag_seconds=600),
    )
    with pytest.raises(ValidationError):
        ServiceLevels.model_validate({"freshness": {"seconds": 0}})
    with pytest.raises(ValidationError):
        ServiceLevels.model_validate({"latency": {"seconds": 1}})


@dataclass
class Stamped:
    p: int
    o: int
    ts: int
    kind: int = 1

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def timestamp(self) -> tuple[int, int]:
        return (self.kind, self.ts)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2), st.integers(0, 40), st.integers(-5_000, 700_000), st.booleans()
        ),
        max_size=60,
    ),
    st.dictionaries(st.integers(0, 2), st.integers(0, 40)),
    st.none() | st.integers(1, 60_000),
    st.none() | st.integers(1, 400_000),
)
def test_a_batch_measured_by_bisection_is_measured_as_record_by_record(
    spec: list[tuple[int, int, int, bool]],
    history: dict[int, int],
    target: int | None,
    max_lag: int | None,
) -> None:
    records = [Stamped(p, o, NOW - age, int(stamped)) for p, o, age, stamped in spec]
    marks = [(n, n) for n in range(len(records))]
    first: dict[int, int] = {}
    for r in records:  # the first read of each partition: its lowest offset
        first[r.p] = min(first.get(r.p, r.o), r.o)
    after: dict[int, int] = {}
    for r in records:  # the positions after the batch: its highest offset + 1
        after[r.p] = max(after.get(r.p, r.o + 1), r.o + 1)
    stamps = Stamps.of(records, marks, first, after)
    by_record, by_batch = DayTally(), DayTally()
    sent = [(r.p, r.o, r.ts) for r in records if r.kind]
    measure_ages(by_record, sent, now_ms=NOW, history=history, target_ms=target, max_lag_ms=max_lag)
    measure_stamps(
        by_batch, stamps, now_ms=NOW, history=history, target_ms=target, max_lag_ms=max_lag
    )
    assert by_batch == by_record


@given(
    st.lists(st.tuples(st.integers(-5_000, 700_000), st.booleans()), max_size=40),
    st.integers(1, 50),
    st.none() | st.integers(1, 60_000),
    st.none() | st.integers(1, 400_000),
)
def test_a_batch_written_to_k_streams_at_once_counts_as_k_writes(
    spec: list[tuple[int, bool]], k: int, target: int | None, max_lag: int | None
) -> None:
    """The figures a thousand streams at the same position add are counted once, times k."""
    records = [Stamped(0, n, NOW - age, int(stamped)) for n, (age, stamped) in enumerate(spec)]
    stamps = Stamps.of(records, [(n, n) for n in range(len(records))], {0: 0}, {0: len(spec)})
    once, one_by_one = DayTally(), DayTally()
    measure_live(once, stamps, now_ms=NOW, target_ms=target, max_lag_ms=max_lag, times=k)
    for _ in range(k):
        measure_stamps(one_by_one, stamps, now_ms=NOW, history={}, target_ms=target,
                       max_lag_ms=max_lag)  # fmt: skip
    assert once == one_by_one
