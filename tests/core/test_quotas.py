"""Quota arithmetic: GCRA throttling and admission, limits within ceilings, the UTC day."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.quotas import (
    PolicyItem,
    Quotas,
    Rate,
    UtcDay,
    admit,
    day_window,
    ratelimit_fields,
    remaining,
    seconds_until,
    throttle,
)

rates = st.floats(min_value=0.5, max_value=50_000)
charges = st.lists(st.integers(min_value=1, max_value=500), min_size=1, max_size=60)
gaps = st.lists(st.floats(min_value=0, max_value=0.5), min_size=60, max_size=60)


@given(rates, charges, gaps)
def test_a_sender_that_waits_as_told_never_exceeds_the_rate(
    per_second: float, sent: list[int], extra_gaps: list[float]
) -> None:
    rate = Rate(per_second)
    now, tat = 0.0, 0.0
    history: list[tuple[float, int]] = []
    for units, gap in zip(sent, extra_gaps, strict=False):
        history.append((now, units))
        tat, wait = throttle(tat, now, units, rate)
        now += wait + gap
    # Over every window starting at a send, what went out is within the rate plus one burst
    # and the last charge.
    for i, (start, _) in enumerate(history):
        for j in range(i, len(history)):
            end = history[j][0]
            units = sum(u for _, u in history[i : j + 1])
            bound = per_second * (end - start + rate.burst) + history[j][1]
            assert units <= bound * (1 + 1e-9) + 1e-6


@given(rates, charges)
def test_a_sender_that_waits_as_told_reaches_the_rate(per_second: float, sent: list[int]) -> None:
    """No throttling beyond the rate: a backlog drains at the rate, not slower."""
    rate = Rate(per_second)
    now, tat = 0.0, 0.0
    for units in sent:
        tat, wait = throttle(tat, now, units, rate)
        now += wait
    # Everything sent but the burst was paid for in time: elapsed == units / rate - burst.
    expected = max(0.0, sum(sent) / per_second - rate.burst)
    assert abs(now - expected) <= 1e-6 * max(1.0, expected)


@given(
    st.floats(min_value=0.01, max_value=100),
    st.integers(min_value=1, max_value=20),
    st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=80),
)
def test_admission_lets_through_a_burst_then_the_rate(
    per_second: float, burst_units: int, gaps_seconds: list[float]
) -> None:
    rate = Rate(per_second, burst=burst_units / per_second)
    now, tat = 0.0, 0.0
    admitted: list[float] = []
    for gap in gaps_seconds:
        now += gap
        tat, retry_after = admit(tat, now, 1, rate)
        if retry_after == 0:
            admitted.append(now)
        else:
            # Refused now, admitted exactly after retry_after.
            assert admit(tat, now + retry_after + 1e-9, 1, rate)[1] == 0
    for i, start in enumerate(admitted):
        inside = [t for t in admitted[i:] if t - start <= 10]
        assert len(inside) <= burst_units + per_second * 10 + 1e-6


def test_a_fresh_bucket_admits_the_whole_burst_and_no_more() -> None:
    rate = Rate(1.0, burst=3.0)
    tat = 0.0
    results = []
    for _ in range(4):
        tat, retry_after = admit(tat, 100.0, 1, rate)
        results.append(retry_after)
    assert results[:3] == [0.0, 0.0, 0.0]
    assert results[3] == 1.0


def test_remaining_counts_what_may_go_now() -> None:
    rate = Rate(100)  # burst 0.1 s = 10 units
    assert remaining(0.0, rate) == (10, 0)
    assert remaining(0.05, rate) == (5, 1)
    assert remaining(2.5, rate) == (0, 3)


optional_limits = st.one_of(st.none(), st.integers(min_value=1, max_value=10**9))


@given(optional_limits, optional_limits, optional_limits)
def test_quotas_in_force_never_exceed_the_ceiling(
    own: int | None, default: int | None, ceiling: int | None
) -> None:
    quotas = Quotas(bytes_per_day=own).within(
        Quotas(bytes_per_day=default), Quotas(bytes_per_day=ceiling)
    )
    value = quotas.bytes_per_day
    chosen = own if own is not None else default
    if ceiling is None:
        assert value == chosen
    else:
        assert value is not None
        assert value <= ceiling
        assert value == (ceiling if chosen is None else min(chosen, ceiling))


def test_the_day_is_the_utc_calendar_day() -> None:
    from datetime import timedelta, timezone

    late_in_amsterdam = datetime(2026, 11, 22, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    day, ends = day_window(late_in_amsterdam)
    assert day == "2026-11-21"
    assert ends == datetime(2026, 11, 22, tzinfo=UTC)
    assert seconds_until(ends, datetime(2026, 11, 21, 23, 59, 59, 500_000, tzinfo=UTC)) == 1


def test_ratelimit_fields_follow_the_draft_syntax() -> None:
    fields = ratelimit_fields(
        [
            (PolicyItem("daily", 5000, 86_400, "content-bytes"), 1200, 3600),
            (PolicyItem("records", 100, 1, vendor_unit="record"), 7, 0),
            (PolicyItem("streams", 2, None, "concurrency"), -1, 0),
        ]
    )
    assert fields["RateLimit-Policy"] == (
        '"daily";q=5000;qu="content-bytes";w=86400, '
        '"records";q=100;w=1;exg-unit="record", '
        '"streams";q=2;qu="concurrency"'
    )
    assert fields["RateLimit"] == '"daily";r=1200;t=3600, "records";r=7;t=0, "streams";r=0;t=0'


@given(
    st.lists(
        st.datetimes(datetime(1970, 1, 1), datetime(9000, 1, 1), timezones=st.just(UTC)),
        min_size=1,
        max_size=30,
    )
)
def test_the_remembered_day_is_the_day_of_every_moment_in_any_order(
    moments: list[datetime],
) -> None:
    day = UtcDay()
    for moment in moments:
        assert day.of(moment) == day_window(moment)
