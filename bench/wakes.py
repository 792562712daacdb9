"""What one tail stream's wake-up costs the gateway, without the network.

``bench/fanout.py`` measures live fan-out end to end: a thousand SSE streams woken together for
each slice of new records, served one after the other by one event loop, so a record's latency
is about one round of wake-ups. This benchmark measures a round in-process, on the real
``StreamService`` (contract checks, quotas, the encode-once cache, service-level measurement,
receipts, progress entries, the consumption tracker) with a window of records in memory for
source and a response that only counts what it is given: the gateway's own work per wake-up,
without the socket's (``bench/fanout.py`` prints that floor: the kernel's cost of a write to
each socket).

Target, derived from issue 11's live target: a round of 1,000 wake-ups within 40 ms of the
gateway's own work, so that with the kernel's writes (10-15 µs each on this machine) a round
stays near 50 ms and a record's p99 (about one round, docs/benchmarks.md) well within 100 ms of
a raw consumer's.

Usage: python -m bench.wakes [--streams 1000] [--rounds 200] [--records 14] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from gateway.adapters.kafka.shared import Alarm, _Signal
from gateway.adapters.stores.consumption import MemoryConsumptionStore
from gateway.adapters.stores.quotas import MemoryQuotaStore
from gateway.core.cursor import CursorCodec
from gateway.core.jose import CompactSigner, signing_key
from gateway.core.lifecycle import build_history
from gateway.core.quotas import Quotas
from gateway.core.receipts import RECEIPT_TYPE, ReceiptPolicy
from gateway.core.records import StreamFormat
from gateway.metrics import GatewayMetrics
from gateway.services.authorization import Partner
from gateway.services.consumption import ConsumptionTracker
from gateway.services.datakeys import DataKeyService
from gateway.services.quotas import QuotaService
from gateway.services.registry import Registry
from gateway.services.service_levels import ServiceLevelTracker
from gateway.services.streams import Start, StreamLimits, StreamService
from gateway.settings import QuotaSettings
from tests.core.test_contracts import KEYS, PRODUCTS, PUBLIC
from tests.core.test_lifecycle import contract
from tests.fakes import FakeDataKeyStore, FakeLedger, FakeRecord

TARGET_MS = 40.0


class Window:
    """One partition's records in memory, published in slices through the shared reader's own
    ``_Signal`` (wake-ups coalesced as the reader's are)."""

    def __init__(self) -> None:
        self.records: list[FakeRecord] = []
        self.published = 0
        self.signal = _Signal(self._publish)
        #: Slices handed out, by bounds: streams at the same position get the same list (the
        #: shared reader's window does the same: the encode-once cache keys on it).
        self.slices: dict[tuple[int, int], list[FakeRecord]] = {}

    def _publish(self) -> None:
        self.published = len(self.records)

    def publish(self, values: Sequence[bytes]) -> None:
        now_ms = int(time.time() * 1000)
        for value in values:
            self.records.append(FakeRecord(0, len(self.records), value, None, now_ms))
        self.slices.clear()
        self.signal.fire()


class WindowSource:
    """``RecordSource`` on a ``Window``, waiting as ``SharedSource`` does."""

    shared = True

    def __init__(self, window: Window) -> None:
        self._window = window
        self._position = 0
        self._alarm = Alarm()

    def partitions(self) -> list[int]:
        return [0]

    def latest(self, partitions: Sequence[int]) -> dict[int, int]:
        return {0: self._window.published}

    def bounds(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        return {0: (0, self._window.published)}

    def at_time(self, partitions: Sequence[int], moment: datetime) -> dict[int, int]:
        return {0: 0}

    def assign(self, positions: dict[int, int]) -> None:
        self._position = positions[0]

    def has_unread(self, positions: dict[int, int]) -> bool:
        return positions.get(0, 0) < self._window.published

    def _take(self, max_records: int) -> list[FakeRecord]:
        window = self._window
        start, end = self._position, min(window.published, self._position + max_records)
        if start >= end:
            return []
        taken = window.slices.get((start, end))
        if taken is None:
            taken = window.slices[(start, end)] = window.records[start:end]
        self._position = end
        return taken

    async def fetch(self, max_records: int, timeout: float) -> list[FakeRecord]:
        signal = self._window.signal
        waiter = signal.waiter()
        taken = self._take(max_records)
        if taken:
            signal.forget(waiter)
            return taken
        await signal.wait(waiter, timeout, self._alarm)
        return self._take(max_records)

    async def close(self) -> None:
        self._alarm.cancel()


def service(window: Window) -> StreamService:
    doc, check = contract(1, fields={"seq": "clear", "sent_at": "clear", "notes": "clear"})
    registry = Registry(
        products=dict(PRODUCTS),
        keys=dict(PUBLIC),
        histories={"c": build_history("c", [(doc, check)], [])},
    )
    ledger = FakeLedger()
    # As bench/fanout.py: as many streams as the benchmark opens.
    unlimited = QuotaSettings(
        defaults=Quotas(concurrent_streams=10_000), org_concurrent_streams=None
    )
    signer = CompactSigner(signing_key(KEYS["acme"]), typ=RECEIPT_TYPE)
    store = MemoryConsumptionStore()
    return StreamService(
        registry=lambda: registry,
        sources=lambda topic: WindowSource(window),
        codec=CursorCodec(b"k" * 32),
        limits=StreamLimits(),
        ledger=ledger,
        quotas=QuotaService(MemoryQuotaStore(), unlimited, GatewayMetrics()),
        datakeys=DataKeyService(FakeDataKeyStore(), max_records=10, max_age=3600),
        pseudonym_secret=b"p" * 32,
        on_delivery=ConsumptionTracker(store).note,
        service_levels=ServiceLevelTracker(
            store, registry=lambda: registry, ledger=ledger, sign=None
        ),
        receipts=ReceiptPolicy(),
        sign_receipt=signer,
    )


async def measure(streams: int, rounds: int, per_round: int, profile: bool) -> list[float]:
    window = Window()
    svc = service(window)
    partner = Partner(org="globex", client_id="globex",
                      token_expires_at=datetime(2026, 12, 30, tzinfo=UTC))  # fmt: skip
    received = [0] * streams
    done = asyncio.Event()
    expected = 0
    complete = 0  # streams that have every record published so far

    async def run(slot: int) -> None:
        stream = await svc.open(partner, "c", cursor=None, start=Start("latest"),
                                stream_format=StreamFormat.SSE)  # fmt: skip
        nonlocal complete
        async for data in stream.events(heartbeat=15.0):
            received[slot] += data.count(b"event: record")
            if received[slot] == expected:
                complete += 1
                if complete == streams:
                    done.set()

    tasks = [asyncio.create_task(run(n)) for n in range(streams)]
    await asyncio.sleep(0.5)  # every stream opened and waiting
    failed = [t for t in tasks if t.done()]
    if failed:
        raise RuntimeError(f"{len(failed)} streams did not open") from failed[0].exception()
    value = msgspec.json.encode({"seq": 0, "sent_at": 0.0, "notes": "x" * 40})
    took: list[float] = []
    profiler = cProfile.Profile() if profile else None
    for _ in range(rounds):
        expected += per_round
        complete = 0
        done.clear()
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        window.publish([value] * per_round)
        await done.wait()
        if profiler is not None:
            profiler.disable()
        took.append((time.perf_counter() - started) * 1000)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--records", type=int, default=14, help="records per round")
    parser.add_argument("--profile", action="store_true")
    args: Any = parser.parse_args()
    took = asyncio.run(measure(args.streams, args.rounds, args.records, args.profile))
    took.sort()
    median = took[len(took) // 2]
    print(f"{args.streams} tail streams, {args.records} records a round, {args.rounds} rounds:")
    print(f"  a round: median {median:.1f} ms, p90 {took[int(len(took) * 0.9)]:.1f} ms "
          f"({median * 1000 / args.streams:.1f} µs a wake-up)")  # fmt: skip
    held = median <= TARGET_MS * args.streams / 1000
    print(f"target: a round of 1,000 wake-ups within {TARGET_MS:.0f} ms of the gateway's own "
          f"work: {'held' if held else 'NOT held'} ({median:.1f} ms)")  # fmt: skip


if __name__ == "__main__":
    main()
