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
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.core.canonical import MAX_SAFE_INTEGER, canonical_json
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
        "checkpoint",
        "anchored",
        "receipt",
        "acknowledgement",
        "service_levels",
    }
)
#: The members the chain writes itself; details that use one keep it as ``details_<name>``.
RESERVED = ("chain", "seq", "time", "kind", "prev", "hash")
#: Members kept exactly as given (``recordable`` would cut a long text in them).
VERBATIM = frozenset({"document", "receipt", "summary"})
#: Free text (a statement's reason, a refusal's detail) is kept to this many characters, so
#: that no entry grows past what the topic takes.
MAX_TEXT = 4096


def recordable(value: Any) -> Any:
    """``value`` as an entry can hold it, whatever it came from.

    Text that is not valid Unicode (a file name with undecodable bytes) is escaped
    (``\\udcff``); integers beyond ±(2^53 - 1) and non-finite floats become text; text longer
    than ``MAX_TEXT`` is truncated. An entry can
    then always be canonicalised, hashed and written: a strange value never stops recording.
    """
    kind = type(value)  # the common cases first: a progress entry a second per stream
    if kind is str and len(value) <= MAX_TEXT and value.isascii():
        return value
    if kind is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    if kind is dict:
        return {
            k if type(k) is str and k.isascii() else _text(str(k)): recordable(v)
            for k, v in value.items()
        }
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
    return "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()


#: How far a signed time may run ahead of the verifier's clock.
SKEW_SECONDS = 5.0
#: The kind of a signed chain head (see ``checkpoint_claims``).
CHECKPOINT = "checkpoint"


def checkpoint_claims(chain: str, seq: int, head: str, time: str, *, final: bool) -> bytes:
    """What a checkpoint signs: the chain, the seq and hash of its last entry, the time, and
    whether the chain ends there. RFC 8785 JSON, the payload of a compact JWS."""
    claims: dict[str, Any] = {
        "chain": chain,
        "seq": seq,
        "head": head,
        "time": time,
        "final": final,
    }
    return canonical_json(claims)


class Chain:
    """Appends entries to one chain (not thread-safe: one writer owns it)."""

    def __init__(self, chain: str) -> None:
        self.chain = chain
        self.seq = 0
        self.prev: str | None = None

    def append(self, time: str, kind: str, details: Mapping[str, Any]) -> dict[str, Any]:
        if kind not in KINDS:
            raise ValueError(f"unknown ledger entry kind {kind!r}")
        # A signed document is kept byte for byte (a version is known by the hash of exactly
        # its content); it was canonicalised before, so it can be.
        own = {_text(str(k)): v if k in VERBATIM else recordable(v) for k, v in details.items()}
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


@dataclass(frozen=True, slots=True)
class ChainProof:
    """How far a chain is proven by signed checkpoints."""

    chain: str
    entries: int
    #: The last seq a valid checkpoint covers (``-1``: none), and that checkpoint's time.
    proven: int
    proven_at: str | None
    #: Ended by a valid final checkpoint, or by a successor chain naming its last entry.
    closed: bool


#: Reads a checkpoint's compact JWS: its verified payload, or ``None`` when it does not verify.
CheckpointReader = Callable[[str], bytes | None]


