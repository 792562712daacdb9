"""Receipt windows: the digest is over exactly the record events sent, the ranges are what the
cursor crossed, and each receipt starts where the previous one ended."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st
from joserfc.jwk import KeySet, OKPKey

from gateway.core.jose import CompactSigner, b64url, sign_compact
from gateway.core.receipts import (
    GIL_RELEASE_BYTES,
    RECEIPT_TYPE,
    ReceiptPolicy,
    ReceiptWindow,
    read_receipt,
)
from gateway.core.records import StreamFormat
from tests.core.test_records import FakeRecord, encoder

BASE = {"contract": "c", "delivery": "d"}

# Events of a few bytes, and some of several KiB (hashed in pieces that keep the GIL).
chunks = st.binary(min_size=1, max_size=40) | st.binary(min_size=2000, max_size=5000)
segments = st.lists(st.tuples(st.booleans(), chunks), min_size=1, max_size=30)


@given(segments, st.binary(max_size=20))
def test_the_digest_leaves_out_key_announcements_and_what_follows_the_last_record(
    parts: list[tuple[bool, bytes]], tail: bytes
) -> None:
    data, records = b"", b""
    marks: list[tuple[int, int]] = []
    skips: list[tuple[int, int]] = []
    for is_record, chunk in parts:
        if is_record:
            records += chunk
            marks.append((len(data) + len(chunk), len(marks)))
        else:
            skips.append((len(data), len(data) + len(chunk)))
        data += chunk
    data += tail  # a position-only event after the last record
    window = ReceiptWindow(start={0: 0})
    window.add(data, marks, skips, {0: len(marks)}, {0: 0}, now=1.0)
    claims = json.loads(window.close(BASE))
    assert claims["sha256"] == b64url(hashlib.sha256(records).digest())
    assert claims["records"] == len(marks)


@given(
    st.lists(
        st.lists(
            st.tuples(st.integers(0, 2), st.sampled_from([b'{"a":1}', b"not json", b"{}"])),
            max_size=8,
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(list(StreamFormat)),
)
def test_receipts_cover_the_events_sent_and_follow_on_from_each_other(
    batches: list[list[tuple[int, bytes]]], fmt: StreamFormat
) -> None:
    enc = encoder(fmt)
    enc.adopt({0: -2, 1: -2, 2: -2})
    window = ReceiptWindow(start=dict(enc.positions))
    offsets = {0: 0, 1: 0, 2: 0}
    sent: list[bytes] = []
    read: dict[int, list[int]] = {}
    receipts = []
    for n, batch_spec in enumerate(batches):
        records = []
        for partition, value in batch_spec:
            records.append(FakeRecord(partition, offsets[partition], None, value))
            read.setdefault(partition, []).append(offsets[partition])
            offsets[partition] += 1
        batch = enc.encode(records)
        window.add(batch.data, batch.marks, batch.skips, enc.positions, batch.first, float(n))
        start = 0
        for end, _ in batch.marks:
            sent.append(batch.data[start:end])
            start = end
        if n % 2 == 1 or n == len(batches) - 1:
            receipts.append((json.loads(window.close(BASE)), sent, read))
            sent, read = [], {}
    for claims, events, offsets_read in receipts:
        assert claims["records"] == len(events)
        assert claims["sha256"] == b64url(hashlib.sha256(b"".join(events)).digest())
        assert {r["partition"]: (r["first"], r["last"]) for r in claims["ranges"]} == {
            p: (min(o), max(o)) for p, o in offsets_read.items()
        }
    assert [c["seq"] for c, _, _ in receipts] == list(range(1, len(receipts) + 1))


def test_a_receipt_is_due_after_its_records_or_its_seconds() -> None:
    policy = ReceiptPolicy(records=3, seconds=10.0)
    window = ReceiptWindow(start={0: 0})
    assert not window.due(policy, 100.0)
    assert window.seconds_left(policy, 100.0) is None
    window.add(b"ab", [(1, 0), (2, 1)], [], {0: 2}, {0: 0}, now=100.0)
    assert not window.due(policy, 109.9)
    assert window.seconds_left(policy, 104.0) == 6.0
    assert window.due(policy, 110.0)
    window.add(b"c", [(1, 0)], [], {0: 3}, {0: 2}, now=105.0)
    assert window.due(policy, 105.0)
    window.close(BASE)
    assert not window.due(policy, 200.0)
    assert not ReceiptWindow(start={}).due(ReceiptPolicy(records=0), 1e9)


def test_a_first_window_waits_for_its_share_of_the_policy_and_the_next_for_all_of_it() -> None:
    """Streams opened together sign their first receipts at different moments."""
    policy = ReceiptPolicy(records=10, seconds=10.0)
    by_records, window = (ReceiptWindow(start={0: 0}, share=0.25) for _ in range(2))
    for first in (by_records, window):
        first.add(b"ab", [(1, 0), (2, 1)], [], {0: 2}, {0: 0}, now=100.0)
    by_records.add(b"c", [(1, 0)], [], {0: 3}, {0: 2}, now=100.5)
    assert by_records.due(policy, 100.5), "3 records of the 2.5 its share is"
    assert window.seconds_left(policy, 101.0) == 1.5
    assert not window.due(policy, 102.4)
    assert window.due(policy, 102.5), "2.5 s of the 10"
    window.close(BASE)
    window.add(b"defgh", [(n + 1, n) for n in range(5)], [], {0: 8}, {0: 3}, now=200.0)
    assert not window.due(policy, 209.9)
    assert window.seconds_left(policy, 200.0) == 10.0
    assert window.due(policy, 210.0)


def test_only_a_receipt_signed_by_the_gateway_reads_as_one() -> None:
    key = OKPKey.generate_key("Ed25519", {"use": "sig"}, auto_kid=True)
    other = OKPKey.generate_key("Ed25519", {"use": "sig"}, auto_kid=True)
    payload = json.dumps({"delivery": "d", "seq": 1}).encode()
    keys = KeySet([key])
    assert read_receipt(sign_compact(payload, key, typ=RECEIPT_TYPE), keys) == {
        "delivery": "d",
        "seq": 1,
    }
    assert read_receipt(sign_compact(payload, other, typ=RECEIPT_TYPE), keys) is None
    # A checkpoint is signed by the same key, but is no receipt.
    assert read_receipt(sign_compact(payload, key), keys) is None
    assert read_receipt("not.a.jws", keys) is None


def test_the_fast_signer_writes_what_joserfc_writes() -> None:
    key = OKPKey.generate_key("Ed25519", {"use": "sig"}, auto_kid=True)
    payload = json.dumps({"delivery": "d", "seq": 2}).encode()
    fast = CompactSigner(key, typ=RECEIPT_TYPE)(payload)
    # Ed25519 is deterministic: the very same token.
    assert fast == sign_compact(payload, key, typ=RECEIPT_TYPE)
    assert read_receipt(fast, KeySet([key])) == {"delivery": "d", "seq": 2}


class Lengths:
    """A digest that notes the length of each update (and hashes as SHA-256 does)."""

    def __init__(self) -> None:
        self.real = hashlib.sha256()
        self.lengths: list[int] = []

    def update(self, data: bytes | memoryview) -> None:
        self.lengths.append(len(data))
        self.real.update(data)

    def digest(self) -> bytes:
        return self.real.digest()


def test_a_large_batch_is_hashed_in_pieces_that_keep_the_gil() -> None:
    data = b"x" * 10_000
    window = ReceiptWindow(start={0: 0}, digest=Lengths())
    window.add(data, [(len(data), 0)], [], {0: 1}, {0: 0}, now=1.0)
    assert max(window.digest.lengths) < GIL_RELEASE_BYTES
    assert sum(window.digest.lengths) == len(data)
    claims = json.loads(window.close(BASE))
    assert claims["sha256"] == b64url(hashlib.sha256(data).digest())
