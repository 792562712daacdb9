"""Signed delivery receipts, and the partner's acknowledgements of them.

After the batch that brings ``receipt_records`` records, or ``receipt_seconds`` after the first
record not yet covered (a stream's first receipt: after its share of both, between none and all,
so that streams opened together sign at different moments), a stream sends a receipt
(``event: receipt``; NDJSON ``{"event":"receipt",...}``; a pull's answer carries one): a compact
JWS by the gateway's ledger key (published in ``/.well-known/jwks.json``) whose payload says
what was sent since the previous receipt of the same delivery::

    {"contract": "acme-globex-orders", "version": "<hash of the version in force>",
     "partner": "globex", "client": "globex", "delivery": "<id>", "seq": 1,
     "format": "text/event-stream", "ranges": [{"partition": 0, "first": 0, "last": 99}],
     "records": 100, "sha256": "<base64url>", "cursor": "<cursor after>",
     "time": "2026-11-23T10:00:00.000Z", "iat": 1795428000}

``sha256`` is over exactly the bytes of the record events sent (``record`` and ``refused``;
not keys, gaps, heartbeats or receipts), in order:

- SSE: each event as written, ``event: record\\nid: <cursor>\\ndata: <json>\\n\\n`` (an
  ``EventSource`` client rebuilds it from ``type``, ``lastEventId`` and ``data``);
- NDJSON: each record line, with its ``\\n``;
- pull: each element of ``records`` followed by ``\\n`` (the same bytes as NDJSON lines; the
  answer writes one element a line so that a client can take them as they are).

``ranges`` are the offsets the cursor moved across, per partition: every record in them was sent
or left out by the contract's row filter. The partner acknowledges a receipt by signing its
exact compact form (its ASCII bytes) with a detached JWS, as it countersigns a contract
(``POST /v1/contracts/{id}/acknowledgements``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from joserfc.jwk import KeySet

from gateway.core.jose import (
    b64url,
    signature_header,
    signed_as,
    verify_compact,
    verify_party,
)
from gateway.errors import DocumentInvalid, SignatureRefused

#: The JWS ``typ`` of a receipt (RFC 7515 §4.1.9).
RECEIPT_TYPE = "delivery-receipt+json"
#: Ledger kinds.
RECEIPT = "receipt"
ACKNOWLEDGEMENT = "acknowledgement"


@dataclass(frozen=True, slots=True)
class ReceiptPolicy:
    """When streams send receipts: after this many records, or this long after the first
    record not yet receipted (``records=0``: never); a stream's first receipt after its share of
    both (``ReceiptWindow.share``)."""

    records: int = 1000
    seconds: float = 10.0


#: hashlib lets go of the GIL to hash this many bytes or more in one call (CPython's
#: ``HASHLIB_GIL_MINSIZE``). Hashed on the event loop, a batch of a few KiB let another thread
#: (the ledger's writer, a topic's reader) take the GIL for the 3 µs of hashing, and the loop
#: waited for it back: a stream's receipt digest cost 12-15 µs a batch at 1,000 live streams
#: (measured in the gateway, bench/fanout.py), 9 µs in pieces below it.
GIL_RELEASE_BYTES = 2048


def _hash(digest: Any, view: memoryview) -> None:
    """``digest.update(view)`` keeping the GIL (in pieces below ``GIL_RELEASE_BYTES``)."""
    for at in range(0, len(view), GIL_RELEASE_BYTES - 1):
        digest.update(view[at : at + GIL_RELEASE_BYTES - 1])


@dataclass(slots=True)
class ReceiptWindow:
    """What a delivery has sent since its last receipt (one stream's; not thread-safe)."""

    #: The positions (next offsets) where the window started, per partition.
    start: dict[int, int]
    digest: Any = field(default_factory=hashlib.sha256)
    records: int = 0
    #: Where the cursor is now.
    end: dict[int, int] = field(default_factory=dict)
    #: The first offset read per partition, where ``start`` was symbolic (earliest/latest).
    first_read: dict[int, int] = field(default_factory=dict)
    #: When the window's first record was sent (monotonic); ``None`` while it has none.
    since: float | None = None
    seq: int = 0
    #: This window's share of the policy's records and seconds: a delivery's first window takes
    #: its stream's (between 0 and 1), so that streams opened together, which would reach the
    #: policy together, sign their receipts in different rounds of wake-ups; then 1.
    share: float = 1.0

    def add(
        self,
        data: bytes,
        marks: Sequence[tuple[int, int]],
        skips: Sequence[tuple[int, int]],
        positions: Mapping[int, int],
        first: Mapping[int, int],
        now: float,
    ) -> None:
        """A batch sent: its record events' bytes (``data`` up to the last mark, without the
        ``skips`` spans), the positions after it, the first offset it read per partition."""
        if not marks:
            self.end = dict(positions)
            return
        end, view, at = marks[-1][0], memoryview(data), 0
        for start, stop in skips:
            if start >= end:
                break
            _hash(self.digest, view[at:start])
            at = stop
        _hash(self.digest, view[at:end])
        self.records += len(marks)
        for partition, offset in first.items():
            if self.start.get(partition, -1) < 0:
                self.first_read.setdefault(partition, offset)
        self.end = dict(positions)
        if self.since is None:
            self.since = now

    def due(self, policy: ReceiptPolicy, now: float) -> bool:
        if policy.records <= 0 or self.since is None:
            return False
        share = self.share
        return self.records >= policy.records * share or now - self.since >= policy.seconds * share

    def seconds_left(self, policy: ReceiptPolicy, now: float) -> float | None:
        """How long until a receipt is due by time; ``None``: none is pending."""
        if policy.records <= 0 or self.since is None:
            return None
        return max(0.0, self.since + policy.seconds * self.share - now)

    def ranges(self) -> list[dict[str, int]]:
        found = []
        for partition, end in sorted(self.end.items()):
            begin = self.start.get(partition, -1)
            if begin < 0:
                begin = self.first_read.get(partition, end)
            if end > begin:
                found.append({"partition": partition, "first": begin, "last": end - 1})
        return found

    def close(self, base: Mapping[str, Any]) -> bytes:
        """The receipt's payload for what the window holds (``base``: contract, version,
        partner, client, delivery, format, cursor, time, iat); the next window starts here."""
        self.seq += 1
        claims = {
            **base,
            "seq": self.seq,
            "ranges": self.ranges(),
            "records": self.records,
            "sha256": b64url(self.digest.digest()),
        }
        self.start = dict(self.end)
        self.first_read = {}
        self.digest = hashlib.sha256()
        self.records = 0
        self.since = None
        self.share = 1.0
        return msgspec.json.encode(claims)


def read_receipt(token: str, keys: KeySet) -> dict[str, Any] | None:
    """A receipt's claims when it verifies against the gateway's ``keys``, else ``None`` (a
    checkpoint, signed by the same key, is not a receipt: its ``typ`` differs)."""
    try:
        if signature_header(token).get("typ") != RECEIPT_TYPE:
            return None
    except DocumentInvalid:
        return None
    payload = verify_compact(token, keys)
    if payload is None:
        return None
    try:
        claims = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None
    return claims if isinstance(claims, dict) and "delivery" in claims else None


def check_acknowledgement(
    *,
    receipt: str,
    signature: str,
    org: str,
    contract_id: str,
    gateway_keys: KeySet,
    org_keys: KeySet | None,
) -> dict[str, Any]:
    """The claims of ``receipt`` once ``org``'s acknowledgement of it is checked:
    ``SignatureRefused`` with ``receipt_invalid`` (not a receipt the gateway signed for this
    contract), ``wrong_organisation`` (another partner's receipt, or a signature naming another
    organisation), ``signature_invalid`` (not by ``org``'s published key over this receipt)."""
    claims = read_receipt(receipt, gateway_keys)
    if claims is None:
        raise SignatureRefused(
            "the receipt does not verify against the gateway's keys: send it exactly as the "
            "stream gave it",
            code="receipt_invalid",
        )
    if claims.get("contract") != contract_id:
        raise SignatureRefused(
            f"the receipt is one of contract {claims.get('contract')!r}, not {contract_id!r}",
            code="receipt_invalid",
        )
    if claims.get("partner") != org:
        raise SignatureRefused(
            "the receipt was given to another organisation", code="wrong_organisation"
        )
    signed_as(signature, org, "the acknowledgement")
    verify_party(signature, receipt.encode("ascii"), org, org_keys, "this receipt's bytes")
    return claims
