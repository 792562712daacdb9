"""The archive of verified versions and posted countersignatures (``core/archive.py``)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.archive import ContractArchive, signed_document, signers
from gateway.core.documents import amended, canonical_hash, load_yaml
from gateway.core.jose import sign_detached, signing_key
from gateway.core.lifecycle import build_history
from tests.core.test_contracts import KEYS, PUBLIC, TEXT
from tests.core.test_lifecycle import contract


def entry(version: Any, document: Any, state: str = "chained") -> dict[str, Any]:
    return {"kind": "contract", "event": "version", "state": state, "version": version,
            "document": document}  # fmt: skip


def test_it_learns_chained_versions_and_signatures_once() -> None:
    v1, _ = contract(1)
    archive = ContractArchive()
    assert archive.learn(entry(v1.hash, signed_document(v1)))
    assert not archive.learn(entry(v1.hash, signed_document(v1)))
    assert not archive.learn(entry("sha256:x", {}, state="draft")), "only chained versions"
    assert not archive.learn({"kind": "stream", "version": v1.hash})
    assert not archive.learn(entry(7, "not a document")), "malformed entries are ignored"
    signature = {"kind": "signature", "version": v1.hash, "org": "globex", "signature": "s"}
    assert archive.learn(signature)
    assert not archive.learn(signature)
    assert not archive.learn({**signature, "org": None})
    assert archive.revision == 2


def test_posted_countersignatures_complete_a_draft() -> None:
    draft, _ = contract(1, signers=("acme",))
    archive = ContractArchive()
    assert archive.signed(draft, PUBLIC) is draft
    jws = sign_detached(draft.canonical, signing_key(KEYS["globex"]), org="globex")
    archive.keep_signature(draft.hash, "globex", jws)
    complete = archive.signed(draft, PUBLIC)
    assert signers(complete) == {"acme", "globex"}
    assert (complete.hash, complete.canonical) == (draft.hash, draft.canonical)
    # Only a party's signature that verifies is added: entries written into the ledger by
    # anyone else add nothing (and cannot spoil the version).
    stranger = sign_detached(draft.canonical, signing_key(KEYS["initech"]), org="initech")
    forged = sign_detached(b"other bytes", signing_key(KEYS["globex"]), org="globex")
    for org, bogus in (("initech", stranger), ("globex", forged), ("acme", jws)):
        poisoned = ContractArchive(signatures={draft.hash: {org: bogus}})
        assert poisoned.signed(draft, PUBLIC) is draft
    # A signature the file already carries is not added twice.
    assert archive.signed(complete, PUBLIC).contract.signatures == complete.contract.signatures


def test_a_predecessor_comes_back_only_if_it_is_exactly_the_one_superseded() -> None:
    v1, check1 = contract(1)
    v2, check2 = contract(2, supersedes=v1.hash)
    archive = ContractArchive()
    assert archive.predecessor(v2, PUBLIC) is None
    archive.keep_document(v1.hash, signed_document(v1))
    before = archive.predecessor(v2, PUBLIC)
    assert before is not None
    assert (before.hash, before.source) == (v1.hash, f"ledger ({v1.hash})")
    history = build_history("c", [(before, check1), (v2, check2)])
    assert [v.chained for v in history.versions] == [True, True]
    # A document filed under a hash it does not have is never used.
    tampered = {**signed_document(v1), "purpose": "Something else"}
    archive = ContractArchive(documents={v1.hash: tampered})
    assert archive.predecessor(v2, PUBLIC) is None
    assert ContractArchive(documents={v1.hash: {"contract": 1}}).predecessor(v2, PUBLIC) is None
    v3, _ = contract(3, supersedes=v1.hash)  # names v1 but is not its successor
    assert ContractArchive(documents={v1.hash: signed_document(v1)}).predecessor(v3, PUBLIC) is None


@given(st.integers(min_value=1, max_value=10_000))
def test_amended_text_is_the_next_version_of_the_same_terms(version: int) -> None:
    text = TEXT.replace("version: 1", f"version: {version}")
    if version > 1:
        text = text.replace(f"version: {version}\n", f"version: {version}\nsupersedes: x\n")
    before = load_yaml(text, source="t")
    after = load_yaml(amended(text, version=version + 1, supersedes=canonical_hash(before)),
                      source="t")  # fmt: skip
    assert after.pop("version") == version + 1
    assert after.pop("supersedes") == canonical_hash(before)
    assert after.pop("signatures") == []
    before.pop("supersedes", None)
    assert after == {k: v for k, v in before.items() if k not in ("version", "signatures")}
