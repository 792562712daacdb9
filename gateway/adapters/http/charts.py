"""Charts of the pages, server-rendered SVG without JavaScript.

- Use per hour (the team's consumers page): records as bars, lag as a line.
- Service levels (the team's consumers page, legal's contract page): a line of objectives, a
  table per UTC day, and the share of records within the freshness target per day against
  the objective's line.
- Deliveries per day (legal's delivery page): records as bars, bytes as a line.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.adapters.http.schemas import ConsumerPublic
from gateway.core.service_levels import DayReport, ServiceLevels

WIDTH = 480
HEIGHT = 100


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    label: str
    colour: str = "#1a7f37"


def _line(values: list[tuple[int, int]], slot: float) -> tuple[list[tuple[float, float]], str]:
    """Points of ``(slot index, value)`` scaled to the largest value: a dot on each, and the
    polyline through them (one point makes no line)."""
    top = max((v for _, v in values), default=0) or 1
    dots = [(round(i * slot + slot / 2, 1), round(HEIGHT - HEIGHT * v / top, 1)) for i, v in values]
    return dots, " ".join(f"{x},{y}" for x, y in dots)


@dataclass(frozen=True, slots=True)
class Chart:
    partner: str
    contract: str
    bars: list[Bar]
    #: The lag samples: a line through them, and a dot on each (one sample makes no line).
    lag_dots: list[tuple[float, float]]
    lag_points: str
    max_records: int
    max_lag: int
    width: int = WIDTH
    height: int = HEIGHT


def chart_of(consumer: ConsumerPublic) -> Chart:
    """Records per hour as bars and lag as a line, each scaled to its own maximum."""
    hours = consumer.hours
    slot = WIDTH / max(1, len(hours))
    top = max((h.records for h in hours), default=0) or 1
    bars = []
    for i, h in enumerate(hours):
        height = HEIGHT * h.records / top
        label = f"{h.hour:%H}:00 UTC: {h.records:,} records, {h.bytes:,} bytes"
        bars.append(Bar(i * slot + 1, HEIGHT - height, max(1.0, slot - 2), height, label))
    lags = [(i, h.lag) for i, h in enumerate(hours) if h.lag is not None]
    dots, points = _line(lags, slot)
    most = max((h.records for h in hours), default=0)
    max_lag = max((lag for _, lag in lags), default=0)
    return Chart(consumer.partner, consumer.contract, bars, dots, points, most, max_lag)


@dataclass(frozen=True, slots=True)
class LevelsView:
    objectives: list[str]
    days: list[DayReport]
    bars: list[Bar]
    #: Where the freshness objective's line is drawn (``None``: no objective).
    target_y: float | None
    breached: list[str]
    width: int = WIDTH
    height: int = HEIGHT


def objectives_of(levels: ServiceLevels) -> list[str]:
    said = []
    if levels.freshness:
        said.append(
            f"freshness: {levels.freshness.percentile:g}% of records within "
            f"{levels.freshness.seconds:g} s of their Kafka timestamp"
        )
    if levels.availability:
        said.append(f"availability: {levels.availability.percent:g}% of the time in force")
    if levels.consumer:
        said.append(
            f"the partner keeps within {levels.consumer.max_lag_seconds:g} s of the log "
            "(records older are not counted against freshness)"
        )
    return said


def levels_view(levels: ServiceLevels, days: list[DayReport]) -> LevelsView:
    slot = WIDTH / max(1, len(days))
    bars = []
    for i, day in enumerate(days):
        share = day.within_share or 0.0
        height = HEIGHT * share
        met = day.freshness_met
        colour = "#8c959f" if met is None else "#1a7f37" if met else "#b42318"
        label = (
            f"{day.day}: {share:.2%} of {day.records:,} records within the target"
            if day.within_share is not None
            else f"{day.day}: {day.records:,} records, no freshness objective"
        )
        bars.append(Bar(i * slot + 2, HEIGHT - height, max(1.0, slot - 4), height, label, colour))
    target = (
        round(HEIGHT - HEIGHT * levels.freshness.percentile / 100, 1) if levels.freshness else None
    )
    return LevelsView(objectives_of(levels), days, bars, target, days[-1].breached if days else [])


@dataclass(frozen=True, slots=True)
class UsageChart:
    bars: list[Bar]
    #: Bytes per day: a line through them, and a dot on each (one day makes no line).
    dots: list[tuple[float, float]]
    points: str
    max_records: int
    max_bytes: int
    first: str
    last: str
    width: int = WIDTH
    height: int = HEIGHT


def usage_chart(days: dict[str, tuple[int, int]], last: int = 31) -> UsageChart:
    """The last ``last`` days that saw deliveries: records per day as bars, bytes as a line,
    each scaled to its own maximum."""
    shown = list(days.items())[-last:]
    slot = WIDTH / max(1, len(shown))
    most_records = max((r for _, (r, _) in shown), default=0)
    most_bytes = max((b for _, (_, b) in shown), default=0)
    bars = []
    for i, (day, (records, size)) in enumerate(shown):
        height = HEIGHT * records / (most_records or 1)
        label = f"{day}: {records:,} records, {size:,} bytes"
        bars.append(Bar(i * slot + 2, HEIGHT - height, max(1.0, slot - 4), height, label))
    dots, points = _line([(i, size) for i, (_, (_, size)) in enumerate(shown)], slot)
    return UsageChart(
        bars,
        dots,
        points,
        most_records,
        most_bytes,
        shown[0][0] if shown else "",
        shown[-1][0] if shown else "",
    )
