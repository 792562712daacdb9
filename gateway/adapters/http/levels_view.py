"""Service levels as the pages show them (the team's consumers page, legal's contract page): a
line of objectives, a table per UTC day, and a chart of the share of records within the
freshness target per day against the objective's line. Server-rendered SVG, no JavaScript."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.service_levels import DayReport, ServiceLevels

WIDTH = 480
HEIGHT = 100


@dataclass(frozen=True, slots=True)
class DayBar:
    x: float
    y: float
    w: float
    h: float
    colour: str
    label: str


@dataclass(frozen=True, slots=True)
class LevelsView:
    objectives: list[str]
    days: list[DayReport]
    bars: list[DayBar]
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
        bars.append(
            DayBar(i * slot + 2, HEIGHT - height, max(1.0, slot - 4), height, colour, label)
        )
    target = (
        round(HEIGHT - HEIGHT * levels.freshness.percentile / 100, 1) if levels.freshness else None
    )
    return LevelsView(objectives_of(levels), days, bars, target, days[-1].breached if days else [])