def prove(
    entries: Sequence[Mapping[str, Any]],
    read_checkpoint: CheckpointReader,
    *,
    now: datetime,
    live_seconds: float,
    anchored: Sequence[str] = (),
) -> tuple[list[Problem], list[ChainProof]]:
    """What the signed checkpoints prove, beyond ``verify``'s links.

    A checkpoint's signed head must be the hash of the entry it names: a chain rewritten with
    fresh hashes no longer matches what was signed (``rewritten``); a checkpoint that does not
    verify is ``unsigned``. A chain must end with a final checkpoint, or be followed by a chain
    whose start names its last acknowledged entry (a replica that rebuilt its producer; only
    as far as that chain's own signed checkpoints cover its start), or be live (its latest
    signed checkpoint within ``live_seconds`` before ``now``: a running replica signs its head
    every few seconds, idle or not); otherwise its tail may have been cut, or its replica
    died: ``open`` says from which seq nothing is proven. Times are only trusted as signed.

    ``anchored`` are checkpoints (their compact JWS) kept outside the ledger (by a partner, a
    timestamping service: ``services/anchoring.py``). Each must still be in the ledger as
    signed: a chain cut below one, or deleted whole, is ``cut`` — what no check inside the
    ledger can see.
    """
    problems: list[Problem] = []
    hashes: dict[str, dict[int, str]] = {}
    for entry in entries:
        chain, seq = entry.get("chain"), entry.get("seq")
        if isinstance(chain, str) and isinstance(seq, int) and isinstance(entry.get("hash"), str):
            hashes.setdefault(chain, {})[seq] = entry["hash"]
    proven: dict[str, tuple[int, str]] = {}
    closed: set[str] = set()
    #: A chain given up, named by its successor: (old chain, successor, seq of the naming entry).
    named: list[tuple[str, str, int]] = []
    for position, entry in enumerate(entries):
        chain, seq = str(entry.get("chain")), entry.get("seq")
        if entry.get("kind") == "chain_started" and isinstance(entry.get("follows_seq"), int):
            follows = str(entry.get("follows"))
            if hashes.get(follows, {}).get(entry["follows_seq"]) == entry.get("follows_head"):
                named.append((follows, chain, int(seq) if isinstance(seq, int) else -1))
        if entry.get("kind") != CHECKPOINT:
            continue
        payload = read_checkpoint(str(entry.get("signature")))
        claims = _claims(payload)
        if claims is None or claims.get("chain") != chain:
            problems.append(
                Problem(
                    chain, position, seq, "unsigned", "the checkpoint's signature does not verify"
                )
            )
            continue
        covered = claims.get("seq")
        if not isinstance(covered, int) or hashes[chain].get(covered) != claims.get("head"):
            problems.append(
                Problem(
                    chain,
                    position,
                    seq,
                    "rewritten",
                    f"entry {covered} is not the one this checkpoint signed",
                )
            )
            continue
        if covered > proven.get(chain, (-1, ""))[0]:
            proven[chain] = (covered, str(claims.get("time")))
        if claims.get("final") is True and covered == max(hashes[chain]) - 1:
            closed.add(chain)
    # A successor's word counts only where its own signed checkpoints cover it.
    closed.update(old for old, new, at in named if proven.get(new, (-1, ""))[0] >= at >= 0)
    for token in anchored:
        claims = _claims(read_checkpoint(token))
        if claims is None:
            problems.append(
                Problem("?", -1, None, "unsigned", "an anchored checkpoint does not verify")
            )
            continue
        chain, covered = str(claims.get("chain")), claims.get("seq")
        found = hashes.get(chain, {}).get(covered) if isinstance(covered, int) else None
        if chain not in hashes:
            problems.append(
                Problem(chain, -1, covered, "cut", "the whole chain is gone; an anchor holds it")
            )
        elif found is None:
            problems.append(
                Problem(chain, -1, covered, "cut", f"entry {covered}, anchored outside, is gone")
            )
        elif found != claims.get("head"):
            problems.append(
                Problem(chain, -1, covered, "rewritten", f"entry {covered} is not the one anchored")
            )
    proofs = []
    for chain, seqs in hashes.items():
        last, at = proven.get(chain, (-1, None))
        proof = ChainProof(chain, len(seqs), last, at, chain in closed)
        proofs.append(proof)
        if proof.closed or _recent(at, now, live_seconds):
            continue
        since = f"since {at}" if at else "at all"
        problems.append(
            Problem(
                chain,
                -1,
                last + 1,
                "open",
                f"no closing checkpoint: entries from seq {last + 1} on are not proven {since} "
                "(its tail was cut, or its replica stopped without closing it)",
            )
        )
    return problems, proofs


def _claims(payload: bytes | None) -> dict[str, Any] | None:
    if payload is None:
        return None
    try:
        claims = json.loads(payload)
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def _recent(at: str | None, now: datetime, seconds: float) -> bool:
    if at is None:
        return False
    try:
        moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return False
    # Never from the future (beyond a little clock skew): that time was not written now.
    return -SKEW_SECONDS <= (now - moment).total_seconds() <= seconds


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
