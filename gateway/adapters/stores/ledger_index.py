"""An index of the ledger's deliveries, so that legal's pages read a few rows, not the topic.

Fed with every entry the process reads from the ledger (at start, then every second by the
follower, ``services/container.py``), it keeps one row per delivery (its latest progress, or
its end: an end is never replaced by a progress; an entry written again on a new chain is the
same delivery) in SQLite, ordered by start per contract for paging, and per contract running
totals by version and by UTC day in memory. It is rebuilt from the ledger at every start, as
the archive is, so there is nothing to keep consistent on disk. The ledger stays the record;
the index only answers faster.

Records per day are counted on the day each progress or end entry recorded them (a delivery
that spans midnight counts on both days); bytes per day are the deliveries' own
``bytes_by_day``, the quota's count.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from gateway.core.ledger import DELIVERY_KINDS, PROGRESS, DeliveryEntry
from gateway.services.report import Delivery, delivery_row

SCHEMA = """
CREATE TABLE deliveries (
    key TEXT PRIMARY KEY,
    contract TEXT NOT NULL,
    started TEXT NOT NULL,
    entry BLOB NOT NULL
);
CREATE INDEX deliveries_by_contract ON deliveries (contract, started);
"""


@dataclass(slots=True)
class _Seen:
    """What the totals hold of one delivery (its latest entry read)."""

    contract: str
    finished: bool
    records: int
    bytes: int
    version: str
    bytes_by_day: dict[str, int]


class LedgerIndex:
    def __init__(self, path: str = ":memory:") -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}
        #: contract -> version -> [deliveries, records, bytes]
        self._versions: dict[str, dict[str, list[int]]] = {}
        #: contract -> UTC day -> [records, bytes]
        self._days: dict[str, dict[str, list[int]]] = {}
        self._numbers: dict[str, dict[str, int]] = {}
        self.entries = 0

    def add_all(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Index ``entries`` (in ledger order); anything that is not a delivery or a contract
        version is passed over. The totals move with each entry; a delivery's row is written
        once per call, from the last of its entries."""
        with self._lock:
            rows: dict[str, Mapping[str, Any]] = {}
            for entry in entries:
                self.entries += 1
                kind = entry.get("kind")
                if kind in _DELIVERIES:
                    key = self._delivery(entry, finished=kind != PROGRESS)
                    if key is not None:
                        rows[key] = entry
                elif kind == "contract" and entry.get("event") == "version":
                    number = entry.get("number")
                    if isinstance(number, int):
                        contract = str(entry.get("contract"))
                        self._numbers.setdefault(contract, {})[str(entry.get("version"))] = number
            self._db.executemany(
                "INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, ?)",
                [
                    (key, str(e["contract"]), str(e["started"]), orjson.dumps(e))
                    for key, e in rows.items()
                ],
            )

    def _delivery(self, entry: Mapping[str, Any], *, finished: bool) -> str | None:
        try:
            contract = str(entry["contract"])
            records, size = int(entry["records"]), int(entry["bytes"])
            versions = entry["versions"]
            version = str(versions[0]) if versions else ""
            day = str(entry["ended"])[:10]
            by_day = {str(d): int(n) for d, n in (entry.get("bytes_by_day") or {day: size}).items()}
            entry["started"]  # the row is ordered by it: an entry without one is passed over
        except (KeyError, ValueError, TypeError, IndexError, AttributeError):
            return None  # not one the gateway wrote: the verifier says so, the index passes
        key = str(entry.get("delivery") or f"{entry.get('chain')}:{entry.get('seq')}")
        old = self._seen.get(key)
        if old is not None and old.finished and not finished:
            return None  # a progress entry read after the end it led to
        self._seen[key] = _Seen(contract, finished, records, size, version, by_day)
        totals = self._versions.setdefault(contract, {})
        if old is not None:
            before = totals[old.version]
            before[0] -= 1
            before[1] -= old.records
            before[2] -= old.bytes
        now = totals.setdefault(version, [0, 0, 0])
        now[0] += 1
        now[1] += records
        now[2] += size
        days = self._days.setdefault(contract, {})
        counted = days.setdefault(day, [0, 0])
        counted[0] += records - (old.records if old else 0)
        for d, n in by_day.items():
            days.setdefault(d, [0, 0])[1] += n
        if old is not None:
            for d, n in old.bytes_by_day.items():
                days[d][1] -= n
        return key

    def deliveries(self, contract: str, *, offset: int = 0, limit: int = 50) -> list[Delivery]:
        """The contract's deliveries, the latest started first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, entry FROM deliveries WHERE contract = ? "
                "ORDER BY started DESC, key LIMIT ? OFFSET ?",
                (contract, limit, offset),
            ).fetchall()
            finished = {key: self._seen[key].finished for key, _ in rows}
        found = []
        for key, raw in rows:
            delivery = DeliveryEntry.from_entry(orjson.loads(raw))
            if not finished[key]:
                delivery = replace(delivery, end_reason="unfinished")
            found.append(delivery_row(delivery))
        return found

    def count(self, contract: str) -> int:
        with self._lock:
            return sum(t[0] for t in self._versions.get(contract, {}).values())

    def totals_by_version(self, contract: str) -> dict[str, dict[str, int]]:
        with self._lock:
            totals = self._versions.get(contract, {})
            return {
                v: {"deliveries": d, "records": r, "bytes": b}
                for v, (d, r, b) in sorted(totals.items())
                if d
            }

    def by_day(self, contract: str) -> dict[str, tuple[int, int]]:
        """Records and bytes per UTC day, oldest first."""
        with self._lock:
            days = self._days.get(contract, {})
            return {d: (r, b) for d, (r, b) in sorted(days.items()) if r or b}

    def version_numbers(self, contract: str) -> dict[str, int]:
        with self._lock:
            return dict(self._numbers.get(contract, {}))


_DELIVERIES = frozenset({*DELIVERY_KINDS, PROGRESS})
