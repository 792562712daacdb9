from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from joserfc.jwk import KeySet, OKPKey

from gateway.core.canonical import canonical_json
from gateway.core.jose import sign_compact, verify_compact
from gateway.core.ledger import (
    CHECKPOINT,
    Chain,
    DeliveryEntry,
    checkpoint_claims,
    entry_hash,
    prove,
    recordable,
    verify,
)


def chain(n: int, name: str = "r1/a") -> list[dict[str, Any]]:
    c = Chain(name)
    return [
        c.append(f"2026-11-21T10:00:{i:02d}.000Z", "token_issued", {"org": "globex", "i": i})
        for i in range(n)
    ]


def kinds(entries: list[dict[str, Any]]) -> set[str]:
    return {p.kind for p in verify(entries)}


def test_intact_chains_interleaved() -> None:
    a, b = chain(5, "r1/a"), chain(5, "r2/b")
    mixed = [e for pair in zip(a, b, strict=True) for e in pair]
    assert verify(mixed) == []
    assert a[0]["prev"] is None
    assert a[1]["prev"] == a[0]["hash"]


@given(st.integers(0, 9), st.sampled_from(["org", "i", "time", "kind"]))
def test_any_edit_is_detected(index: int, key: str) -> None:
    entries = chain(10)
    entries[index][key] = "tampered"
    assert "edited" in kinds(entries)


@given(st.integers(0, 9))
def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(index: int) -> None:
    from gateway.core.ledger import entry_hash

    entries = chain(10)
    entries[index]["org"] = "initech"
    entries[index]["hash"] = entry_hash(entries[index])
    found = verify(entries)
    if index < 9:
        assert [p.kind for p in found] == ["edited"]
        assert found[0].seq == index + 1
    # The last entry of a chain can be rewritten consistently: that is what anchors are for.


@given(st.integers(0, 8))
def test_any_removal_is_detected(index: int) -> None:
    entries = chain(10)
    del entries[index]
    assert "removed" in kinds(entries)


@given(st.integers(0, 8), st.integers(1, 9))
def test_any_reordering_is_detected(index: int, distance: int) -> None:
    entries = chain(10)
    other = min(index + distance, 9)
    if other == index:
        return
    swapped = copy.deepcopy(entries)
    swapped[index], swapped[other] = swapped[other], swapped[index]
    assert kinds(swapped) & {"reordered", "removed"}


def test_garbage_is_malformed_not_a_crash() -> None:
    assert kinds([{"malformed": True}, {"chain": 3}]) == {"malformed"}


@given(
    st.dictionaries(st.integers(0, 8), st.integers(-2, 2**40), max_size=4),
    st.integers(0, 10**6),
    st.integers(0, 10**9),
)
def test_a_delivery_entry_reads_back_as_written(
    positions: dict[int, int], records: int, size: int
) -> None:
    started = datetime(2026, 11, 21, 10, 0, 0, 123000, tzinfo=UTC)
    written = DeliveryEntry(
        kind="stream",
        contract="acme-globex-orders",
        versions=("sha256:" + "a" * 64, "sha256:" + "b" * 64),
        org="globex",
        client="globex",
        format="sse",
        start=positions,
        end={p: o + 1 for p, o in positions.items()},
        records=records,
        bytes=size,
        bytes_by_day={"2026-11-21": size},
        started=started,
        ended=started + timedelta(seconds=5),
        end_reason="disconnected",
    )
    details = written.details()
    assert details["version"] == written.versions[0]
    read = DeliveryEntry.from_entry(json.loads(json.dumps({**details, "kind": "stream"})))
    assert read == written


hostile_text = st.text() | st.sampled_from(["draft-\udcff.yaml", "\ud800", "a\x00b", "é"])
hostile_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | hostile_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(hostile_text, children, max_size=3)
    ),
    max_leaves=12,
)


