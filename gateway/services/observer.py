"""Recording what happens to contracts in the ledger: each change once, as it is observed.

Loaded, refused and draft versions (each with its signed document), accepted and refused
statements, files that cannot be read, and every change of a contract's status (activated,
expired, suspended, revoked, superseded by a new version). Called after each reload and on
every watch tick, so changes that come with time alone (a contract expiring) are recorded too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.core.archive import ContractArchive, signed_document
from gateway.core.ledger import timestamp
from gateway.services.ledger import Ledger
from gateway.services.registry import Registry

#: A signed document larger than this is not copied into the ledger (a Kafka message is 1 MB
#: at most by default); such a version cannot be rebuilt from the ledger once its file is gone.
MAX_ARCHIVED_BYTES = 256 * 1024


class ContractObserver:
    def __init__(self, ledger: Ledger, archive: ContractArchive | None = None) -> None:
        self._ledger = ledger
        #: Keeps each chained version (``core/archive.py``), as the ledger entry does.
        self._archive = archive if archive is not None else ContractArchive()
        self._seen: dict[tuple[str, str], Any] = {}

    def _once(
        self, key: tuple[str, str], value: Any, now: datetime, kind: str, details: dict[str, Any]
    ) -> None:
        if self._seen.get(key) != value:
            self._seen[key] = value
            self._ledger.record(timestamp(now), kind, details)

    def observe(self, registry: Registry, now: datetime) -> None:
        for refusal in registry.refusals:
            if refusal.reason == "invalid_document":
                self._once(
                    ("file", refusal.source),
                    refusal.detail,
                    now,
                    "contract",
                    {
                        "event": "refused",
                        "source": refusal.source,
                        "reason": refusal.reason,
                        "detail": refusal.detail,
                    },
                )
        for cid, history in sorted(registry.histories.items()):
            for entry in history.versions:
                doc, check = entry.doc, entry.check
                state = "chained" if entry.chained else check.state.value
                document = signed_document(doc)
                if entry.chained:
                    self._archive.keep_document(doc.hash, document)
                kept = len(doc.canonical) <= MAX_ARCHIVED_BYTES
                self._once(
                    ("version", doc.hash),
                    (state, check.reason),
                    now,
                    "contract",
                    {
                        "event": "version",
                        "contract": cid,
                        "version": doc.hash,
                        "number": doc.contract.version,
                        "state": state,
                        "reason": check.reason,
                        "detail": check.detail,
                        "source": doc.source,
                        # The signed document: a replica rebuilds the chain from it when the
                        # file has been replaced by the next version.
                        **(
                            {"document": document}
                            if kept
                            else {"document_omitted": f"larger than {MAX_ARCHIVED_BYTES} bytes"}
                        ),
                    },
                )
            for said in history.statements:
                s = said.doc.statement
                self._once(
                    ("statement", said.doc.hash),
                    said.reason,
                    now,
                    "statement",
                    {
                        "contract": cid,
                        "version": s.contract_version,
                        "statement": s.statement.value,
                        "issued_by": s.issued_by,
                        "issued_at": timestamp(s.issued_at),
                        "reason_given": s.reason,
                        "accepted": said.accepted,
                        "reason": said.reason,
                        "statement_hash": said.doc.hash,
                        "source": said.doc.source,
                    },
                )
            status = history.status_at(now)
            governing = status.governing.hash if status.governing else None
            value = (governing, status.verdict.state.value, status.verdict.reason)
            self._once(
                ("status", cid),
                value,
                now,
                "contract",
                {
                    "event": "status",
                    "contract": cid,
                    "version": governing,
                    "state": status.verdict.state.value,
                    "reason": status.verdict.reason,
                    "detail": status.verdict.detail,
                },
            )
