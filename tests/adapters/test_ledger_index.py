"""The ledger index answers what a report over the whole ledger answers (property-based)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters.stores.ledger_index import LedgerIndex
from gateway.core.ledger import DeliveryEntry
from gateway.services.report import build_report

T0 = datetime(2026, 11, 23, 23, 59, 58, tzinfo=UTC)


def entries_of(
    n: int, contract: str, version: str, steps: list[tuple[int, int]], end: int
) -> list[dict[str, Any]]:
    """A delivery's progress entries (cumulative records and bytes), then, by ``end``: none
    (still running or killed), its end, or its end written twice (a rebuilt chain)."""
    made, records, size = [], 0, 0
    by_day: dict[str, int] = {}
    for seconds, (more, extra) in enumerate([*steps, (0, 0)][: len(steps) + (1 if end else 0)], 1):
        records, size = records + more, size + extra
        day = (T0 + timedelta(seconds=seconds)).date().isoformat()
        by_day[day] = by_day.get(day, 0) + extra
        made.append((records, size, dict(by_day), T0 + timedelta(seconds=seconds)))
    out: list[dict[str, Any]] = []
    for i, (r, b, days, ended) in enumerate(made):
        final = end and i == len(made) - 1
        delivery = DeliveryEntry(
            kind="stream", contract=contract, versions=(version,), org="globex",
            client="globex", format="sse", start={0: 0}, end={0: r}, records=r, bytes=b,
            bytes_by_day=days, started=T0 + timedelta(seconds=n), ended=ended,
            end_reason="disconnected" if final else "in_progress", delivery=f"d{n}",
        )  # fmt: skip
        kind = "stream" if final else "progress"
        out.append({**delivery.details(), "kind": kind, "chain": "c", "seq": len(out)})
        if final and end == 2:
            out.append({**delivery.details(), "kind": kind, "chain": "c2", "seq": 0})
    return out


deliveries = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2"]),
        st.sampled_from(["sha256:a", "sha256:b"]),
        st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5000)), min_size=1, max_size=4),
        st.integers(0, 2),
    ),
    max_size=12,
)


@settings(max_examples=60)
@given(deliveries, st.randoms(use_true_random=False))
def test_the_index_answers_what_the_whole_ledger_says(
    specs: list[tuple[str, str, list[tuple[int, int]], int]], random: Any
) -> None:
    streams = [entries_of(n, *spec) for n, spec in enumerate(specs)]
    ledger: list[dict[str, Any]] = []
    while any(streams):  # deliveries interleave; each one's entries stay in order
        stream = random.choice([s for s in streams if s])
        ledger.append(stream.pop(0))
    index = LedgerIndex()
    cut = random.randint(0, len(ledger))
    index.add_all(ledger[:cut])  # read in two goes, as the follower does
    index.add_all(ledger[cut:])
    for contract in ("c1", "c2"):
        report = build_report(ledger, contract)
        found = index.deliveries(contract, limit=1000)
        assert sorted(found, key=lambda d: d.started) == report.deliveries
        assert index.count(contract) == len(report.deliveries)
        assert index.totals_by_version(contract) == report.totals_by_version()
        days = index.by_day(contract)
        assert {d: b for d, (_, b) in days.items() if b} == {
            d: b for d, b in report.bytes_by_day().items() if b
        }
        assert sum(r for r, _ in days.values()) == sum(d.records for d in report.deliveries)


def test_pages_are_the_latest_first() -> None:
    index = LedgerIndex()
    for n in range(5):
        index.add_all(entries_of(n, "c1", "sha256:a", [(1, 10)], 1))
    pages = [index.deliveries("c1", offset=o, limit=2) for o in (0, 2, 4)]
    assert [[d.started[17:19] for d in page] for page in pages] == [
        ["02", "01"],
        ["00", "59"],
        ["58"],
    ]
