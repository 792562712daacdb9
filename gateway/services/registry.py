"""The contract registry: products, organisations' public keys and contracts, read from files.

Loading never fails as a whole: a file that cannot be used is refused, logged with its reason,
and kept in ``refusals`` so the CLI and operators can see it; every other contract still works.
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
    Verdict,
    assess,
    parse_contract,
    parse_product,
    validity_at,
)
from gateway.core.documents import load_yaml
from gateway.core.jose import parse_public_jwks
from gateway.errors import ContractNotActive, ContractNotFound, DocumentInvalid

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
    contracts: dict[str, ContractDocument] = field(default_factory=dict)
    #: The load-time verdict of each contract (signatures, product, parties).
    checks: dict[str, Verdict] = field(default_factory=dict)
    refusals: list[Refusal] = field(default_factory=list)

    def refuse(self, source: str, reason: str, detail: str) -> None:
        self.refusals.append(Refusal(source, reason, detail))
        log.warning("refused %s: %s (%s)", source, reason, detail)

    def verdict(self, contract_id: str, now: datetime) -> Verdict:
        doc = self.contracts[contract_id]
        check = self.checks[contract_id]
        return check if check.state is ContractState.REFUSED else validity_at(doc.contract, now)

    def contract_for(self, org: str, contract_id: str) -> ContractDocument:
        """The contract if ``org`` is its consumer; otherwise exactly as if it did not exist."""
        doc = self.contracts.get(contract_id)
        if doc is None or doc.contract.consumer != org:
            raise ContractNotFound(f"no contract {contract_id!r}")
        return doc

    def active_contract_for(self, org: str, contract_id: str, now: datetime) -> ContractDocument:
        doc = self.contract_for(org, contract_id)
        verdict = self.verdict(contract_id, now)
        if not verdict.active:
            raise ContractNotActive(
                f"contract {contract_id!r} is not active: {verdict.detail}", reason=verdict.reason
            )
        return doc

    def active_contracts_for(self, org: str, now: datetime) -> list[ContractDocument]:
        return [
            doc
            for cid, doc in sorted(self.contracts.items())
            if doc.contract.consumer == org and self.verdict(cid, now).active
        ]


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
            product = parse_product(load_yaml(path.read_text(), source=str(path)), source=str(path))
        except (DocumentInvalid, OSError) as exc:
            registry.refuse(str(path), "invalid_document", getattr(exc, "detail", str(exc)))
            continue
        registry.products[product.product] = product


def read_contract(
    path: Path, registry: Registry, *, gateway_org: str | None, now: datetime
) -> ContractDocument | None:
    """Read, check and register one contract file; ``None`` (and a refusal) if unreadable."""
    try:
        doc = parse_contract(load_yaml(path.read_text(), source=str(path)), source=str(path))
    except (DocumentInvalid, OSError) as exc:
        registry.refuse(str(path), "invalid_document", getattr(exc, "detail", str(exc)))
        return None
    cid = doc.contract.contract
    if cid in registry.contracts:
        other = registry.contracts[cid].source
        registry.refuse(str(path), "duplicate_contract", f"{cid!r} is also defined in {other}")
        return None
    verdict = assess(
        doc, products=registry.products, keys=registry.keys, gateway_org=gateway_org, now=now
    )
    if verdict.state is ContractState.REFUSED:
        registry.refuse(str(path), verdict.reason, verdict.detail)
    registry.contracts[cid] = doc
    registry.checks[cid] = verdict
    return doc


def load_registry(
    contracts_dir: Path, keys_dir: Path, *, gateway_org: str | None, now: datetime
) -> Registry:
    """Keys from ``keys_dir``; products from ``contracts_dir/products``; contracts beside them."""
    registry = Registry()
    read_keys(keys_dir, registry)
    read_products(contracts_dir / "products", registry)
    for path in _files(contracts_dir, "*.y*ml"):
        read_contract(path, registry, gateway_org=gateway_org, now=now)
    return registry
