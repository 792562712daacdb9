"""What was sent to a partner, when, under which contract versions, from the ledger's entries.

A delivery's records and offsets are what the gateway wrote to the connection. A client may
hang up before reading all of it; its next cursor (the next delivery's first offsets) shows
where it really was, so overlapping ranges are records sent again on resumption.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from gateway.core.ledger import DELIVERY_KINDS, PROGRESS, DeliveryEntry, timestamp


@dataclass(frozen=True)
class Delivery:
    kind: str
    started: str
    ended: str
    org: str
    client: str
    format: str
    versions: list[str]
    records: int
    bytes: int
    #: Per partition, the first and last offset delivered (inclusive); absent when none.
    ranges: dict[str, tuple[int | None, int]]
    end_reason: str
    #: Bytes per UTC day, the unit of a daily volume quota.
    bytes_by_day: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Delivery:
        ranges = {p: (r[0], r[1]) for p, r in dict(data["ranges"]).items()}
        return cls(**{**data, "ranges": ranges})


@dataclass
class Report:
    contract: str
    deliveries: list[Delivery] = field(default_factory=list)
    #: version hash → version number, from the ledger's contract entries.
    version_numbers: dict[str, int] = field(default_factory=dict)

    def totals_by_version(self) -> dict[str, dict[str, int]]:
        totals: dict[str, dict[str, int]] = {}
        for d in self.deliveries:
            t = totals.setdefault(d.versions[0], {"deliveries": 0, "records": 0, "bytes": 0})
            t["deliveries"] += 1
            t["records"] += d.records
            t["bytes"] += d.bytes
        return totals

    def bytes_by_day(self) -> dict[str, int]:
        """Bytes sent per UTC day: what a ``bytes_per_day`` quota is held against."""
        totals: dict[str, int] = {}
        for d in self.deliveries:
            for day, sent in d.bytes_by_day.items():
                totals[day] = totals.get(day, 0) + sent
        return dict(sorted(totals.items()))

    def as_json(self) -> dict[str, Any]:
        return {
            "contract": self.contract,
            "versions": self.version_numbers,
            "totals_by_version": self.totals_by_version(),
            "bytes_by_day": self.bytes_by_day(),
            "deliveries": [d.as_json() for d in self.deliveries],
        }


def _ranges(start: Mapping[int, int], end: Mapping[int, int]) -> dict[str, tuple[int | None, int]]:
    ranges: dict[str, tuple[int | None, int]] = {}
    for partition, stop in end.items():
        begin = start.get(partition, -2)
        if stop > max(begin, 0) or (begin < 0 and stop > 0):
            # From the partition's beginning (-2), the first offset is unknown here: None.
            ranges[str(partition)] = (begin if begin >= 0 else None, stop - 1)
    return ranges


def build_report(
    entries: Iterable[Mapping[str, Any]],
    contract: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Report:
    report = Report(contract)
    finished: list[DeliveryEntry] = []
    running: dict[str, DeliveryEntry] = {}  # the last progress of each delivery
    for entry in entries:
        if entry.get("contract") != contract:
            continue
        kind = entry.get("kind")
        if kind == "contract" and entry.get("event") == "version":
            report.version_numbers[str(entry["version"])] = int(entry["number"])
        elif kind in DELIVERY_KINDS:
            finished.append(DeliveryEntry.from_entry(entry))
        elif kind == PROGRESS:
            progress = DeliveryEntry.from_entry(entry)
            running[progress.delivery] = progress
    # An entry written again on a new chain after its producer failed (it may have been
    # written the first time too) is the same delivery: counted once.
    ended = list({d.delivery or str(n): d for n, d in enumerate(finished)}.values())
    for done in ended:
        running.pop(done.delivery, None)
    # A delivery with progress but no end is still running, or its replica died: what it had
    # recorded is shown as unfinished.
    unfinished = [replace(p, end_reason="unfinished") for p in running.values()]
    for delivery in ended + unfinished:
        if (since and delivery.ended < since) or (until and delivery.started > until):
            continue
        report.deliveries.append(delivery_row(delivery))
    report.deliveries.sort(key=lambda d: d.started)
    return report


def delivery_row(delivery: DeliveryEntry) -> Delivery:
    """A delivery as reports and pages show it."""
    return Delivery(
        kind=delivery.kind,
        started=timestamp(delivery.started),
        ended=timestamp(delivery.ended),
        org=delivery.org,
        client=delivery.client,
        format=delivery.format,
        versions=list(delivery.versions),
        records=delivery.records,
        bytes=delivery.bytes,
        ranges=_ranges(delivery.start, delivery.end),
        end_reason=delivery.end_reason,
        bytes_by_day=dict(delivery.bytes_by_day),
    )


def render_table(report: Report) -> str:
    def version(h: str) -> str:
        number = report.version_numbers.get(h)
        return f"v{number}" if number else h[:15]

    lines = [f"Deliveries under contract {report.contract} (records and offsets sent)", ""]
    lines.append(
        f"{'started':24} {'ended':24} {'kind':6} {'org':10} {'versions':9} {'records':>8} "
        f"{'bytes':>10}  offsets (partition: first-last)  end"
    )
    for d in report.deliveries:
        ranges = (
            ", ".join(
                f"{p}: {'start' if a is None else a}-{b}" for p, (a, b) in sorted(d.ranges.items())
            )
            or "-"
        )
        versions = ",".join(version(h) for h in d.versions)
        lines.append(
            f"{d.started:24} {d.ended:24} {d.kind:6} {d.org:10} {versions:9} "
            f"{d.records:>8} {d.bytes:>10}  {ranges}  {d.end_reason}"
        )
    lines.append("")
    for h, t in report.totals_by_version().items():
        counts = f"{t['deliveries']} deliveries, {t['records']} records, {t['bytes']} bytes"
        lines.append(f"{version(h)}: {counts}")
    for day, sent in report.bytes_by_day().items():
        lines.append(f"{day} (UTC): {sent} bytes")
    return "\n".join(lines)
