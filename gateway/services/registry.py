"""The contract registry: products, organisations' public keys, contract versions and statements.

Read from files, so the whole history lives in a directory that can be kept in git and reviewed
as pull requests. Loading never fails as a whole: a file that cannot be used is refused, logged
with its reason, and kept in ``refusals``; every other contract still works. Every replica that
reads the same files reaches the same state (the evaluation is deterministic given the time).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from joserfc.jwk import KeySet

from gateway.core.contracts import (
    ContractDocument,
    ContractState,
    Product,
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

KEYS_SUFFIX = ".jwks.json"


@dataclass(frozen=True, slots=True)
class Refusal:
    source: str
    reason: str
    detail: str


@dataclass
class Registry:
    products: dict[str, Product] = field(default_factory=dict)
    keys: dict[str, KeySet] = field(default_factory=dict)
    histories: dict[str, ContractHistory] = field(default_factory=dict)
    refusals: list[Refusal] = field(default_factory=list)

    def refuse(self, source: str, reason: str, detail: str) -> None:
        self.refusals.append(Refusal(source, reason, detail))
        log.warning("refused %s: %s (%s)", source, reason, detail)

    def status(self, contract_id: str, now: datetime) -> Status:
        return self.histories[contract_id].status_at(now)

    def verdict(self, contract_id: str, now: datetime) -> Verdict:
        return self.status(contract_id, now).verdict

    def history_for(self, org: str, contract_id: str) -> ContractHistory:
        """The contract if ``org`` is its consumer; otherwise exactly as if it did not exist."""
        history = self.histories.get(contract_id)
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

    def active_contracts_for(self, org: str, now: datetime) -> list[ContractDocument]:
        active = []
        for cid in sorted(self.histories):
            history = self.histories[cid]
            status = history.status_at(now)
            if history.latest.contract.consumer == org and status.verdict.active:
                assert status.governing is not None
                active.append(status.governing)
        return active


def _files(directory: Path, pattern: str) -> Iterable[Path]:
    return sorted(p for p in directory.glob(pattern) if p.is_file()) if directory.is_dir() else []


def read_keys(keys_dir: Path, registry: Registry) -> None:
    for path in _files(keys_dir, f"*{KEYS_SUFFIX}"):
        org = path.name.removesuffix(KEYS_SUFFIX)
        try:
            registry.keys[org] = parse_public_jwks(json.loads(path.read_text()), source=str(path))
        except (DocumentInvalid, ValueError, OSError) as exc:
            registry.refuse(str(path), "invalid_keys", getattr(exc, "detail", str(exc)))


def read_products(products_dir: Path, registry: Registry) -> None:
    for path in _files(products_dir, "*.y*ml"):
        try:
            text = path.read_text()
            product = parse_product(load_yaml(text, source=str(path)), source=str(path), text=text)
        except (DocumentInvalid, OSError) as exc:
            registry.refuse(str(path), "invalid_document", getattr(exc, "detail", str(exc)))
            continue
        registry.products[product.product] = product


def read_documents(
    paths: Iterable[Path], registry: Registry, *, gateway_org: str | None, now: datetime
) -> None:
    """Read contract versions and statements, then build each contract's history."""
    versions: dict[str, dict[int, tuple[ContractDocument, Verdict]]] = {}
    statements: dict[str, list[tuple[StatementDocument, Verdict | None]]] = {}
    for path in paths:
        source = str(path)
        try:
            text = path.read_text()
            data = load_yaml(text, source=source)
            if "statement" in data:
                said = parse_statement(data, source=source, text=text)
                statements.setdefault(said.statement.contract, []).append(
                    (said, _statement_check(said, registry))
                )
                continue
            doc = parse_contract(data, source=source, text=text)
        except (DocumentInvalid, OSError) as exc:
            registry.refuse(source, "invalid_document", getattr(exc, "detail", str(exc)))
            continue
        c = doc.contract
        known = versions.setdefault(c.contract, {})
        if c.version in known:
            other = known[c.version][0].source
            registry.refuse(source, "duplicate_version", f"version {c.version} is also {other}")
            continue
        check = assess(
            doc, products=registry.products, keys=registry.keys, gateway_org=gateway_org, now=now
        )
        known[c.version] = (doc, check)
    for cid, by_version in sorted(versions.items()):
        history = build_history(cid, list(by_version.values()), statements.pop(cid, []))
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


def _statement_check(said: StatementDocument, registry: Registry) -> Verdict | None:
    s = said.statement
    try:
        verify_signed_by(said.canonical, s.signatures, (s.issued_by,), registry.keys)
    except SignatureInvalid as exc:
        return Verdict(ContractState.REFUSED, exc.code, exc.detail)
    return None


def load_registry(
    contracts_dir: Path, keys_dir: Path, *, gateway_org: str | None, now: datetime
) -> Registry:
    """Keys from ``keys_dir``; products from ``contracts_dir/products``; documents beside them."""
    registry = Registry()
    read_keys(keys_dir, registry)
    read_products(contracts_dir / "products", registry)
    read_documents(_files(contracts_dir, "*.y*ml"), registry, gateway_org=gateway_org, now=now)
    return registry
