"""Service levels measured at the data plane (``core/service_levels.py`` says what and how).

Streams and pulls report the Kafka timestamps of the records they write (``measure``); once a
second this process adds what it measured, and the seconds each contract in force could or
could not be served, to the store (Redis when replicas share one, so that every replica
answers the same), per contract and UTC day. ``report`` reads them back against the
contract's objectives.

A breach shows within ``check_seconds`` (10 s by default): a warning line in the log, the
``gateway_service_level_breached`` gauge, and the pages and API that read the same figures.
When a UTC day is over, one replica (whichever claims it first) writes the day's summary per
contract into the ledger, signed by the gateway's ledger key (``typ``
``service-levels+json``), so that both parties can hold it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import anyio
import msgspec

from gateway.core.contracts import ContractDocument
from gateway.core.ledger import timestamp
from gateway.core.quotas import UtcDay
from gateway.core.service_levels import (
    DayReport,
    DayTally,
    ServiceLevels,
    Stamps,
    evaluate,
    holds_history,
    measure_live,
    measure_stamps,
    summary_claims,
)
from gateway.errors import GatewayError
from gateway.services.consumption import ConsumptionStore
from gateway.services.ledger import Ledger
from gateway.services.registry import Registry

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
#: Live measurements waiting to be counted (until the next flush), at most.
LIVE_PENDING = 4096
#: How often today's figures are checked against the objectives, by default.
CHECK_SECONDS = 10.0
#: Days of figures kept.
HISTORY_DAYS = 35
SUMMARY = "service_levels"
SUMMARY_TYPE = "service-levels+json"


class ServiceLevelStore(ConsumptionStore, Protocol):
    async def claim(self, key: str, ttl: float) -> bool:
        """Whether this caller is the first to claim ``key`` (within ``ttl`` seconds)."""


def day_of(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


def _key(contract: str, day: str) -> str:
    return f"sl:{contract}:{day}"


def levels_of(registry: Registry, doc: ContractDocument) -> ServiceLevels:
    """A version's service levels, each one it does not declare taken from its product."""
    own = doc.contract.service_levels or ServiceLevels()
    product = registry.products.get(doc.contract.product)
    return own.over(product.service_levels if product is not None else None)


@dataclass(frozen=True, slots=True)
class Meter:
    """What a stream needs to measure its records' freshness: its contract's levels, and the
    log end per partition when it opened (what was there before is history)."""

    contract: str
    history: dict[int, int]
    target_ms: float | None
    max_lag_ms: float | None


