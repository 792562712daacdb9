"""Offers and countersignatures over the API: no contract file travels by hand.

An **offer** is a contract version its provider has signed and its consumer has not. The
consumer reads it (``GET /v1/contracts/{id}/signatures``: the terms, the exact canonical bytes,
the provider's signature), signs those bytes with its own key in any JOSE library, and posts the
detached JWS (``POST /v1/contracts/{id}/signatures``). The signature is checked here, recorded
in the ledger (and only once Kafka has acknowledged it is it accepted), kept in the archive
(``core/archive.py``) and merged into its version at every load: the contract is active at once,
or when its ``valid_from`` comes. Every replica learns it from the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from joserfc.jwk import KeySet

from gateway.core.archive import SIGNATURE_KIND, ContractArchive, signature_verifies
from gateway.core.contracts import ContractDocument, ContractState, Verdict
from gateway.core.jose import signed_as, verify_party
from gateway.core.ledger import timestamp
from gateway.core.lifecycle import ContractHistory
from gateway.errors import LedgerUnavailable, SignatureRefused
from gateway.services.registry import Registry

log = logging.getLogger(__name__)

#: How long a countersignature waits for Kafka to acknowledge its ledger entry.
RECORD_TIMEOUT_SECONDS = 10.0


class AcknowledgedLedger(Protocol):
    def problem(self) -> str | None:
        """Why entries cannot be written now; ``None`` when they can."""

    def record_acknowledged(
        self, time: str, kind: str, details: Mapping[str, Any], timeout: float
    ) -> bool:
        """Record an entry; whether Kafka acknowledged it within ``timeout`` seconds."""


def record_or_refuse(
    ledger: AcknowledgedLedger, time: str, kind: str, details: Mapping[str, Any], what: str
) -> None:
    """Record an entry a partner posted and return once Kafka has acknowledged it; otherwise
    ``LedgerUnavailable`` at once (the ledger is known not to take writes: nothing is queued)
    or after ``RECORD_TIMEOUT_SECONDS`` (it may still be written: posting again is safe)."""
    problem = ledger.problem()
    if problem is not None:
        raise LedgerUnavailable(
            f"the {what} cannot be recorded now ({problem}); it is not accepted: post it again"
        )
    if not ledger.record_acknowledged(time, kind, details, RECORD_TIMEOUT_SECONDS):
        raise LedgerUnavailable(
            f"the {what} could not be recorded in the ledger; it is not accepted yet: post it again"
        )


def verified_signers(doc: ContractDocument, keys: Mapping[str, KeySet]) -> list[str]:
    """The parties whose signature on ``doc`` verifies against their published keys."""
    parties = (doc.contract.provider, doc.contract.consumer)
    return sorted(
        {
            org
            for signature in doc.contract.signatures
            for org in parties
            if signature_verifies(signature, org, doc, keys)
        }
    )


def version_of(history: ContractHistory, version: str | None) -> ContractDocument | None:
    """The version with hash ``version`` (the newest when ``None``)."""
    if version is None:
        return history.latest
    return next((e.doc for e in history.versions if e.doc.hash == version), None)


def awaits(registry: Registry, org: str, doc: ContractDocument) -> bool:
    """Whether ``doc`` is offered to ``org``: its provider's signature verifies, ``org``'s is
    not there yet."""
    signed = verified_signers(doc, registry.keys)
    return doc.contract.provider in signed and org not in signed


def check_countersignature(
    registry: Registry,
    *,
    org: str,
    contract_id: str,
    version: str,
    signature: str,
    now: datetime,
) -> ContractDocument | None:
    """The offer ``signature`` countersigns, once checked; ``None`` when ``org`` has signed
    that version already. ``ContractNotFound`` unless ``org`` is the consumer;
    ``SignatureRefused`` saying why otherwise."""
    history = registry.history_for(org, contract_id)
    doc = version_of(history, version)
    if doc is None:
        raise SignatureRefused(
            f"contract {contract_id!r} has no version {version}; its newest is "
            f"{history.latest.hash} (version {history.latest.contract.version})",
            code="not_offered",
        )
    newest = history.latest
    if doc.hash != newest.hash:
        raise SignatureRefused(
            f"version {doc.contract.version} is not the offer: version "
            f"{newest.contract.version} ({newest.hash}) is the newest",
            code="not_offered",
        )
    signed_as(signature, org, "the signature")
    signed = verified_signers(doc, registry.keys)
    if org in signed:
        return None
    c = doc.contract
    if c.provider not in signed:
        raise SignatureRefused(
            f"{c.provider} has not signed version {c.version}: it is not offered to you yet",
            code="not_offered",
        )
    entry = next(e for e in history.versions if e.doc.hash == doc.hash)
    if entry.check.state is ContractState.REFUSED:
        raise SignatureRefused(
            f"version {c.version} cannot come into force ({entry.check.reason}: "
            f"{entry.check.detail}); its provider has been told why",
            code="not_offered",
        )
    if now >= c.valid_until:
        raise SignatureRefused(
            f"the offer of version {c.version} ended with its validity at "
            f"{c.valid_until.isoformat()}; ask {c.provider} for a new one",
            code="offer_expired",
        )
    verify_party(
        signature,
        doc.canonical,
        org,
        registry.keys.get(org),
        f"the canonical bytes of version {doc.hash}",
    )
    return doc


@dataclass(frozen=True, slots=True)
class Countersigned:
    version: ContractDocument
    #: The contract's state once the signature is in.
    verdict: Verdict
    signed_by: list[str]
    #: ``False`` when the caller had signed this version already.
    recorded: bool


class Countersigning:
    def __init__(
        self,
        *,
        registry: Callable[[], Registry],
        archive: ContractArchive,
        ledger: AcknowledgedLedger,
        reload: Callable[[], None],
        clock: Callable[[], datetime],
    ) -> None:
        self._registry = registry
        self._archive = archive
        self._ledger = ledger
        self._reload = reload
        self._clock = clock

    def countersign(
        self, *, org: str, client: str, contract_id: str, version: str, signature: str
    ) -> Countersigned:
        """Check, record and apply ``org``'s countersignature. Blocking (it waits for Kafka)."""
        now = self._clock()
        doc = check_countersignature(
            self._registry(),
            org=org,
            contract_id=contract_id,
            version=version,
            signature=signature,
            now=now,
        )
        recorded = doc is not None
        if doc is not None:
            details = {
                "contract": contract_id,
                "version": doc.hash,
                "number": doc.contract.version,
                "org": org,
                "client": client,
                "signature": signature,
            }
            record_or_refuse(self._ledger, timestamp(now), SIGNATURE_KIND, details, "signature")
            self._archive.keep_signature(doc.hash, org, signature)
            log.info("contract %s version %s countersigned by %s", contract_id, doc.hash, org)
            self._reload()
        registry = self._registry()
        history = registry.history_for(org, contract_id)
        current = version_of(history, version) or history.latest
        return Countersigned(
            current,
            registry.verdict(contract_id, self._clock()),
            verified_signers(current, registry.keys),
            recorded,
        )
