"""Quotas: what a contract allows per second, per day and at once, and the arithmetic of limits.

Pure: no clocks, no stores. Time is a parameter in seconds (any monotonic origin shared by the
callers of one bucket; the stores use Unix time so that replicas agree).

Rates use GCRA, the generic cell rate algorithm (ITU-T I.371): a bucket is one number, the
*theoretical arrival time* (TAT) at which it would be full again. Sending ``n`` units at rate
``r`` pushes the TAT ``n / r`` seconds ahead; the bucket allows a burst of ``burst`` seconds'
worth. One number per bucket makes it cheap to keep in Redis and to update atomically.

- ``throttle``: the units are already committed (records were read); the caller waits until the
  bucket is back within its burst before sending more. Rates are met over any long window,
  nothing is refused.
- ``admit``: a request either fits now or is refused with the time after which it would fit.

Daily volume is counted per calendar day in UTC (``day_window``): contracts price data per day,
a partner can plan around a fixed reset time, and the counter is one key that expires by itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

_EPSILON = 1e-6

#: Burst tolerance of rate quotas, in seconds of the rate (a stream's batch is sized to fit it).
RATE_BURST_SECONDS = 0.1


class Quotas(BaseModel):
    """Limits of one contract (``None``: no limit from this source).

    Rates throttle (the stream slows down, nothing is skipped); ``concurrent_streams`` and
    ``bytes_per_day`` refuse (HTTP 429 with ``Retry-After``). Bytes are what the partner
    receives: the encoded events or lines, after field protection.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    records_per_second: float | None = Field(default=None, gt=0, le=10_000_000)
    bytes_per_second: int | None = Field(default=None, gt=0)
    concurrent_streams: int | None = Field(default=None, ge=1, le=10_000)
    bytes_per_day: int | None = Field(default=None, gt=0)

    def within(self, defaults: Quotas, ceilings: Quotas) -> Quotas:
        """The quotas in force: the contract's value, else the default; never above the ceiling."""
        values = {}
        for name in Quotas.model_fields:
            own = getattr(self, name)
            value = own if own is not None else getattr(defaults, name)
            ceiling = getattr(ceilings, name)
            if ceiling is not None:
                value = ceiling if value is None else min(value, ceiling)
            values[name] = value
        return Quotas(**values)


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` units a second; up to ``burst`` seconds' worth may go at once
    (``admit`` needs ``burst >= 1 / per_second`` for a single unit to ever fit)."""

    per_second: float
    burst: float = RATE_BURST_SECONDS

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second


def throttle(tat: float, now: float, units: float, rate: Rate) -> tuple[float, float]:
    """Charge ``units`` already committed: ``(new_tat, wait)``; send nothing more for ``wait`` s.

    A caller that waits as told sends, over any window of ``d`` seconds, at most
    ``per_second * (d + burst)`` units plus its last charge.
    """
    new_tat = max(tat, now) + units * rate.interval
    return new_tat, max(0.0, new_tat - rate.burst - now)


def admit(tat: float, now: float, units: float, rate: Rate) -> tuple[float, float]:
    """``(new_tat, 0)`` if ``units`` fit now, else ``(tat, retry_after)`` and nothing is charged."""
    new_tat = max(tat, now) + units * rate.interval
    over = new_tat - now - rate.burst
    if over > _EPSILON:  # float rounding must not refuse what exactly fits
        return tat, over
    return new_tat, 0.0


def remaining(debt: float, rate: Rate) -> tuple[int, int]:
    """For the ``RateLimit`` field: units that may go now, and seconds until the bucket is full,
    given the bucket's ``debt`` (``tat - now``, seconds)."""
    debt = max(0.0, debt)
    return int(max(0.0, rate.burst - debt) * rate.per_second + 1e-9), math.ceil(debt)


def day_window(now: datetime) -> tuple[str, datetime]:
    """The UTC calendar day of ``now`` (``YYYY-MM-DD``) and the moment the next one begins."""
    day = now.astimezone(UTC).date()
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return day.isoformat(), start + timedelta(days=1)


class UtcDay:
    """``day_window`` remembered for the day it holds (asked for every batch, it changes once a
    day): ``of(now)`` is the day's name and the moment the next day begins."""

    __slots__ = ("_ends", "_name", "_starts")

    def __init__(self) -> None:
        self._starts = self._ends = datetime.min.replace(tzinfo=UTC)
        self._name = ""

    def of(self, now: datetime) -> tuple[str, datetime]:
        if not self._starts <= now < self._ends:
            self._name, self._ends = day_window(now)
            self._starts = self._ends - timedelta(days=1)
        return self._name, self._ends


def seconds_until(moment: datetime, now: datetime) -> int:
    """Whole seconds (rounded up, at least 1) for ``Retry-After``."""
    return max(1, math.ceil((moment - now).total_seconds()))


@dataclass(frozen=True, slots=True)
class PolicyItem:
    """One quota policy as the IETF RateLimit fields describe it
    (draft-ietf-httpapi-ratelimit-headers-10 §3, §4)."""

    name: str
    quota: int
    window: int | None = None
    #: A registered quota unit ("request", "content-bytes", "concurrency"), or None.
    unit: str | None = None
    #: What the quota counts when no registered unit fits (a vendor parameter, ``exg-unit``).
    vendor_unit: str | None = None

    def policy(self) -> str:
        item = f'"{self.name}";q={self.quota}'
        if self.unit is not None:
            item += f';qu="{self.unit}"'
        if self.window is not None:
            item += f";w={self.window}"
        if self.vendor_unit is not None:
            item += f';exg-unit="{self.vendor_unit}"'
        return item


def ratelimit_fields(items: list[tuple[PolicyItem, int, int]]) -> dict[str, str]:
    """``RateLimit-Policy`` and ``RateLimit`` for ``(policy, remaining, reset_seconds)`` items."""
    if not items:
        return {}
    return {
        "RateLimit-Policy": ", ".join(policy.policy() for policy, _, _ in items),
        "RateLimit": ", ".join(
            f'"{policy.name}";r={max(0, left)};t={max(0, reset)}' for policy, left, reset in items
        ),
    }


class QuotaKeys:
    """Where quota state lives in a ``QuotaStore`` (the same names in memory and in Redis)."""

    @staticmethod
    def leases(contract_id: str, org: str) -> list[str]:
        """The concurrency lease sets: the contract's and the organisation's."""
        return [f"streams:c:{contract_id}", QuotaKeys.org_leases(org)]

    @staticmethod
    def org_leases(org: str) -> str:
        return f"streams:o:{org}"

    @staticmethod
    def rates(contract_id: str) -> tuple[str, str]:
        """The contract's buckets: records, bytes."""
        return f"rec:{contract_id}", f"byt:{contract_id}"

    @staticmethod
    def volume(contract_id: str, day: str) -> str:
        """The contract's volume counter for one UTC day."""
        return f"day:{contract_id}:{day}"

    @staticmethod
    def token(client_key: str) -> str:
        return f"token:{client_key}"

    @staticmethod
    def login(key: str) -> str:
        return f"login:{key}"

    @staticmethod
    def publish(team: str) -> str:
        return f"pub:{team}"
