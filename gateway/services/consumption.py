"""Who consumes a product, and how far behind: what the owning team sees.

Every stream and pull reports its delivery as it goes (the same ``DeliveryEntry`` the ledger
gets, at least once a second while it sends, and when it ends). ``ConsumptionTracker`` keeps,
per contract: the partner's last position per partition (where its cursor stands), the time of
its last delivery, and records and bytes per UTC hour (kept ``HISTORY_HOURS``). They are
summed in this process and written to the ``ConsumptionStore`` once a second — Redis when
replicas share one, so every replica answers the same.

**Lag** is how many records a partner's position is behind the log end, summed over the
partitions (a partition it never read counts from its first record). ``sample_lag`` measures
it for every contract in force once a ``LAG_SAMPLE_SECONDS``: into the hourly history (the
chart of lag over time) and into Prometheus (``gateway_contract_lag_records``).

These are monitoring figures; the ledger stays the record of what was delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import anyio

from gateway.core.contracts import Product
from gateway.core.ledger import DeliveryEntry
from gateway.errors import GatewayError
from gateway.services.quotas import QuotaService
from gateway.services.registry import Registry

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
LAG_SAMPLE_SECONDS = 30.0
HISTORY_HOURS = 7 * 24
#: Deliveries whose last report was this long ago are forgotten (their end was missed).
FORGET_DELIVERY_SECONDS = 3600.0


class ConsumptionStore(Protocol):
    """Hashes of counters and values (``adapters/stores/consumption.py``)."""

    async def add(
        self, key: str, counts: Mapping[str, int], values: Mapping[str, str], ttl: float
    ) -> None:
        """Add ``counts`` to the hash's fields, set ``values``, keep it ``ttl`` seconds."""

    async def read(self, keys: Sequence[str]) -> list[dict[str, str]]:
        """Each hash (empty where there is none)."""

    async def close(self) -> None: ...


class EndsReader(Protocol):
    def __call__(self, topic: str) -> dict[int, tuple[int, int]]:
        """Per partition: (first offset, log end). Blocking."""


