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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785

KINDS = frozenset({"chain_started", "contract", "statement", "token_issued", "stream", "pull"})


def timestamp(moment: datetime) -> str:
    """Ledger times: RFC 3339 UTC with milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        entry: dict[str, Any] = {
            **details,
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
