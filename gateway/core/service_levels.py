"""Service levels a contract declares, and what the gateway measured of them (pure).

A contract (or, as a default, its product) may declare::

    service_levels:
      freshness: {percentile: 99, seconds: 5}   # a record's age when written to the partner
      availability: {percent: 99.5}             # share of the time in force it could be served
      consumer: {max_lag_seconds: 300}          # the partner's side: how far behind it may be

**Freshness** is measured at the data plane: for every record written to the partner, its age
from its Kafka timestamp. Ages go into a histogram per contract and UTC day (fixed buckets, so
replicas' histograms add up), and the records within the target are counted exactly. A record
is *released* (counted apart, not against the provider) when the partner was not keeping up:
it was in the log before the stream that delivered it opened (the partner was away and is
catching up), or it was older than ``consumer.max_lag_seconds`` when written (the partner fell
that far behind). The level is met when at least ``percentile`` % of the counted records were
within ``seconds``.

**Availability** is the share of the time a contract was in force during which the gateway
could serve it (its ledger took writes: without that it serves nothing). Time the contract
was not in force (suspended, expired, not yet valid) does not count either way.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: Upper bounds of the freshness buckets, in milliseconds (a last bucket holds the rest).
BOUNDS_MS = (50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000)
BUCKETS = len(BOUNDS_MS) + 1


class Freshness(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The share of records (in %) that must be within ``seconds``.
    percentile: float = Field(default=99.0, ge=50, le=100)
    seconds: float = Field(gt=0, le=86_400)


class Availability(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    percent: float = Field(gt=0, le=100)


class ConsumerObligations(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Records older than this when written do not count against freshness.
    max_lag_seconds: float = Field(gt=0)


class ServiceLevels(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    freshness: Freshness | None = None
    availability: Availability | None = None
    consumer: ConsumerObligations | None = None

    def over(self, defaults: ServiceLevels | None) -> ServiceLevels:
        """These levels, each one not declared taken from ``defaults`` (the product's)."""
        if defaults is None:
            return self
        return ServiceLevels(
            freshness=self.freshness or defaults.freshness,
            availability=self.availability or defaults.availability,
            consumer=self.consumer or defaults.consumer,
        )

    @property
    def declared(self) -> bool:
        return self.freshness is not None or self.availability is not None


@dataclass(slots=True)
class DayTally:
    """What one contract's deliveries measured on one UTC day (counts that add up)."""

    buckets: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    #: Counted records within the freshness target (exact, not by bucket).
    within: int = 0
    #: Ages of counted records, summed (ms), for Prometheus's ``_sum``.
    age_ms: int = 0
    released: int = 0
    up_ms: int = 0
    down_ms: int = 0

    @property
    def records(self) -> int:
        return sum(self.buckets)

    def add(self, other: DayTally) -> None:
        for n, count in enumerate(other.buckets):
            self.buckets[n] += count
        self.within += other.within
        self.age_ms += other.age_ms
        self.released += other.released
        self.up_ms += other.up_ms
        self.down_ms += other.down_ms

    def counts(self) -> dict[str, int]:
        """As a hash's counters (``from_counts`` reads them back); zeros left out."""
        found = {f"b{n}": c for n, c in enumerate(self.buckets) if c}
        for name in ("within", "age_ms", "released", "up_ms", "down_ms"):
            if value := getattr(self, name):
                found[name] = value
        return found

    @classmethod
    def from_counts(cls, counts: Mapping[str, str | int]) -> DayTally:
        tally = cls()
        for name, value in counts.items():
            number = int(value)
            if name.startswith("b") and name[1:].isdigit() and int(name[1:]) < BUCKETS:
                tally.buckets[int(name[1:])] = number
            elif name in ("within", "age_ms", "released", "up_ms", "down_ms"):
                setattr(tally, name, number)
        return tally


def measure_ages(
    tally: DayTally,
    records: Iterable[tuple[int, int, int]],
    *,
    now_ms: int,
    history: Mapping[int, int],
    target_ms: float | None,
    max_lag_ms: float | None,
) -> None:
    """Add records written at ``now_ms`` (partition, offset, Kafka timestamp) to ``tally``.
    ``history``: per partition, the log end when the stream opened (records before it were
    there while the partner was away)."""
    buckets = tally.buckets
    for partition, offset, ts in records:
        age = max(0, now_ms - ts)
        if offset < history.get(partition, 0) or (max_lag_ms is not None and age > max_lag_ms):
            tally.released += 1
            continue
        buckets[bisect.bisect_left(BOUNDS_MS, age)] += 1
        tally.age_ms += age
        if target_ms is not None and age <= target_ms:
            tally.within += 1


@dataclass(frozen=True, slots=True)
class Stamps:
    """The Kafka timestamps of a batch's records sent, sorted (with prefix sums), and the
    first offset read per partition: read once per batch (streams at the same position share
    it), measured per stream in a few bisections (``measure_stamps``) rather than a step per
    record."""

    sorted_ms: tuple[int, ...]
    #: ``sums[i]``: the sum of ``sorted_ms[:i]``.
    sums: tuple[int, ...]
    first_offsets: Mapping[int, int]
    #: The last offset read per partition.
    last_offsets: Mapping[int, int]
    #: The batch's records and marks, for a stream that must look at each (history).
    records: Any
    marks: Sequence[tuple[int, int]]

    @classmethod
    def of(
        cls,
        records: Any,
        marks: Sequence[tuple[int, int]],
        first: Mapping[int, int],
        after: Mapping[int, int],
    ) -> Stamps:
        """From a batch's records (``SourceRecord``), marks, the first offset it read per
        partition and the positions after it."""
        stamps = [records[index].timestamp() for _, index in marks]
        ordered = tuple(sorted(ts for kind, ts in stamps if kind))
        last = {p: after[p] - 1 for p in first if p in after}
        return cls(ordered, (0, *itertools.accumulate(ordered)), first, last, records, marks)

    def timestamps_only(self) -> Stamps:
        """The same timestamps, without the batch's records (what ``measure_live`` reads)."""
        return Stamps(self.sorted_ms, self.sums, {}, {}, None, ())

    def sent(self) -> list[tuple[int, int, int]]:
        """(partition, offset, timestamp) of each record sent with a timestamp."""
        found = []
        for _, index in self.marks:
            record = self.records[index]
            kind, ts = record.timestamp()
            if kind:
                found.append((record.partition() or 0, record.offset() or 0, ts))
        return found


def measure_stamps(
    tally: DayTally,
    stamps: Stamps,
    *,
    now_ms: int,
    history: Mapping[int, int],
    target_ms: float | None,
    max_lag_ms: float | None,
) -> None:
    """``measure_ages`` for a batch, in bisections of its sorted timestamps (a record's age is
    at most ``b`` exactly when its timestamp is at least ``now - b``)."""
    if stamps.last_offsets and all(
        offset < history.get(p, 0) for p, offset in stamps.last_offsets.items()
    ):
        tally.released += len(stamps.sorted_ms)  # all of it was there before the stream
        return
    if holds_history(stamps, history):
        measure_ages(
            tally,
            stamps.sent(),
            now_ms=now_ms,
            history=history,
            target_ms=target_ms,
            max_lag_ms=max_lag_ms,
        )
        return
    measure_live(tally, stamps, now_ms=now_ms, target_ms=target_ms, max_lag_ms=max_lag_ms)


def holds_history(stamps: Stamps, history: Mapping[int, int]) -> bool:
    """Whether some record of the batch was there when the stream opened (``history``)."""
    return any(offset < history.get(p, 0) for p, offset in stamps.first_offsets.items())


def measure_live(
    tally: DayTally,
    stamps: Stamps,
    *,
    now_ms: int,
    target_ms: float | None,
    max_lag_ms: float | None,
    times: int = 1,
) -> None:
    """``measure_stamps`` of a batch with no history in it, written ``times`` times at
    ``now_ms`` (to as many streams: the figures are the same for each)."""
    ts, total = stamps.sorted_ms, len(stamps.sorted_ms)
    # Older than the partner's lag allows: released; the rest are counted.
    low = 0 if max_lag_ms is None else bisect.bisect_left(ts, now_ms - max_lag_ms)
    tally.released += low * times

    def at_most(age: float) -> int:
        return total - max(low, bisect.bisect_left(ts, now_ms - age))

    counted, seen = total - low, 0
    buckets = tally.buckets
    for n, bound in enumerate(BOUNDS_MS):
        within = at_most(bound)
        buckets[n] += (within - seen) * times
        seen = within
    buckets[-1] += (counted - seen) * times
    if target_ms is not None:
        tally.within += at_most(target_ms) * times
    # Ages never below 0 (a timestamp ahead of this clock is 0 old).
    future = bisect.bisect_right(ts, now_ms, lo=low)
    tally.age_ms += ((future - low) * now_ms - (stamps.sums[future] - stamps.sums[low])) * times


def percentile_ms(buckets: list[int], share: float) -> int | None:
    """The bucket bound at or below which ``share`` (0 to 1) of the records fall: an upper bound
    of that percentile; ``None`` with no records, ``-1`` beyond the last bound."""
    total = sum(buckets)
    if not total:
        return None
    wanted = share * total
    seen = 0
    for n, count in enumerate(buckets):
        seen += count
        if seen >= wanted:
            return BOUNDS_MS[n] if n < len(BOUNDS_MS) else -1
    return -1


@dataclass(frozen=True, slots=True)
class DayReport:
    """One contract's service levels on one UTC day, against its objectives."""

    day: str
    records: int
    released: int
    #: Upper bounds (ms) of the median and the 99th percentile (``-1``: beyond 300 s).
    p50_ms: int | None
    p99_ms: int | None
    #: Share of counted records within the freshness target (``None``: no target or records).
    within_share: float | None
    freshness_met: bool | None
    up_seconds: float
    down_seconds: float
    availability: float | None
    availability_met: bool | None

    @property
    def breached(self) -> list[str]:
        return [
            name
            for name, met in (
                ("freshness", self.freshness_met),
                ("availability", self.availability_met),
            )
            if met is False
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "records": self.records,
            "released": self.released,
            "freshness": {
                "p50_seconds": _seconds(self.p50_ms),
                "p99_seconds": _seconds(self.p99_ms),
                "within_target": self.within_share,
                "met": self.freshness_met,
            },
            "availability": {
                "up_seconds": self.up_seconds,
                "down_seconds": self.down_seconds,
                "ratio": self.availability,
                "met": self.availability_met,
            },
        }


def _seconds(ms: int | None) -> float | str | None:
    if ms is None:
        return None
    return f">{BOUNDS_MS[-1] / 1000:g}" if ms < 0 else ms / 1000


def evaluate(levels: ServiceLevels, day: str, tally: DayTally) -> DayReport:
    records = tally.records
    within = tally.within / records if records and levels.freshness else None
    freshness_met = (
        None
        if within is None or levels.freshness is None
        else within * 100 >= levels.freshness.percentile
    )
    served = tally.up_ms + tally.down_ms
    availability = tally.up_ms / served if served else None
    availability_met = (
        None
        if availability is None or levels.availability is None
        else availability * 100 >= levels.availability.percent
    )
    return DayReport(
        day=day,
        records=records,
        released=tally.released,
        p50_ms=percentile_ms(tally.buckets, 0.5),
        p99_ms=percentile_ms(tally.buckets, 0.99),
        within_share=within,
        freshness_met=freshness_met,
        up_seconds=tally.up_ms / 1000,
        down_seconds=tally.down_ms / 1000,
        availability=availability,
        availability_met=availability_met,
    )


def summary_claims(
    contract: str, version: str, levels: ServiceLevels, report: DayReport, tally: DayTally
) -> dict[str, Any]:
    """The signed daily summary's payload: objectives, measurements, and the histogram."""
    return {
        "contract": contract,
        "version": version,
        "day": report.day,
        "objectives": levels.model_dump(exclude_none=True),
        "measured": report.as_json(),
        "histogram": {"bounds_ms": list(BOUNDS_MS), "counts": list(tally.buckets)},
        "breached": report.breached,
    }