@dataclass
class _Pending:
    positions: dict[int, int] = field(default_factory=dict)
    last: float = 0.0
    by_hour: dict[int, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HourOfUse:
    hour: datetime
    records: int
    bytes: int
    #: The lag measured last in that hour, if any was.
    lag: int | None


@dataclass(frozen=True, slots=True)
class Consumption:
    """One contract's consumption as the store has it."""

    positions: dict[int, int]
    last_delivery: datetime | None
    hours: list[HourOfUse]

    def today(self, now: datetime) -> tuple[int, int]:
        """Records and bytes delivered since midnight UTC."""
        midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        hours = [h for h in self.hours if h.hour >= midnight]
        return sum(h.records for h in hours), sum(h.bytes for h in hours)


def lags_of(positions: Mapping[int, int], ends: Mapping[int, tuple[int, int]]) -> dict[int, int]:
    """Records between each partition's position (or first record) and its end."""
    return {
        p: max(0, end - max(positions.get(p, first), first)) for p, (first, end) in ends.items()
    }


def lag_of(positions: Mapping[int, int], ends: Mapping[int, tuple[int, int]]) -> int:
    """Records between the positions and the ends, over the partitions."""
    return sum(lags_of(positions, ends).values())


def _hour(moment: datetime) -> int:
    return int(moment.timestamp()) // 3600


def _key(contract: str) -> str:
    return f"cons:{contract}"


def _hour_key(contract: str, hour: int) -> str:
    return f"cons:{contract}:h:{hour}"


class ConsumptionTracker:
    def __init__(
        self,
        store: ConsumptionStore,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_lag: Callable[[str, Mapping[int, int]], None] = lambda contract, lags: None,
    ) -> None:
        self.store = store
        self.clock = clock
        self._on_lag = on_lag
        self._pending: dict[str, _Pending] = {}
        #: Per delivery: records and bytes already counted, and when it last reported.
        self._counted: dict[str, tuple[int, int, float]] = {}

    def note(self, entry: DeliveryEntry) -> None:
        """A delivery's report (cumulative): what is new since its last one is counted."""
        now = self.clock()
        at = now.timestamp()
        records, size, _ = self._counted.get(entry.delivery, (0, 0, at))
        pending = self._pending.setdefault(entry.contract, _Pending())
        # A negative position is a sentinel (the partition's beginning): no position yet.
        pending.positions.update({p: o for p, o in entry.end.items() if o >= 0})
        pending.last = at
        hour = _hour(now)
        r, b = pending.by_hour.get(hour, (0, 0))
        pending.by_hour[hour] = (r + entry.records - records, b + entry.bytes - size)
        if entry.end_reason == "in_progress":
            self._counted[entry.delivery] = (entry.records, entry.bytes, at)
        else:
            self._counted.pop(entry.delivery, None)

    async def flush(self) -> None:
        """Write what this process counted since the last flush (kept for the next on failure)."""
        pending, self._pending = self._pending, {}
        ttl = HISTORY_HOURS * 3600.0
        try:
            for contract, p in pending.items():
                values = {f"pos:{k}": str(v) for k, v in p.positions.items()}
                values["last"] = repr(p.last)
                await self.store.add(_key(contract), {}, values, ttl)
                for hour, (records, size) in p.by_hour.items():
                    counts = {"records": records, "bytes": size}
                    await self.store.add(_hour_key(contract, hour), counts, {}, ttl)
        except GatewayError as exc:
            log.warning("consumption figures not stored (%s); kept for the next try", exc.detail)
            for contract, p in pending.items():
                self._merge_back(contract, p)
        cutoff = self.clock().timestamp() - FORGET_DELIVERY_SECONDS
        self._counted = {d: c for d, c in self._counted.items() if c[2] >= cutoff}

    def _merge_back(self, contract: str, old: _Pending) -> None:
        new = self._pending.get(contract)
        if new is None:
            self._pending[contract] = old
            return
        old.positions.update(new.positions)
        old.last = max(old.last, new.last)
        for hour, (r, b) in new.by_hour.items():
            r0, b0 = old.by_hour.get(hour, (0, 0))
            old.by_hour[hour] = (r0 + r, b0 + b)
        self._pending[contract] = old

    async def read(self, contract: str, hours: int = 24) -> Consumption:
        now_hour = _hour(self.clock())
        wanted = list(range(now_hour - hours + 1, now_hour + 1))
        found = await self.store.read([_key(contract), *(_hour_key(contract, h) for h in wanted)])
        head, per_hour = found[0], found[1:]
        positions = {int(k[4:]): int(v) for k, v in head.items() if k.startswith("pos:")}
        last = float(head["last"]) if "last" in head else None
        return Consumption(
            positions=positions,
            last_delivery=datetime.fromtimestamp(last, UTC) if last else None,
            hours=[
                HourOfUse(
                    hour=datetime.fromtimestamp(h * 3600, UTC),
                    records=int(values.get("records", 0)),
                    bytes=int(values.get("bytes", 0)),
                    lag=int(values["lag"]) if "lag" in values else None,
                )
                for h, values in zip(wanted, per_hour, strict=True)
            ],
        )

    async def sample_lag(self, registry: Registry, ends_of: EndsReader) -> None:
        """Measure every contract's lag now (one metadata request per topic)."""
        now = self.clock()
        by_topic: dict[str, list[str]] = {}
        for cid, history in registry.histories.items():
            status = history.status_at(now)
            product = registry.products.get(history.latest.contract.product)
            if status.verdict.active and product is not None:
                by_topic.setdefault(product.topic, []).append(cid)
        for topic, contracts in by_topic.items():
            try:
                ends = await anyio.to_thread.run_sync(ends_of, topic)
            except GatewayError as exc:
                log.warning("lag of %s not measured: %s", topic, exc.detail)
                continue
            for contract in contracts:
                consumption = await self.read(contract, hours=1)
                lags = lags_of(consumption.positions, ends)
                self._on_lag(contract, lags)
                lag = sum(lags.values())
                key = _hour_key(contract, _hour(now))
                await self.store.add(key, {}, {"lag": str(lag)}, HISTORY_HOURS * 3600.0)

    async def close(self) -> None:
        """At shutdown: what was counted since the last flush, then the store."""
        with anyio.CancelScope(shield=True):
            await self.flush()
            await self.store.close()

    async def run(self, registry: Callable[[], Registry], ends_of: EndsReader) -> None:
        """Flush every ``FLUSH_SECONDS`` and sample lag every ``LAG_SAMPLE_SECONDS``."""
        sampled = float("-inf")
        while True:
            await anyio.sleep(FLUSH_SECONDS)
            await self.flush()
            if anyio.current_time() - sampled >= LAG_SAMPLE_SECONDS:
                sampled = anyio.current_time()
                try:
                    await self.sample_lag(registry(), ends_of)
                except GatewayError as exc:
                    log.warning("lag not sampled: %s", exc.detail)


@dataclass(frozen=True, slots=True)
class ConsumerView:
    """One contract on a product, as its owning team sees it."""

    contract: str
    version: int
    partner: str
    state: str
    valid_from: datetime
    valid_until: datetime
    live_streams: int
    last_delivery: datetime | None
    records_today: int
    bytes_today: int
    bytes_per_day: int | None
    bytes_remaining_today: int | None
    #: ``None`` until the partner has consumed at all.
    lag: int | None
    positions: dict[int, int]
    hours: list[HourOfUse]


async def consumers_of(
    product: Product,
    registry: Registry,
    tracker: ConsumptionTracker,
    quotas: QuotaService,
    ends: Mapping[int, tuple[int, int]],
    now: datetime,
) -> list[ConsumerView]:
    """Every contract on ``product`` (whatever its state), with its consumption and lag."""
    views = []
    for cid in sorted(registry.histories):
        history = registry.histories[cid]
        status = history.status_at(now)
        doc = status.governing or history.latest
        c = doc.contract
        if c.product != product.product:
            continue
        usage = (await quotas.usage(c.consumer, [doc])).contracts[0]
        consumption = await tracker.read(cid)
        records_today, _ = consumption.today(now)
        consumed = bool(consumption.positions) or consumption.last_delivery is not None
        views.append(
            ConsumerView(
                contract=cid,
                version=c.version,
                partner=c.consumer,
                state=status.verdict.reason,
                valid_from=c.valid_from,
                valid_until=c.valid_until,
                live_streams=usage.open_streams,
                last_delivery=consumption.last_delivery,
                records_today=records_today,
                bytes_today=usage.bytes_today,
                bytes_per_day=usage.limits.bytes_per_day,
                bytes_remaining_today=usage.bytes_remaining_today,
                lag=lag_of(consumption.positions, ends) if consumed else None,
                positions=consumption.positions,
                hours=consumption.hours,
            )
        )
    return views
