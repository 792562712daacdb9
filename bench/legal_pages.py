"""Legal's delivery page over a large ledger: the index against reading every entry.

Builds 1,000,000 ledger entries as the gateway writes them (deliveries' progress and end entries
of 200 contracts, one of them busy with a tenth of all deliveries; token, checkpoint and
receipt entries between), feeds them to the ledger index as the follower does, and then times
the delivery page of the busy contract: (A) as it was built before the index, a report over
every entry; (B) from the index, one page of 50 deliveries with the totals by version and the
chart per day, rendered with the page's own template.

Prints the ingest rate and memory, (A) and (B), and the target: (B) under 1 s (issue 14).
Usage: python -m bench.legal_pages [--entries N]
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from gateway.adapters.http.routes.legal import deliveries_context, templates
from gateway.adapters.stores.ledger_index import LedgerIndex
from gateway.core.ledger import DeliveryEntry
from gateway.services.report import build_report

CONTRACTS = 200
BUSY = "acme-partner-000"
TARGET_SECONDS = 1.0
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ledger(total: int, seed: int = 7) -> list[dict[str, Any]]:
    """``total`` entries: per delivery 3 progress entries and its end, one other entry in ten."""
    rng = random.Random(seed)
    entries: list[dict[str, Any]] = []
    n = 0
    while len(entries) < total:
        contract = BUSY if rng.random() < 0.1 else f"acme-partner-{rng.randrange(CONTRACTS):03d}"
        started = T0 + timedelta(seconds=n * 30)
        records = 0
        for step in range(4):
            records += rng.randrange(1, 500)
            ended = started + timedelta(seconds=step + 1)
            delivery = DeliveryEntry(
                kind="stream", contract=contract, versions=("sha256:" + "a" * 64,),
                org="partner", client="partner", format="text/event-stream", start={0: 0, 1: 0},
                end={0: records, 1: records // 2}, records=records, bytes=records * 600,
                bytes_by_day={ended.date().isoformat(): records * 600}, started=started,
                ended=ended, end_reason="disconnected" if step == 3 else "in_progress",
                delivery=f"d{n}",
            )  # fmt: skip
            kind = "stream" if step == 3 else "progress"
            entries.append({**delivery.details(), "kind": kind, "chain": "c", "seq": len(entries)})
            if rng.random() < 0.1:
                entries.append({"kind": "token_issued", "org": "partner", "client": "partner"})
        n += 1
    return entries[:total]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args()
    built = time.perf_counter()
    entries = ledger(args.entries)
    print(f"{len(entries):,} ledger entries made in {time.perf_counter() - built:.1f} s")
    before = rss_mb()
    index = LedgerIndex()
    start = time.perf_counter()
    for at in range(0, len(entries), 10_000):  # in reads, as the follower gives them
        index.add_all(entries[at : at + 10_000])
    ingest = time.perf_counter() - start
    print(
        f"index: {len(entries) / ingest:,.0f} entries/s ({ingest:.1f} s), "
        f"{index.count(BUSY):,} deliveries of {BUSY}, max RSS +{rss_mb() - before:,.0f} MB"
    )
    start = time.perf_counter()
    report = build_report(entries, BUSY)
    whole = time.perf_counter() - start
    print(f"(A) report over every entry: {whole * 1000:,.0f} ms ({len(report.deliveries):,})")
    contract = SimpleNamespace(contract=BUSY, valid_from=T0)
    timings = []
    for page in (1, 2, 100):
        start = time.perf_counter()
        context = deliveries_context(index, contract, page=page)
        html = templates.get_template("legal/deliveries.html").render({**context, "request": None})
        timings.append(time.perf_counter() - start)
        assert BUSY in html
    worst = max(timings)
    print(
        "(B) the page from the index (pages 1, 2, 100): "
        + ", ".join(f"{t * 1000:.1f} ms" for t in timings)
    )
    print(f"A/B: {whole / worst:,.0f}x")
    held = worst < TARGET_SECONDS
    print(f"target: the page under {TARGET_SECONDS:.0f} s with {len(entries):,} entries — "
          f"{'HELD' if held else 'NOT HELD'} ({worst * 1000:.1f} ms)")  # fmt: skip


if __name__ == "__main__":
    main()
