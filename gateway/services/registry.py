"""The contract registry: products, organisations' public keys, contract versions and statements.

Built from documents (``adapters/stores/contracts_dir.py`` reads them from a directory that can
be kept in git and reviewed as pull requests). Loading never fails as a whole: a document that
cannot be used is refused, logged with its reason, and kept in ``refusals``; every other
contract still works. Every replica that reads the same documents reaches the same state (the
evaluation is deterministic given the time).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from joserfc.jwk import KeySet

from gateway.core.archive import ContractArchive
from gateway.core.contracts import (
    ContractDocument,
    ContractState,
    Product,
    SchemaFile,
    StatementDocument,
    Verdict,
    assess,
    parse_contract,
    parse_product,
    parse_statement,
    verify_signed_by,
)
from gateway.core.documents import load_yaml
from gateway.core.jose import parse_public_jwks
from gateway.core.lifecycle import ContractHistory, Status, build_history
from gateway.errors import ContractNotActive, ContractNotFound, DocumentInvalid, SignatureInvalid

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refusal:
    source: str
    reason: str
    detail: str
    #: The contract and consumer the refused document names, where it could be read that far:
    #: its consumer is then told why (403) rather than that no such contract exists (404).
    contract: str | None = None
    consumer: str | None = None


@dataclass
class Registry:
    products: dict[str, Product] = field(default_factory=dict)
    keys: dict[str, KeySet] = field(default_factory=dict)
    histories: dict[str, ContractHistory] = field(default_factory=dict)
    refusals: list[Refusal] = field(default_factory=list)

    def refuse(
        self, source: str, reason: str, detail: str, names: Mapping[str, Any] | None = None
    ) -> None:
        """Refuse a document; ``names`` is what it says it is (for its consumer's answer)."""
        said = {k: v for k, v in (names or {}).items() if isinstance(v, str)}
        refusal = Refusal(source, reason, detail, said.get("contract"), said.get("consumer"))
        self.refusals.append(refusal)
        log.warning("refused %s: %s (%s)", source, reason, detail)

    def status(self, contract_id: str, now: datetime) -> Status:
        """The contract's status; ``withdrawn`` once it is no longer in the registry (a live
        stream on it ends, it is never an error)."""
        history = self.histories.get(contract_id)
        if history is None:
            detail = f"contract {contract_id!r} is no longer among the gateway's contracts"
            return Status(Verdict(ContractState.WITHDRAWN, "withdrawn", detail), None)
        return history.status_at(now)

    def steady_until(self, contract_id: str, now: datetime) -> datetime:
        """Until when the contract's status at ``now`` holds (it may change then); ``now``
        for a contract no longer here."""
        history = self.histories.get(contract_id)
        return now if history is None else history.steady_until(now)

    def verdict(self, contract_id: str, now: datetime) -> Verdict:
        return self.status(contract_id, now).verdict

    def history_for(self, org: str, contract_id: str) -> ContractHistory:
        """The contract if ``org`` is its consumer; otherwise exactly as if it did not exist.

        A contract refused as a whole (no version of it could be used) is ``ContractNotActive``
        with the reason for the consumer it names."""
        history = self.histories.get(contract_id)
        if history is None:
            for refusal in self.refusals:
                if refusal.contract == contract_id and refusal.consumer == org:
                    # The detail names the provider's files: the partner gets the reason.
                    raise ContractNotActive(
                        f"contract {contract_id!r} is refused ({refusal.reason}); its provider "
                        "has been told why",
                        reason=refusal.reason,
                    )
        if history is None or history.latest.contract.consumer != org:
            raise ContractNotFound(f"no contract {contract_id!r}")
        return history

    def contract_for(self, org: str, contract_id: str, now: datetime) -> ContractDocument:
        """The version governing now (or the newest version, if none governs)."""
        history = self.history_for(org, contract_id)
        return history.status_at(now).governing or history.latest

    def active_contract_for(self, org: str, contract_id: str, now: datetime) -> ContractDocument:
        status = self.history_for(org, contract_id).status_at(now)
        if not status.verdict.active or status.governing is None:
            raise ContractNotActive(
                f"contract {contract_id!r} is not active: {status.verdict.detail}",
                reason=status.verdict.reason,
            )
        return status.governing

    def contracts_relying_on(self, product: str, now: datetime) -> list[ContractDocument]:
        """The contracts on ``product`` in force now or signed to start later: those a change
        of its schema must not break."""
        relying = []
        for cid in sorted(self.histories):
            status = self.histories[cid].status_at(now)
            doc = status.governing or self.histories[cid].latest
            if doc.contract.product != product:
                continue
            if status.verdict.active or status.verdict.reason == "not_yet_valid":
                relying.append(doc)
        return relying

    def active_contracts_for(self, org: str, now: datetime) -> list[ContractDocument]:
        active = []
        for cid in sorted(self.histories):
            history = self.histories[cid]
            status = history.status_at(now)
            consumer = history.latest.contract.consumer
            if consumer == org and status.verdict.active and status.governing is not None:
                active.append(status.governing)
        return active


def add_keys(registry: Registry, source: str, org: str, text: str) -> None:
    """An organisation's public JWKS, or a refusal saying why it cannot be used."""
    try:
        registry.keys[org] = parse_public_jwks(json.loads(text), source=source)
    except (DocumentInvalid, ValueError, RecursionError) as exc:
        registry.refuse(source, "invalid_keys", getattr(exc, "detail", str(exc)))


def add_product(
    registry: Registry, source: str, text: str, schema_file: SchemaFile | None = None
) -> None:
    try:
        data = load_yaml(text, source=source)
        product = parse_product(data, source=source, text=text, schema_file=schema_file)
    except DocumentInvalid as exc:
        registry.refuse(source, "invalid_document", exc.detail)
        return
    registry.products[product.product] = product


def add_documents(
    registry: Registry,
    documents: Iterable[tuple[str, str]],
    *,
    gateway_org: str | None,
    now: datetime,
    archive: ContractArchive | None = None,
) -> None:
    """Contract versions and statements (``(source, text)`` pairs), then each contract's
    history. Keys and products must be in the registry already. ``archive`` adds the
    countersignatures posted over the API, and the versions before a contract's oldest file
    that the gateway verified before (``core/archive.py``)."""
    versions: dict[str, dict[int, ContractDocument]] = {}
    statements: dict[str, list[tuple[StatementDocument, Verdict | None]]] = {}
    for source, text in documents:
        data: dict[str, Any] = {}
        try:
            data = load_yaml(text, source=source)
            if "statement" in data:
                said = parse_statement(data, source=source, text=text)
                statements.setdefault(said.statement.contract, []).append(
                    (said, _statement_check(said, registry))
                )
                continue
            doc = parse_contract(data, source=source, text=text)
        except DocumentInvalid as exc:
            registry.refuse(source, "invalid_document", exc.detail, data)
            continue
        c = doc.contract
        known = versions.setdefault(c.contract, {})
        if c.version in known:
            other = known[c.version].source
            registry.refuse(source, "duplicate_version", f"version {c.version} is also {other}")
            continue
        known[c.version] = archive.signed(doc, registry.keys) if archive is not None else doc
    for cid, by_version in sorted(versions.items()):
        if archive is not None:
            _archived_predecessors(by_version, archive, registry.keys)
        checked = [
            (doc, assess(doc, products=registry.products, keys=registry.keys,
                         gateway_org=gateway_org, now=now))
            for doc in by_version.values()
        ]  # fmt: skip
        history = build_history(cid, checked, statements.pop(cid, []))
        for entry in history.versions:
            if entry.check.state is ContractState.REFUSED:
                registry.refuse(entry.doc.source, entry.check.reason, entry.check.detail)
        for stated in history.statements:
            if not stated.accepted:
                registry.refuse(stated.doc.source, stated.reason, "statement not accepted")
        registry.histories[cid] = history
    for cid, orphans in statements.items():
        for said, _ in orphans:
            registry.refuse(said.source, "unknown_contract", f"no contract {cid!r}")


def _archived_predecessors(
    by_version: dict[int, ContractDocument],
    archive: ContractArchive,
    keys: Mapping[str, KeySet],
) -> None:
    """Fill in, from the archive, the versions before the oldest file, each the one the next
    supersedes (an amendment edited in place replaced their files)."""
    oldest = min(by_version)
    while oldest > 1:
        before = archive.predecessor(by_version[oldest], keys)
        if before is None:
            return
        oldest -= 1
        by_version[oldest] = before


def _statement_check(said: StatementDocument, registry: Registry) -> Verdict | None:
    s = said.statement
    try:
        verify_signed_by(said.canonical, s.signatures, (s.issued_by,), registry.keys)
    except SignatureInvalid as exc:
        return Verdict(ContractState.REFUSED, exc.code, exc.detail)
    return None
