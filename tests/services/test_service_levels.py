"""The service level tracker with its clock injected: time in force counted served or not, a
breach said once and cleared, the day's summary written once when the day is over."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from gateway.adapters.stores.consumption import MemoryConsumptionStore
from gateway.adapters.stores.contracts_dir import ContractsDirectory
from gateway.core.service_levels import DayTally, Stamps, measure_stamps
from gateway.services.registry import Registry
from gateway.services.service_levels import ServiceLevelTracker
from tests.conftest import World
from tests.core.test_service_levels import Stamped

T0 = datetime(2026, 11, 23, 23, 58, 0, tzinfo=UTC)
LEVELS = "service_levels:\n  freshness: {seconds: 5}\n  availability: {percent: 99}\n"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Ledger:
    def __init__(self) -> None:
        self.entries: list[tuple[str, Mapping[str, Any]]] = []

    def record(self, time: str, kind: str, details: Mapping[str, Any]) -> None:
        self.entries.append((kind, details))

    def problem(self) -> str | None:
        return None


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    world = World(tmp_path, "orders-topic")
    for org in ("acme", "globex"):
        world.add_org(org)
    (world.contracts_dir / "products").mkdir(parents=True)
    (world.contracts_dir / "products" / "orders.yaml").write_text(
        "product: orders\nowner: acme\nteam: t\ntopic: orders-topic\ndescription: Orders\n"
    )
    world.add_contract("sla", "globex", extra=LEVELS)
    world.add_contract("plain", "globex")
    return ContractsDirectory(world.contracts_dir, world.keys_dir).load(gateway_org="acme", now=T0)


def test_time_in_force_counts_served_or_not_and_a_breach_is_said_once(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    clock, ledger = Clock(), Ledger()
    breaches: list[tuple[str, str, bool]] = []
    tracker = ServiceLevelTracker(
        MemoryConsumptionStore(clock=lambda: clock().timestamp()),
        registry=lambda: registry,
        ledger=ledger,
        sign=lambda claims: f"signed:{claims.decode()}",
        clock=clock,
        on_breach=lambda *args: breaches.append(args),
    )

    async def scenario() -> None:
        tracker.tick(True)  # the first look: nothing counted yet
        clock.now += timedelta(seconds=30)
        tracker.tick(True)
        clock.now += timedelta(seconds=2)
        tracker.tick(False)  # the ledger took no writes for those 2 s
        await tracker.flush()
        with caplog.at_level(logging.WARNING):
            await tracker.check()
            await tracker.check()  # said once
        clock.now += timedelta(seconds=60)
        tracker.tick(True)
        await tracker.flush()
        await tracker.check()  # 90 of 92 s: within 99%? no: 97.8%, still breached
        clock.now += timedelta(minutes=30)  # into the next day (ticks are 1 s apart in fact)
        tracker.tick(True)
        await tracker.flush()
        await tracker.check()

    anyio.run(scenario)
    _, days = anyio.run(tracker.report, "sla", 2)
    assert (days[0].up_seconds, days[0].down_seconds) == (90.0, 2.0)
    assert days[0].breached == ["availability"]
    assert days[1].breached == []  # the new day: served all along
    assert tracker.available == {"sla": True, "plain": True}
    assert breaches == [("sla", "availability", True), ("sla", "availability", False)]
    said = [r.getMessage() for r in caplog.records if "breached" in r.getMessage()]
    assert said == ["service level breached: contract sla, availability on 2026-11-23 "
                    "(available 93.750% of the time in force)"]  # fmt: skip
    # The day is over: its summary, once, for the contract with objectives only.
    assert anyio.run(tracker.summarise, "2026-11-23") == 1
    assert anyio.run(tracker.summarise, "2026-11-23") == 0
    ((kind, details),) = ledger.entries
    assert (kind, details["contract"], details["day"]) == ("service_levels", "sla", "2026-11-23")
    assert '"breached":["availability"]' in details["summary"]


def measuring(registry: Registry, clock: Clock) -> ServiceLevelTracker:
    """A tracker on a memory store, that signs nothing: for what it measures."""
    return ServiceLevelTracker(
        MemoryConsumptionStore(clock=lambda: clock().timestamp()),
        registry=lambda: registry,
        ledger=Ledger(),
        sign=None,
        clock=clock,
    )


def test_streams_at_one_position_are_measured_once_and_counted_for_each(
    registry: Registry,
) -> None:
    """A thousand streams write the same batch: the tracker counts it once per millisecond
    times the streams, and what it stores is what measuring each stream alone gives; a stream
    for which the batch holds history is measured on its own; the day of each write counts."""
    clock = Clock()
    tracker = measuring(registry, clock)
    now_ms = int(T0.timestamp() * 1000)
    records = [Stamped(0, 10 + n, now_ms - age, 1) for n, age in enumerate((5, 900, 7_000))]
    stamps = Stamps.of(records, [(n, n) for n in range(3)], {0: 10}, {0: 13})
    doc = registry.histories["sla"].latest
    live, behind = tracker.meter("sla", doc, {0: 5}), tracker.meter("sla", doc, {0: 12})
    expected = {T0: DayTally(), T0 + timedelta(minutes=3): DayTally()}
    writes = [(0.0, live)] * 3 + [(0.0005, live), (0.002, live), (0.002, behind), (180.0, live)]
    for seconds, meter in writes:
        clock.now = T0 + timedelta(seconds=seconds)
        tracker.measure(meter, stamps)
        day = T0 if seconds < 120 else T0 + timedelta(minutes=3)  # past midnight
        measure_stamps(
            expected[day], stamps, now_ms=int(clock.now.timestamp() * 1000),
            history=meter.history, target_ms=meter.target_ms, max_lag_ms=meter.max_lag_ms,
        )  # fmt: skip

    anyio.run(tracker.flush)

    for moment, tally in expected.items():
        assert anyio.run(tracker.tally, "sla", moment.date().isoformat()) == tally
        assert tally.released or sum(tally.buckets)


def test_a_batch_waiting_to_be_counted_does_not_keep_its_records_alive(
    registry: Registry,
) -> None:
    clock = Clock()
    tracker = measuring(registry, clock)
    now_ms = int(T0.timestamp() * 1000)
    records = [Stamped(0, 10 + n, now_ms - 5, 1) for n in range(3)]
    held = weakref.ref(records[0])
    stamps = Stamps.of(records, [(n, n) for n in range(3)], {0: 10}, {0: 13})
    tracker.measure(tracker.meter("sla", registry.histories["sla"].latest, {0: 5}), stamps)
    del records, stamps
    gc.collect()
    assert held() is None
    anyio.run(tracker.flush)
    assert sum(anyio.run(tracker.tally, "sla", T0.date().isoformat()).buckets) == 3
