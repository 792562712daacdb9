"""What the gateway has verified about contracts beyond the files: versions and signatures.

A directory of files cannot keep two things the gateway must not lose:

- a **countersignature posted over the API** (``POST /v1/contracts/{id}/signatures``), when the
  directory is read-only (distributed from git): it is recorded in the ledger and merged into its
  version at every load;
- a **version whose file was replaced** by the next one (an amendment edited in place, as anyone
  using git does): its signed document is in the ledger (the ``contract`` ``version`` entry of a
  chained version carries it), so an amendment whose ``supersedes`` names it still chains.

Every replica learns both from the ledger, its own entries and the others', so a new replica
rebuilds the same chains. Nothing here is trusted: an archived document is parsed and its
signatures are verified again at every load, exactly like a file. Only the versions *before* the
oldest file of a contract come from here: removing a contract's files still withdraws it, and
reverting a file to an older version still takes effect.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from joserfc.jwk import KeySet

from gateway.core.contracts import ContractDocument, parse_contract
from gateway.core.jose import describe_signature, verify_detached
from gateway.errors import DocumentInvalid, SignatureInvalid

#: The ledger entry kind of a countersignature accepted over the API.
SIGNATURE_KIND = "signature"


def signed_document(doc: ContractDocument) -> dict[str, Any]:
    """``doc`` as the JSON document its parties signed, with their signatures."""
    return {**json.loads(doc.canonical), "signatures": list(doc.contract.signatures)}


def signers(doc: ContractDocument) -> set[str]:
    """The organisations ``doc``'s signatures name (not whether they verify)."""
    said = (describe_signature(s) for s in doc.contract.signatures)
    return {info.org for info in said if info is not None}


@dataclass
class ContractArchive:
    #: Signed documents of chained versions, by hash.
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Countersignatures posted over the API: version hash -> organisation -> detached JWS.
    signatures: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Counts what was learned: a change means the contracts must be loaded again.
    revision: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def learn_all(self, entries: Iterable[Mapping[str, Any]]) -> ContractArchive:
        """Take what each entry says (the archive itself, to chain)."""
        for entry in entries:
            self.learn(entry)
        return self

    def learn(self, entry: Mapping[str, Any]) -> bool:
        """Take what a ledger entry says, if it says anything here; whether it was new."""
        kind = entry.get("kind")
        if kind == "contract" and entry.get("event") == "version":
            if entry.get("state") == "chained":
                return self.keep_document(entry.get("version"), entry.get("document"))
        elif kind == SIGNATURE_KIND:
            return self.keep_signature(
                entry.get("version"), entry.get("org"), entry.get("signature")
            )
        return False

    def keep_document(self, version: Any, document: Any) -> bool:
        if not isinstance(version, str) or not isinstance(document, dict):
            return False
        with self._lock:
            if version in self.documents:
                return False
            # Replaced whole, never changed in place: a load in another thread reads either.
            self.documents = {**self.documents, version: document}
            self.revision += 1
        return True

    def keep_signature(self, version: Any, org: Any, signature: Any) -> bool:
        if not all(isinstance(v, str) for v in (version, org, signature)):
            return False
        with self._lock:
            posted = self.signatures.get(version, {})
            if posted.get(org) == signature:
                return False
            self.signatures = {**self.signatures, version: {**posted, org: signature}}
            self.revision += 1
        return True

    def signed(self, doc: ContractDocument, keys: Mapping[str, KeySet]) -> ContractDocument:
        """``doc`` with the countersignatures posted for it that its file does not carry.

        Only a signature by a party, naming that party, that verifies over ``doc``'s bytes
        with its published keys is added: an entry written into the ledger by someone else
        adds nothing (and cannot spoil a version by adding a signature that fails)."""
        posted = self.signatures.get(doc.hash)
        if not posted:
            return doc
        present = signers(doc)
        parties = (doc.contract.provider, doc.contract.consumer)
        extra = [
            jws
            for org, jws in sorted(posted.items())
            if org in parties and org not in present and signature_verifies(jws, org, doc, keys)
        ]
        if not extra:
            return doc
        signatures = [*doc.contract.signatures, *extra]
        contract = doc.contract.model_copy(update={"signatures": signatures})
        return ContractDocument(contract, doc.canonical, doc.hash, doc.source)

    def predecessor(
        self, doc: ContractDocument, keys: Mapping[str, KeySet]
    ) -> ContractDocument | None:
        """The version ``doc`` supersedes, as archived; ``None`` when it is not known."""
        wanted = doc.contract.supersedes
        data = self.documents.get(wanted) if wanted else None
        if data is None:
            return None
        try:
            before = parse_contract(data, source=f"ledger ({wanted})")
        except DocumentInvalid:
            return None
        c = before.contract
        if (
            before.hash != wanted
            or c.contract != doc.contract.contract
            or c.version != doc.contract.version - 1
        ):
            return None
        return self.signed(before, keys)


def signature_verifies(
    signature: str, org: str, doc: ContractDocument, keys: Mapping[str, KeySet]
) -> bool:
    """Whether ``signature`` names ``org`` and verifies over ``doc``'s bytes with its keys."""
    info = describe_signature(signature)
    if info is None or info.org != org or org not in keys:
        return False
    try:
        verify_detached(signature, doc.canonical, keys[org])
    except SignatureInvalid:
        return False
    return True
