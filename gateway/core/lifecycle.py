"""A contract's life: versions chained by amendments, and signed statements.

::

    draft ──both sign──▶ active ──valid_until──▶ expired
                           │  ▲
                 suspend   │  │ resume            (provider-signed statements)
                           ▼  │
                        suspended
    active | suspended ──revoke──▶ revoked        (final; signed by either party)

- Version N+1 names version N by ``supersedes: sha256:<hex>`` (the bytes both signed). The chain
  is the longest prefix of versions 1, 2, … in which every version is signed by both parties and
  names the one before; a version past a break is refused and never governs.
- The governing version at time ``t`` is the newest chained version whose ``valid_from`` has
  come. The contract is active iff that version's ``valid_until`` has not passed and no
  suspension or revocation is in force.
- Statements take effect at ``issued_at``, in that order. One that the state does not allow
  (resume without suspension, anything after revocation, suspension by the consumer) is refused.

Everything here is pure: ``now`` is a parameter.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.core.contracts import (
    Contract,
    ContractDocument,
    ContractState,
    FieldAction,
    FieldRule,
    StatementDocument,
    StatementKind,
    Verdict,
    validity_at,
)


@dataclass(frozen=True, slots=True)
class VersionEntry:
    doc: ContractDocument
    #: The version's own check (signatures, product, provider), or why it is outside the chain.
    check: Verdict
    chained: bool


@dataclass(frozen=True, slots=True)
class StatementEntry:
    doc: StatementDocument
    accepted: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Status:
    """A contract at one moment: its verdict and the version that governs (if any)."""

    verdict: Verdict
    governing: ContractDocument | None


#: Before and after any moment a contract names.
_BEGINNING = datetime.min.replace(tzinfo=UTC)
_END = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ContractHistory:
    contract_id: str
    versions: tuple[VersionEntry, ...]
    statements: tuple[StatementEntry, ...] = field(default=())
    #: The last status computed and the span ``[since, until)`` it holds for: live streams ask
    #: whenever their last answer may no longer hold, and the status changes only where a
    #: version's validity starts or ends or a statement is issued. One tuple, replaced whole
    #: (threads read it).
    _memo: list[tuple[datetime, datetime, Status | None]] = field(
        default_factory=lambda: [(_END, _BEGINNING, None)],
        init=False, compare=False, hash=False, repr=False,
    )  # fmt: skip

    @property
    def chain(self) -> list[ContractDocument]:
        return [v.doc for v in self.versions if v.chained]

    @property
    def latest(self) -> ContractDocument:
        return self.versions[-1].doc

    def status_at(self, now: datetime) -> Status:
        since, until, status = self._memo[0]
        if status is not None and since <= now < until:
            return status
        status = self.status_computed(now)
        moments = self._moments()
        after = bisect.bisect_right(moments, now)
        since = moments[after - 1] if after else _BEGINNING
        until = moments[after] if after < len(moments) else _END
        self._memo[0] = (since, until, status)
        return status

    def steady_until(self, now: datetime) -> datetime:
        """The first moment after ``now`` at which the status may change."""
        self.status_at(now)
        since, until, _ = self._memo[0]
        return until if since <= now < until else now

    def _moments(self) -> list[datetime]:
        """Where the status may change: validity bounds of the chain, statements issued."""
        moments = {s.doc.statement.issued_at for s in self.statements}
        for doc in self.chain:
            moments.update((doc.contract.valid_from, doc.contract.valid_until))
        return sorted(moments)

    def status_computed(self, now: datetime) -> Status:
        """``status_at``, computed afresh."""
        chain = self.chain
        if not chain:
            first = self.versions[0]
            return Status(first.check, None)
        started = [doc for doc in chain if doc.contract.valid_from <= now]
        governing = started[-1] if started else None
        state = _statement_state(self.statements, now)
        if state is not None:
            kind, entry = state
            if kind is StatementKind.REVOKE:
                return Status(_stated(ContractState.REVOKED, "revoked", entry), governing)
            return Status(_stated(ContractState.SUSPENDED, "suspended", entry), governing)
        if governing is None:
            return Status(validity_at(chain[0].contract, now), None)
        return Status(validity_at(governing.contract, now), governing)


def _stated(state: ContractState, reason: str, entry: StatementEntry) -> Verdict:
    s = entry.doc.statement
    return Verdict(
        state, reason, f"{reason} by {s.issued_by} at {s.issued_at.isoformat()}: {s.reason}"
    )


def _statement_state(
    statements: Sequence[StatementEntry], now: datetime
) -> tuple[StatementKind, StatementEntry] | None:
    """The suspension or revocation in force at ``now``, if any."""
    current: tuple[StatementKind, StatementEntry] | None = None
    for entry in statements:
        if not entry.accepted or entry.doc.statement.issued_at > now:
            continue
        kind = entry.doc.statement.statement
        current = None if kind is StatementKind.RESUME else (kind, entry)
    return current


def build_history(
    contract_id: str,
    versions: Sequence[tuple[ContractDocument, Verdict]],
    statements: Sequence[tuple[StatementDocument, Verdict | None]] = (),
) -> ContractHistory:
    """Order versions, check the amendment chain, and run the statements' state machine.

    ``versions`` pairs each document with its own check (``assess``); ``statements`` pairs each
    with ``None`` when its signature verified, or the verdict that refuses it.
    """
    entries: list[VersionEntry] = []
    previous: ContractDocument | None = None
    intact = True
    for doc, check in sorted(versions, key=lambda pair: pair[0].contract.version):
        contract = doc.contract
        reason = None
        if not intact:
            reason = ("broken_chain", "an earlier version is missing or not in force")
        elif previous is None and contract.version != 1:
            reason = ("broken_chain", f"version {contract.version} has no version 1 before it")
        elif previous is not None and contract.version != previous.contract.version + 1:
            reason = ("broken_chain", f"version {previous.contract.version + 1} is missing")
        elif previous is not None and contract.supersedes != previous.hash:
            reason = ("broken_chain", f"supersedes {contract.supersedes}, not {previous.hash}")
        elif previous is not None and _parties(contract) != _parties(previous.contract):
            reason = ("broken_chain", "an amendment cannot change the parties or the product")
        if reason is not None:
            check = Verdict(ContractState.REFUSED, *reason)
        chained = check.state not in (ContractState.REFUSED, ContractState.DRAFT)
        entries.append(VersionEntry(doc, check, chained))
        intact = intact and chained
        previous = doc
    chain_hashes = {e.doc.hash for e in entries if e.chained}
    provider = entries[0].doc.contract.provider if entries else None
    consumer = entries[0].doc.contract.consumer if entries else None
    accepted: list[StatementEntry] = []
    state: StatementKind | None = None  # None: normal, SUSPEND: suspended, REVOKE: revoked
    for said, refusal in sorted(statements, key=lambda pair: pair[0].statement.issued_at):
        s = said.statement
        if refusal is not None:
            accepted.append(StatementEntry(said, False, refusal.reason))
            continue
        problem = None
        if s.contract_version not in chain_hashes:
            problem = "unknown_version"
        elif s.issued_by not in (provider, consumer):
            problem = "not_a_party"
        elif state is StatementKind.REVOKE:
            problem = "already_revoked"
        elif (
            s.statement in (StatementKind.SUSPEND, StatementKind.RESUME) and s.issued_by != provider
        ):
            problem = "provider_only"
        elif s.statement is StatementKind.SUSPEND and state is StatementKind.SUSPEND:
            problem = "already_suspended"
        elif s.statement is StatementKind.RESUME and state is not StatementKind.SUSPEND:
            problem = "not_suspended"
        if problem is None:
            state = None if s.statement is StatementKind.RESUME else s.statement
        accepted.append(StatementEntry(said, problem is None, problem or "accepted"))
    return ContractHistory(contract_id, tuple(entries), tuple(accepted))


def _parties(contract: Contract) -> tuple[str, str, str]:
    return (contract.provider, contract.consumer, contract.product)


def _effective(fields: Mapping[str, FieldRule], path: str) -> FieldRule | None:
    """The rule that decides ``path``: its own, or its nearest listed ancestor's."""
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        rule = fields.get(".".join(parts[:n]))
        if rule is not None:
            return rule
    return None