@given(st.dictionaries(hostile_text, hostile_values, max_size=5))
def test_any_details_are_recorded_and_the_chain_verifies(details: dict[str, Any]) -> None:
    """Undecodable file names, offsets past 2^53, NaN: escaped, never an unwritable entry."""
    chain = Chain("r/1")
    entries = [chain.append("2026-11-21T10:00:00.000Z", "contract", details) for _ in range(2)]
    assert verify(json.loads(json.dumps(entries))) == []


def test_reserved_members_of_details_are_kept_apart_from_the_chain_s_own() -> None:
    chain = Chain("r/1")
    entry = chain.append("2026-11-21T10:00:00.000Z", "statement", {"hash": "sha256:abc", "seq": 9})
    assert entry["seq"] == 0
    assert entry["details_hash"] == "sha256:abc"
    assert entry["details_seq"] == 9
    assert verify([entry]) == []


def test_a_delivery_with_progress_but_no_end_is_reported_unfinished_and_each_once() -> None:
    from gateway.services.report import build_report

    started = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)

    def entry(kind: str, delivery: str, to: int, ended: float, reason: str) -> dict[str, Any]:
        written = DeliveryEntry(
            kind="stream", contract="c", versions=("sha256:" + "a" * 64,), org="globex",
            client="globex", format="sse", start={0: -2}, end={0: to}, records=to, bytes=to * 10,
            bytes_by_day={"2026-11-21": to * 10}, started=started,
            ended=started + timedelta(seconds=ended), end_reason=reason, delivery=delivery,
        )  # fmt: skip
        return {**written.details(), "kind": kind}

    entries = [
        entry("progress", "a", 10, 1, "in_progress"),
        entry("progress", "a", 20, 2, "in_progress"),
        entry("stream", "a", 25, 2.5, "disconnected"),
        entry("progress", "b", 7, 1, "in_progress"),
        entry("progress", "b", 9, 2, "in_progress"),  # then its replica died
        entry("stream", "a", 25, 2.5, "disconnected"),  # written again on a new chain
    ]
    report = build_report(entries, "c")
    assert [(d.records, d.end_reason) for d in report.deliveries] == [
        (25, "disconnected"),
        (9, "unfinished"),
    ]


# Signed checkpoints (chain heads): what they prove beyond the links.

LEDGER_KEY = OKPKey.generate_key("Ed25519", parameters={"use": "sig"}, auto_kid=True)
LEDGER_KEYS = KeySet([LEDGER_KEY])
T = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def checkpointed(chain: Chain, entries: list[dict[str, Any]], *, final: bool, at: str) -> None:
    claims = checkpoint_claims(chain.chain, chain.seq - 1, str(chain.prev), at, final=final)
    details = {
        "covers": chain.seq - 1,
        "final": final,
        "signature": sign_compact(claims, LEDGER_KEY),
    }
    entries.append(chain.append(at, CHECKPOINT, details))


def closed_chain(n: int = 5) -> list[dict[str, Any]]:
    chain = Chain("r1/abc")
    entries = [chain.append("2026-11-23T11:00:00.000Z", "token_issued", {"n": i}) for i in range(n)]
    checkpointed(chain, entries, final=False, at="2026-11-23T11:00:01.000Z")
    entries.append(chain.append("2026-11-23T11:00:02.000Z", "token_issued", {"n": n}))
    checkpointed(chain, entries, final=True, at="2026-11-23T11:00:03.000Z")
    return entries


def proof(entries: list[dict[str, Any]], now: datetime = T) -> list[tuple[str, Any]]:
    problems, _ = prove(
        entries, lambda token: verify_compact(token, LEDGER_KEYS), now=now, live_seconds=60
    )
    return [(p.kind, p.seq) for p in problems]


def test_a_closed_chain_is_proven_and_a_cut_tail_is_not() -> None:
    entries = closed_chain()
    assert proof(entries) == []
    assert verify(entries) == []
    # Cutting the tail (the closing checkpoint with it) leaves links that still verify.
    for cut in (1, 2, 3):
        assert verify(entries[:-cut]) == []
        assert proof(entries[:-cut]) == [("open", 5 if cut < 3 else 0)]
    # A live chain (its last entry recent) is not yet expected to be closed.
    assert proof(entries[:-1], now=datetime(2026, 11, 23, 11, 0, 30, tzinfo=UTC)) == []


