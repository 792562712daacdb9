"""The ledger: an append-only, hash-chained record of contracts, tokens and deliveries.

Each gateway process writes its own chain (``chain`` = replica name and a start id). An entry::

    {"chain": "...", "seq": 7, "time": "2026-11-21T10:00:00.123Z", "kind": "stream",
     "contract": "acme-globex-orders", "version": "sha256:…", …details…,
     "prev": "sha256:<hash of entry 6>", "hash": "sha256:<hash of this entry>"}

``hash`` is the SHA-256 of the RFC 8785 canonical JSON of the entry without ``hash``. ``seq``
counts from 0 within a chain, and entry 0 has ``prev: null``. So an edited entry no longer
matches its hash, a removed one leaves a gap in ``seq`` and a broken ``prev`` link, and a
reordered one breaks both: ``verify`` reports each. (Truncating a chain's tail, or deleting a
whole chain, needs an anchor outside the ledger: see docs/ledger.md.)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import rfc8785

from gateway.core.times import rfc3339

KINDS = frozenset(
    {
        "chain_started",
        "contract",
        "statement",
        "signature",
        "token_issued",
        "stream",
        "pull",
        "progress",
    }
)
#: The members the chain writes itself; details that use one keep it as ``details_<name>``.
RESERVED = ("chain", "seq", "time", "kind", "prev", "hash")
#: Free text (a statement's reason, a refusal's detail) is kept to this many characters, so
#: that no entry grows past what the topic takes.
MAX_TEXT = 4096
#: The largest integer RFC 8785 (I-JSON) represents exactly.
MAX_SAFE_INTEGER = 2**53 - 1


def recordable(value: Any) -> Any:
    """``value`` as an entry can hold it, whatever it came from.

    Text that is not valid Unicode (a file name with undecodable bytes) is escaped
    (``\\udcff``); integers beyond ±(2^53 - 1) and non-finite floats become text; text longer
    than ``MAX_TEXT`` is truncated. An entry can
    then always be canonicalised, hashed and written: a strange value never stops recording.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value if len(value) <= MAX_TEXT else f"{value[:MAX_TEXT]}… (truncated)")
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {_text(str(k)): recordable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [recordable(v) for v in value]
    return _text(str(value))


def _text(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def timestamp(moment: datetime) -> str:
    """Ledger times: RFC 3339 UTC with milliseconds."""
    return rfc3339(moment, milliseconds=True)


def entry_hash(entry: Mapping[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return "sha256:" + hashlib.sha256(rfc8785.dumps(body)).hexdigest()


class Chain:
    """Appends entries to one chain (not thread-safe: one writer owns it)."""

    def __init__(self, chain: str) -> None:
        self.chain = chain
        self.seq = 0
        self.prev: str | None = None

    def append(self, time: str, kind: str, details: Mapping[str, Any]) -> dict[str, Any]:
        if kind not in KINDS:
            raise ValueError(f"unknown ledger entry kind {kind!r}")
        own = recordable(details)
        entry: dict[str, Any] = {
            **{f"details_{k}" if k in RESERVED else k: v for k, v in own.items()},
            "chain": self.chain,
            "seq": self.seq,
            "time": time,
            "kind": kind,
            "prev": self.prev,
        }
        entry["hash"] = entry_hash(entry)
        self.seq += 1
        self.prev = entry["hash"]
        return entry


@dataclass(frozen=True, slots=True)
class Problem:
    chain: str
    position: int  # the entry's position in what was read (0-based)
    seq: Any
    kind: str  # edited | removed | reordered | malformed
    detail: str


def verify(entries: Iterable[Mapping[str, Any]]) -> list[Problem]:
    """Every problem found, in reading order; an empty list means every chain is intact."""
    problems: list[Problem] = []
    last: dict[str, Mapping[str, Any]] = {}
    for position, entry in enumerate(entries):
        chain = entry.get("chain")
        seq = entry.get("seq")
        if not isinstance(chain, str) or not isinstance(seq, int) or "hash" not in entry:
            problems.append(Problem(str(chain), position, seq, "malformed", "not a ledger entry"))
            continue
        if entry_hash(entry) != entry["hash"]:
            problems.append(
                Problem(chain, position, seq, "edited", "the entry does not match its hash")
            )
        before = last.get(chain)
        expected_seq = 0 if before is None else int(before["seq"]) + 1
        expected_prev = None if before is None else before["hash"]
        if seq < expected_seq:
            problems.append(
                Problem(chain, position, seq, "reordered", f"seq {seq} after {expected_seq - 1}")
            )
        elif seq > expected_seq:
            problems.append(
                Problem(chain, position, seq, "removed", f"seq {expected_seq}..{seq - 1} missing")
            )
        elif entry.get("prev") != expected_prev:
            problems.append(
                Problem(chain, position, seq, "edited", "prev does not name the entry before")
            )
        if before is None or seq > int(before["seq"]):
            last[chain] = entry
    return problems


DELIVERY_KINDS = ("stream", "pull")
#: A delivery still running: what it has sent so far (written at least every second).
PROGRESS = "progress"


@dataclass(frozen=True)
class DeliveryEntry:
    """One stream or pull as the ledger holds it: written when it ends (``services/streams.py``)
    and read back by reports (``services/report.py``). ``details()`` is the entry's JSON."""

    kind: str  # "stream" | "pull"
    contract: str
    #: The versions it ran under, the one it started under first.
    versions: tuple[str, ...]
    org: str
    client: str
    format: str
    #: Per partition, the position it started at and the one after the last record sent.
    start: Mapping[int, int]
    end: Mapping[int, int]
    records: int
    bytes: int
    #: Bytes per UTC day, the unit of a daily volume quota.
    bytes_by_day: Mapping[str, int]
    started: datetime
    ended: datetime
    end_reason: str
    #: Names the delivery across its progress entries and its final one ("" before they were).
    delivery: str = ""
    #: Per partition, the first and last offset a resumed cursor pointed at that retention had
    #: already deleted: records the partner did not get and can no longer get.
    lost_to_retention: Mapping[int, tuple[int, int]] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        return {
            "delivery": self.delivery,
            "contract": self.contract,
            "version": self.versions[0],
            "versions": list(self.versions),
            "org": self.org,
            "client": self.client,
            "format": self.format,
            "from": {str(p): o for p, o in self.start.items()},
            "to": {str(p): o for p, o in self.end.items()},
            "records": self.records,
            "bytes": self.bytes,
            "bytes_by_day": dict(self.bytes_by_day),
            "started": timestamp(self.started),
            "ended": timestamp(self.ended),
            "end_reason": self.end_reason,
            **(
                {"lost_to_retention": {str(p): list(r) for p, r in self.lost_to_retention.items()}}
                if self.lost_to_retention
                else {}
            ),
        }

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> DeliveryEntry:
        """The delivery an entry of kind ``stream`` or ``pull`` records."""
        ended = datetime.fromisoformat(str(entry["ended"]))
        return cls(
            kind=str(entry["kind"]),
            contract=str(entry["contract"]),
            versions=tuple(entry["versions"]),
            org=str(entry["org"]),
            client=str(entry["client"]),
            format=str(entry["format"]),
            start={int(p): int(o) for p, o in entry["from"].items()},
            end={int(p): int(o) for p, o in entry["to"].items()},
            records=int(entry["records"]),
            bytes=int(entry["bytes"]),
            # Entries written before quotas existed: all on the day the delivery ended.
            bytes_by_day=dict(
                entry.get("bytes_by_day") or {ended.date().isoformat(): int(entry["bytes"])}
            ),
            started=datetime.fromisoformat(str(entry["started"])),
            ended=ended,
            end_reason=str(entry["end_reason"]),
            delivery=str(entry.get("delivery") or ""),
            lost_to_retention={
                int(p): (int(r[0]), int(r[1]))
                for p, r in (entry.get("lost_to_retention") or {}).items()
            },
        )