def _sent(rule: FieldRule | None) -> bool:
    return rule is not None and rule.action is not FieldAction.DROP


def grants_no_less(old: ContractDocument, new: ContractDocument) -> bool:
    """Whether a stream relying on ``old`` may go on under ``new`` unchanged.

    Everything ``old`` sent is still sent in the same form, nothing inside it changes form, and
    the row filter is the same (or gone).
    """
    a, b = old.contract, new.contract
    if _parties(a) != _parties(b) or (b.filter is not None and b.filter != a.filter):
        return False
    for path, rule in a.fields.items():
        if _sent(rule) and _effective(b.fields, path) != rule:
            return False
    for path, rule in b.fields.items():  # a new rule inside something old sent whole
        before = _effective(a.fields, path)
        if _sent(before) and before != rule and path not in a.fields:
            return False
    return True


@dataclass(frozen=True, slots=True)
class StreamEnds:
    """A live stream must end now: ``reason`` for the ``end`` event, with its extra members."""

    reason: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamCarriesOn:
    """The stream goes on under ``version``, a new version that grants no less."""

    version: ContractDocument


#: How long a live stream goes on while its delivery cannot be recorded. Its delivery entry is
#: queued in memory and written when the ledger answers again; this bounds what a replica that
#: also dies in that window could have sent unrecorded to this many seconds of the stream.
LEDGER_GRACE_SECONDS = 5.0


def stream_decision(
    *,
    now: datetime,
    token_expires_at: datetime,
    exhausted: tuple[int, str] | None,
    status: Status,
    version: ContractDocument,
    unrecordable_for: float = 0.0,
) -> StreamEnds | StreamCarriesOn | None:
    """What happens to a live stream relying on ``version`` at ``now`` (``None``: nothing).

    In order: the ledger has not been writable for ``LEDGER_GRACE_SECONDS``
    (``unrecordable_for``); the token expired; the day's volume ran out (``exhausted`` is its
    ``(retry_after, detail)``); the contract is no longer active; a new version governs that
    changes the terms (or any version, if the stream sends pseudonyms, which belong to one
    version) — otherwise the stream carries on under the new version.
    """
    if unrecordable_for >= LEDGER_GRACE_SECONDS:
        return StreamEnds(
            "ledger_unavailable", {"detail": "deliveries cannot be recorded now", "retry_after": 5}
        )
    if now >= token_expires_at:
        return StreamEnds("token_expired")
    if exhausted is not None:
        retry_after, detail = exhausted
        return StreamEnds("quota_exhausted", {"retry_after": retry_after, "detail": detail})
    if not status.verdict.active or status.governing is None:
        return StreamEnds(status.verdict.reason, {"detail": status.verdict.detail})
    governing = status.governing
    if governing.hash == version.hash:
        return None
    hashes = any(r.action is FieldAction.HASH for r in version.contract.fields.values())
    if hashes or not grants_no_less(version, governing):
        return StreamEnds(
            "superseded", {"detail": f"version {governing.contract.version} changes the terms"}
        )
    return StreamCarriesOn(governing)