def test_a_chain_rewritten_with_fresh_hashes_no_longer_matches_its_signatures() -> None:
    entries = closed_chain()
    entries[2]["n"] = 99  # rewrite an entry, then every hash and link after it
    prev = entries[1]["hash"]
    for entry in entries[2:]:
        entry["prev"] = prev
        entry["hash"] = entry_hash(entry)
        prev = entry["hash"]
    assert verify(entries) == [], "the links alone cannot tell"
    assert [kind for kind, _ in proof(entries)] == ["rewritten", "rewritten", "open"]


def test_a_checkpoint_signed_by_another_key_proves_nothing() -> None:
    entries = closed_chain()
    other = OKPKey.generate_key("Ed25519", parameters={"use": "sig"}, auto_kid=True)
    entries[-1]["signature"] = sign_compact(b'{"chain":"r1/abc"}', other)
    assert ("unsigned", 7) in proof(entries)


def test_a_chain_its_successor_names_is_closed() -> None:
    chain = Chain("r1/abc")
    old = [chain.append("2026-11-23T11:00:00.000Z", "token_issued", {"n": i}) for i in range(3)]
    successor = Chain("r1/def")
    started = {"follows": "r1/abc", "follows_seq": 2, "follows_head": old[2]["hash"]}
    new = [successor.append("2026-11-23T11:00:05.000Z", "chain_started", started)]
    checkpointed(successor, new, final=True, at="2026-11-23T11:00:06.000Z")
    assert proof([*old, *new]) == []
    assert proof([*old[:2], *new]) == [("open", 0)], "a cut old chain is not what was named"


def test_a_signed_document_is_kept_byte_for_byte_however_long() -> None:
    document = {"purpose": "x" * 10_000, "signatures": ["a..b"]}
    entry = Chain("r1/abc").append("2026-11-23T11:00:00.000Z", "contract", {
        "document": document, "detail": "y" * 10_000,
    })  # fmt: skip
    assert entry["document"] == document
    assert len(entry["detail"]) < 5_000, "other text is still kept short"
    assert verify([entry]) == []


def test_anchored_checkpoints_expose_a_chain_cut_or_deleted_whole() -> None:
    entries = closed_chain()
    anchored = [e["signature"] for e in entries if e["kind"] == CHECKPOINT]

    def kinds(kept: list[dict[str, Any]], tokens: list[str] = anchored) -> list[str]:
        problems, _ = prove(
            kept, lambda token: verify_compact(token, LEDGER_KEYS), now=T, live_seconds=60,
            anchored=tokens,
        )  # fmt: skip
        return [p.kind for p in problems]

    assert kinds(entries) == []
    assert kinds([]) == ["cut", "cut"], "the whole chain deleted: only an anchor can tell"
    assert "cut" in kinds(entries[:5])
    other = OKPKey.generate_key("Ed25519", parameters={"use": "sig"}, auto_kid=True)
    assert kinds(entries, [sign_compact(b"{}", other)]) == ["unsigned"]


anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary(max_size=4)
    | st.text(min_size=4097, max_size=4100),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner)
        | st.dictionaries(st.text() | st.integers(), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(anything)
def test_whatever_a_detail_holds_the_entry_is_chained(value: Any) -> None:
    """Lone surrogates, integers past 2^53, NaN, long text, keys that are not text: an entry
    holding them is still canonicalised, hashed and chained (a strange value never stops the
    recording), and what is kept is the value where it can be."""
    kept = recordable(value)
    canonical_json(kept)  # does not raise
    entry = Chain("r1/a").append("2026-11-21T10:00:00.000Z", "token_issued", {"v": value})
    assert verify([entry]) == []
    if isinstance(value, str) and len(value) <= 4096 and value.isascii():
        assert kept == value
