"""Evidence for one question: what did partner X receive between T1 and T2, under which terms?

``gateway ledger evidence`` writes a self-contained bundle (one JSON file):

- the slice of every ledger chain holding a delivery of the contract in the period, from that
  delivery's first entry to the first signed checkpoint after the last one (the checkpoint signs
  the hash of the entry before it, which commits to every entry of the slice);
- the signed documents of the contract versions the deliveries ran under, and the parties'
  public keys; the gateway's public keys (which signed the checkpoints);
- the report the slice gives (deliveries, records, bytes, ranges, versions);
- the receipts the streams carried (signed by the gateway) and the partner's acknowledgements
  of them (signed by the partner), wherever they were recorded.

``gateway ledger verify-evidence`` checks it offline, with no gateway and no Kafka: every slice
links and ends in a checkpoint that verifies, every version's document hashes to its name and
is signed by both parties, and the report is exactly what the slice gives. What it cannot show
from inside: a chain left out of the bundle altogether (anchors, ``services/anchoring.py``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from joserfc.jwk import KeySet

from gateway.core.archive import ContractArchive, signed_document
from gateway.core.contracts import parse_contract, verify_signatures
from gateway.core.jose import parse_public_jwks, public_jwks, verify_compact
from gateway.core.ledger import (
    CHECKPOINT,
    DELIVERY_KINDS,
    PROGRESS,
    DeliveryEntry,
    entry_hash,
    timestamp,
)
from gateway.core.receipts import (
    ACKNOWLEDGEMENT,
    RECEIPT,
    check_acknowledgement,
    read_receipt,
)
from gateway.errors import DocumentInvalid, SignatureRefused
from gateway.services.registry import Registry
from gateway.services.report import build_report

FORMAT = "exchange-gateway-evidence/1"


def _delivers(entry: Mapping[str, Any], contract: str, since: datetime, until: datetime) -> bool:
    """A delivery entry (or its progress) of ``contract`` overlapping the period."""
    if entry.get("contract") != contract or entry.get("kind") not in (*DELIVERY_KINDS, PROGRESS):
        return False
    try:
        delivery = DeliveryEntry.from_entry(entry)
    except (KeyError, ValueError, TypeError):
        return False
    return delivery.ended >= since and delivery.started <= until


def ledger_slices(
    entries: Sequence[Mapping[str, Any]], contract: str, since: datetime, until: datetime
) -> list[Mapping[str, Any]]:
    """Per chain holding a delivery of ``contract`` in the period: its entries from the first
    such delivery entry to the first checkpoint after the last one (to its end if none)."""
    by_chain: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries:
        by_chain.setdefault(str(entry.get("chain")), []).append(entry)
    delivering = {id(e) for e in entries if _delivers(e, contract, since, until)}
    deliveries = {e.get("delivery") for e in entries if id(e) in delivering}

    def relevant_entry(entry: Mapping[str, Any]) -> bool:
        """A delivery in the period, or a receipt or acknowledgement of one."""
        if entry.get("kind") in (RECEIPT, ACKNOWLEDGEMENT):
            return entry.get("contract") == contract and entry.get("delivery") in deliveries
        return id(entry) in delivering

    sliced: list[Mapping[str, Any]] = []
    for chain_entries in by_chain.values():
        relevant = [n for n, e in enumerate(chain_entries) if relevant_entry(e)]
        if not relevant:
            continue
        end = next(
            (n for n in range(relevant[-1], len(chain_entries))
             if chain_entries[n].get("kind") == CHECKPOINT),
            len(chain_entries) - 1,
        )  # fmt: skip
        sliced += chain_entries[relevant[0] : end + 1]
    return sliced


def bundle_from(
    entries: Sequence[Mapping[str, Any]],
    registry: Registry,
    archive: ContractArchive,
    *,
    contract: str,
    since: datetime,
    until: datetime,
    gateway_keys: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """``build_bundle`` with the signed documents the gateway knows (the archive's and every
    loaded version's) and the organisations' keys from ``registry``."""
    documents = dict(archive.documents)
    for history in registry.histories.values():
        documents.update({v.doc.hash: signed_document(v.doc) for v in history.versions})
    return build_bundle(
        entries,
        contract=contract,
        since=since,
        until=until,
        documents=documents,
        organisations={org: public_jwks(keys) for org, keys in registry.keys.items()},
        gateway_keys=gateway_keys,
        now=now,
    )


def build_bundle(
    entries: Sequence[Mapping[str, Any]],
    *,
    contract: str,
    since: datetime,
    until: datetime,
    documents: Mapping[str, Mapping[str, Any]],
    organisations: Mapping[str, Mapping[str, Any]],
    gateway_keys: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The bundle (see the module); ``documents`` holds signed documents by version hash."""
    sliced = ledger_slices(entries, contract, since, until)
    report = build_report(sliced, contract, since=since, until=until)
    versions = sorted({v for d in report.deliveries for v in d.versions})
    missing = [v for v in versions if v not in documents]
    if missing:
        raise DocumentInvalid(
            f"the signed documents of versions {', '.join(missing)} are not known"
        )
    parties: set[str] = set()
    for version in versions:
        doc = documents[version]
        parties.update((str(doc.get("provider")), str(doc.get("consumer"))))
    return {
        "bundle": FORMAT,
        "contract": contract,
        "from": timestamp(since),
        "to": timestamp(until),
        "created": timestamp(now),
        "gateway_keys": dict(gateway_keys),
        "organisations": {
            org: dict(organisations[org]) for org in sorted(parties) if org in organisations
        },
        "versions": {v: dict(documents[v]) for v in versions},
        "ledger": [dict(e) for e in sliced],
        "report": report.as_json(),
    }


def verify_bundle(
    bundle: Mapping[str, Any], pinned: KeySet | None = None
) -> tuple[list[str], list[str]]:
    """``(problems, findings)``: what fails, and what was established. ``pinned``: the
    gateway's keys as the verifier knows them (else the bundle's own, and the findings name
    their thumbprints to compare)."""
    problems: list[str] = []
    findings: list[str] = []
    if bundle.get("bundle") != FORMAT:
        return [f"not an evidence bundle ({FORMAT})"], findings
    try:
        keys = pinned or parse_public_jwks(bundle.get("gateway_keys"), source="gateway_keys")
        organisations = {
            org: parse_public_jwks(jwks, source=org)
            for org, jwks in dict(bundle.get("organisations") or {}).items()
        }
        since = datetime.fromisoformat(str(bundle["from"]).replace("Z", "+00:00"))
        until = datetime.fromisoformat(str(bundle["to"]).replace("Z", "+00:00"))
    except (DocumentInvalid, KeyError, ValueError, TypeError, AttributeError) as exc:
        return [f"the bundle cannot be read: {getattr(exc, 'detail', exc)}"], findings
    if pinned is not None and not _same_keys(keys, bundle.get("gateway_keys")):
        problems.append("the bundle's gateway keys are not the ones given with --keys")
    ledger = [e for e in bundle.get("ledger") or [] if isinstance(e, dict)]
    problems += _slices_proven(ledger, keys)
    contract = str(bundle.get("contract"))
    versions = dict(bundle.get("versions") or {})
    for version, document in versions.items():
        try:
            doc = parse_contract(dict(document), source=version)
            if doc.hash != version:
                problems.append(f"the document filed as {version} hashes to {doc.hash}")
                continue
            verify_signatures(doc, organisations)
            c = doc.contract
            findings.append(
                f"version {c.version} ({version}) of {c.contract}: signed by {c.provider} and "
                f"{c.consumer}, valid {c.valid_from.isoformat()} to {c.valid_until.isoformat()}"
            )
        except DocumentInvalid as exc:
            problems.append(f"version {version}: {exc.detail}")
    report = build_report(ledger, contract, since=since, until=until)
    if json.loads(json.dumps(report.as_json())) != bundle.get("report"):
        problems.append("the report is not what the ledger slices say")
    used = {v for d in report.deliveries for v in d.versions}
    problems += [
        f"deliveries ran under {v}, whose document is missing" for v in sorted(used - set(versions))
    ]
    receipts, receipt_problems = _receipts_proven(ledger, keys, organisations, contract)
    problems += receipt_problems
    findings += receipts
    records = sum(d.records for d in report.deliveries)
    sent = sum(d.bytes for d in report.deliveries)
    findings.insert(
        0,
        f"{contract}, {bundle['from']} to {bundle['to']}: {len(report.deliveries)} deliveries, "
        f"{records} records, {sent} bytes",
    )
    findings.append(
        "ledger slices signed by gateway key(s) " + ", ".join(str(k.thumbprint()) for k in keys)
    )
    return problems, findings


def _receipts_proven(
    ledger: Sequence[Mapping[str, Any]],
    keys: KeySet,
    organisations: Mapping[str, KeySet],
    contract: str,
) -> tuple[list[str], list[str]]:
    """``(findings, problems)`` of the receipts the gateway gave and the acknowledgements the
    partner signed: each verifies, and names the delivery its entry files it under."""
    findings: list[str] = []
    problems: list[str] = []
    given: dict[str, dict[str, Any]] = {}
    for entry in ledger:
        if entry.get("kind") != RECEIPT:
            continue
        claims = read_receipt(str(entry.get("receipt")), keys)
        if claims is None or claims.get("delivery") != entry.get("delivery"):
            problems.append(f"receipt {entry.get('receipt_seq')} does not verify")
            continue
        given[str(entry.get("receipt"))] = claims
    acknowledged: dict[str, int] = {}
    for entry in ledger:
        if entry.get("kind") != ACKNOWLEDGEMENT:
            continue
        org = str(entry.get("org"))
        try:
            claims = check_acknowledgement(
                receipt=str(entry.get("receipt")),
                signature=str(entry.get("signature")),
                org=org,
                contract_id=contract,
                gateway_keys=keys,
                org_keys=organisations.get(org),
            )
        except SignatureRefused as exc:
            problems.append(f"an acknowledgement by {org} does not verify: {exc.detail}")
            continue
        if claims.get("delivery") != entry.get("delivery"):
            problems.append(f"an acknowledgement by {org} is filed under another delivery")
            continue
        acknowledged[org] = acknowledged.get(org, 0) + 1
    if given:
        records = sum(int(c.get("records") or 0) for c in given.values())
        findings.append(f"{len(given)} receipts signed by the gateway, over {records} records")
    findings += [f"{n} of them acknowledged, signed by {org}" for org, n in acknowledged.items()]
    return findings, problems


def _same_keys(keys: KeySet, given: Any) -> bool:
    try:
        theirs = parse_public_jwks(given, source="gateway_keys")
    except DocumentInvalid:
        return False
    return {k.thumbprint() for k in theirs} <= {k.thumbprint() for k in keys}


def _slices_proven(ledger: Sequence[Mapping[str, Any]], keys: KeySet) -> list[str]:
    """Each chain's slice links, and ends in a checkpoint over the entry before it."""
    problems: list[str] = []
    by_chain: dict[str, list[Mapping[str, Any]]] = {}
    for entry in ledger:
        by_chain.setdefault(str(entry.get("chain")), []).append(entry)
    for chain, entries in by_chain.items():
        for before, entry in itertools.pairwise(entries):
            seq = before.get("seq")
            follows = isinstance(seq, int) and entry.get("seq") == seq + 1
            if not follows or entry.get("prev") != before.get("hash"):
                problems.append(f"chain {chain}: entry {entry.get('seq')} does not follow {seq}")
        for entry in entries:
            if entry_hash(entry) != entry.get("hash"):
                problems.append(f"chain {chain}: entry {entry.get('seq')} does not match its hash")
        last = entries[-1]
        claims = None
        if last.get("kind") == CHECKPOINT and len(entries) > 1:
            payload = verify_compact(str(last.get("signature")), keys)
            claims = json.loads(payload) if payload is not None else None
        head = entries[-2] if len(entries) > 1 else None
        if (
            not isinstance(claims, dict)
            or head is None
            or claims.get("chain") != chain
            or claims.get("seq") != head.get("seq")
            or claims.get("head") != head.get("hash")
        ):
            problems.append(f"chain {chain}: the slice does not end in a checkpoint that verifies")
    return problems