class ServiceLevelTracker:
    def __init__(
        self,
        store: ServiceLevelStore,
        *,
        registry: Callable[[], Registry],
        ledger: Ledger,
        sign: Callable[[bytes], str] | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_breach: Callable[[str, str, bool], None] = lambda contract, objective, on: None,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self._check_seconds = check_seconds
        self.store = store
        self._registry = registry
        self._ledger = ledger
        self._sign = sign
        self.clock = clock
        self._on_breach = on_breach
        self._pending: dict[tuple[str, str], DayTally] = {}
        #: Live batches measured and not yet counted: (stamps, how many streams) by batch,
        #: millisecond and meter.
        self._live: dict[tuple[Any, ...], list[Any]] = {}
        self._day = UtcDay()
        #: Everything this process measured, per contract (Prometheus's counters).
        self.totals: dict[str, DayTally] = {}
        #: Whether each contract could be served at the last look (Prometheus's gauge).
        self.available: dict[str, bool] = {}
        self._breached: set[tuple[str, str]] = set()
        self._last_tick: datetime | None = None

    def meter(self, contract: str, doc: ContractDocument, history: dict[int, int]) -> Meter:
        levels = levels_of(self._registry(), doc)
        return Meter(
            contract,
            history,
            levels.freshness.seconds * 1000 if levels.freshness else None,
            levels.consumer.max_lag_seconds * 1000 if levels.consumer else None,
        )

    def measure(self, meter: Meter, stamps: Stamps) -> None:
        """Records of ``meter``'s contract written now (their Kafka timestamps)."""
        now = self.clock()
        now_ms = int(now.timestamp() * 1000)
        day, _ = self._day.of(now)
        if meter.history and holds_history(stamps, meter.history):
            measure_stamps(
                self._tally(meter.contract, day),
                stamps,
                now_ms=now_ms,
                history=meter.history,
                target_ms=meter.target_ms,
                max_lag_ms=meter.max_lag_ms,
            )
            return
        # The streams at the same position write the same batch within a few milliseconds of
        # each other: it is measured once per millisecond, times the streams that wrote it
        # then. Its timestamps are kept with the count (so their id names them until counted),
        # not its records: a stream catching up would keep a second of its batches alive.
        key = (id(stamps.sorted_ms), now_ms, meter.contract, day, meter.target_ms,
               meter.max_lag_ms)  # fmt: skip
        found = self._live.get(key)
        if found is not None:
            found[1] += 1
            return
        if len(self._live) >= LIVE_PENDING:
            self._count_live()
        self._live[key] = [stamps.timestamps_only(), 1]

    def _tally(self, contract: str, day: str) -> DayTally:
        tally = self._pending.get((contract, day))
        if tally is None:
            tally = self._pending[(contract, day)] = DayTally()
        return tally

    def _count_live(self) -> None:
        live, self._live = self._live, {}
        for (_, now_ms, contract, day, target_ms, max_lag_ms), (stamps, times) in live.items():
            measure_live(
                self._tally(contract, day),
                stamps,
                now_ms=now_ms,
                target_ms=target_ms,
                max_lag_ms=max_lag_ms,
                times=times,
            )

    def tick(self, servable: bool) -> None:
        """Count the time since the last tick for every contract in force: served, or not."""
        now = self.clock()
        last, self._last_tick = self._last_tick, now
        if last is None:
            return
        elapsed = int((now - last).total_seconds() * 1000)
        if elapsed <= 0:
            return
        registry, day = self._registry(), day_of(now)
        for contract, history in registry.histories.items():
            if not history.status_at(now).verdict.active:
                self.available.pop(contract, None)
                continue
            tally = self._pending.setdefault((contract, day), DayTally())
            if servable:
                tally.up_ms += elapsed
            else:
                tally.down_ms += elapsed
            self.available[contract] = servable

    async def flush(self) -> None:
        """Add what this process measured since the last flush to the store (kept for the
        next flush if the store does not answer)."""
        self._count_live()
        pending, self._pending = self._pending, {}
        ttl = HISTORY_DAYS * 86_400.0
        done: list[tuple[str, str]] = []
        try:
            for key, tally in pending.items():
                await self.store.add(_key(*key), tally.counts(), {}, ttl)
                done.append(key)
                self.totals.setdefault(key[0], DayTally()).add(tally)
        except GatewayError as exc:
            log.warning("service level figures not stored (%s); kept for the next try", exc.detail)
            for key, tally in pending.items():
                if key not in done:
                    self._pending.setdefault(key, DayTally()).add(tally)

    async def tally(self, contract: str, day: str) -> DayTally:
        (found,) = await self.store.read([_key(contract, day)])
        return DayTally.from_counts(found)

    async def report(self, contract: str, days: int = 7) -> tuple[ServiceLevels, list[DayReport]]:
        """The objectives in force, and the last ``days`` UTC days (today last) against them."""
        registry, now = self._registry(), self.clock()
        history = registry.histories[contract]
        doc = history.status_at(now).governing or history.latest
        levels = levels_of(registry, doc)
        wanted = [day_of(now - timedelta(days=n)) for n in range(days - 1, -1, -1)]
        found = await self.store.read([_key(contract, d) for d in wanted])
        return levels, [
            evaluate(levels, d, DayTally.from_counts(f)) for d, f in zip(wanted, found, strict=True)
        ]

    async def check(self) -> None:
        """Today's figures of every contract with objectives, against them: a breach is logged
        once and set in the gauge; the gauge clears when the level holds again."""
        registry, now = self._registry(), self.clock()
        day = day_of(now)
        for contract, history in registry.histories.items():
            doc = history.status_at(now).governing
            if doc is None:
                continue
            levels = levels_of(registry, doc)
            if not levels.declared:
                continue
            report = evaluate(levels, day, await self.tally(contract, day))
            for objective, met in (
                ("freshness", report.freshness_met),
                ("availability", report.availability_met),
            ):
                key = (contract, objective)
                if met is False and key not in self._breached:
                    self._breached.add(key)
                    log.warning(
                        "service level breached: contract %s, %s on %s (%s)",
                        contract,
                        objective,
                        day,
                        _said(report, objective),
                    )
                    self._on_breach(contract, objective, True)
                elif met is not False and key in self._breached:
                    self._breached.discard(key)
                    log.info("service level holds again: contract %s, %s", contract, objective)
                    self._on_breach(contract, objective, False)

    async def summarise(self, day: str) -> int:
        """Write ``day``'s signed summary of every contract with objectives into the ledger,
        unless another replica claimed it; how many this process wrote."""
        if self._sign is None:
            return 0
        registry, written = self._registry(), 0
        end = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
        for contract, history in sorted(registry.histories.items()):
            doc = history.status_at(end - timedelta(milliseconds=1)).governing
            if doc is None:
                continue
            levels = levels_of(registry, doc)
            if not levels.declared:
                continue
            if not await self.store.claim(f"{_key(contract, day)}:summary", 2 * 86_400.0):
                continue
            tally = await self.tally(contract, day)
            claims = summary_claims(contract, doc.hash, levels, evaluate(levels, day, tally), tally)
            signature = self._sign(msgspec.json.encode(claims))
            details: dict[str, Any] = {"contract": contract, "day": day, "summary": signature}
            self._ledger.record(timestamp(self.clock()), SUMMARY, details)
            written += 1
        return written

    async def run(self, servable: Callable[[], bool]) -> None:
        """Every second: the availability tick and a flush; every ``CHECK_SECONDS`` the
        objectives; after midnight UTC the day before's summaries."""
        checked = float("-inf")
        self._last_tick = self.clock()
        day = day_of(self._last_tick)
        while True:
            await anyio.sleep(FLUSH_SECONDS)
            self.tick(servable())
            await self.flush()
            try:
                if anyio.current_time() - checked >= self._check_seconds:
                    checked = anyio.current_time()
                    await self.check()
                today = day_of(self.clock())
                if today != day:
                    await self.summarise(day)
                    day = today
            except GatewayError as exc:
                log.warning("service levels not checked: %s", exc.detail)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.flush()


def _said(report: DayReport, objective: str) -> str:
    if objective == "freshness":
        share = report.within_share or 0.0
        return f"{share:.2%} of {report.records} records within the target"
    return f"available {report.availability or 0.0:.3%} of the time in force"
