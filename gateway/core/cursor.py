"""Stream cursors: where a partner is in every partition of a product's topic.

A cursor records, per partition, the offset of the next record to deliver. It is opaque to
partners but simple inside: ``base64url("v1;p:o,p:o") "." base64url(tag)``, where the tag is a
keyed BLAKE2b MAC over the contract id and the payload. An edited cursor, or one issued for
another contract, fails the check. Offsets may be ``-2`` (the partition's beginning).
"""

from __future__ import annotations

import hashlib
import hmac
from binascii import b2a_base64
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.core.jose import URLSAFE, b64url_decode
from gateway.errors import InvalidCursor

OFFSET_BEGINNING = -2
_VERSION = b"v1;"
_TAG_BYTES = 16
MAX_CURSOR_LENGTH = 16_384


#: Kafka's bounds: partitions are int32, offsets int64 (OFFSET_BEGINNING is -2).
_MAX_PARTITION, _MAX_OFFSET = 2**31 - 1, 2**63 - 1


def _positions(body: bytes) -> dict[int, int]:
    """``p:o,p:o`` in ASCII digits, within Kafka's bounds; ``ValueError`` otherwise."""
    positions: dict[int, int] = {}
    for item in filter(None, body.decode("ascii").split(",")):
        partition_text, _, offset_text = item.partition(":")
        if not partition_text.isdigit() or not offset_text.lstrip("-").isdigit():
            raise ValueError(item)
        partition, offset = int(partition_text), int(offset_text)
        if partition > _MAX_PARTITION or not OFFSET_BEGINNING <= offset <= _MAX_OFFSET:
            raise ValueError(item)
        positions[partition] = offset
    return positions


def _keyed(secret: bytes, contract_id: str) -> Any:
    mac = hashlib.blake2b(key=secret, digest_size=_TAG_BYTES, person=b"gw-cursor")
    mac.update(contract_id.encode())
    mac.update(b"\0")
    return mac


class CursorCodec:
    """Encodes and checks cursors with the gateway's cursor secret (shared by all replicas).

    ``secret`` signs and verifies; each of ``verifying`` only verifies: the secret before a
    rotation, or the one after it, not yet in use (``state_dir.py``), so a cursor any replica
    issued during the rolling restarts stays valid."""

    def __init__(self, secret: bytes, verifying: Sequence[bytes] = ()) -> None:
        if any(len(s) < 32 for s in (secret, *verifying)):
            raise ValueError("the cursor secret must be at least 32 bytes")
        self._secret = secret[:64]
        self._verifying = [s[:64] for s in verifying]

    def keyed(self, contract_id: str) -> Any:
        """The MAC state after the key and contract id: copied for every cursor of a stream."""
        return _keyed(self._secret, contract_id)

    def _tag(self, contract_id: str, payload: bytes, secret: bytes | None = None) -> bytes:
        mac = _keyed(secret or self._secret, contract_id)
        mac.update(payload)
        return bytes(mac.digest())

    def _signed(self, contract_id: str, payload: bytes, tag: bytes) -> bool:
        """Whether ``tag`` is the MAC of ``payload`` under any secret (the current first)."""
        return any(
            hmac.compare_digest(tag, self._tag(contract_id, payload, secret))
            for secret in (self._secret, *self._verifying)
        )

    def encode(self, contract_id: str, positions: Mapping[int, int]) -> str:
        return CursorWriter(self, contract_id, positions).cursor()

    def decode(self, contract_id: str, cursor: str) -> dict[int, int]:
        if len(cursor) > MAX_CURSOR_LENGTH or cursor.count(".") != 1:
            raise InvalidCursor("the cursor is malformed")
        payload_text, tag_text = cursor.split(".")
        try:
            payload, tag = b64url_decode(payload_text), b64url_decode(tag_text)
        except ValueError:
            raise InvalidCursor("the cursor is malformed") from None
        if not self._signed(contract_id, payload, tag):
            raise InvalidCursor("the cursor was altered or belongs to another contract")
        if not payload.startswith(_VERSION):
            raise InvalidCursor("the cursor version is not supported")
        try:
            return _positions(payload[len(_VERSION) :])
        except ValueError:  # a cursor minted with the secret but not by the gateway
            raise InvalidCursor("the cursor's positions are malformed") from None


class CursorWriter:
    """One stream's position, advanced record by record (the hot path: no sorting, no re-keying,
    bytes throughout)."""

    __slots__ = ("_keyed", "_parts", "positions")

    def __init__(self, codec: CursorCodec, contract_id: str, positions: Mapping[int, int]) -> None:
        self._keyed = codec.keyed(contract_id)
        self.reposition(positions)

    def reposition(self, positions: Mapping[int, int]) -> None:
        """Move to ``positions`` (those another stream reached with the same batch)."""
        self.positions = dict(sorted(positions.items()))
        self._parts = {p: b"%d:%d" % (p, o) for p, o in self.positions.items()}

    def advance(self, partition: int, next_offset: int) -> None:
        """Record that ``partition`` continues at ``next_offset``."""
        if partition not in self._parts:  # a partition unknown at open: keep the order sorted
            self.reposition({**self.positions, partition: next_offset})
        self.positions[partition] = next_offset
        self._parts[partition] = b"%d:%d" % (partition, next_offset)

    def cursor_bytes(self) -> bytes:
        payload = _VERSION + b",".join(self._parts.values())
        mac = self._keyed.copy()
        mac.update(payload)
        # Both halves base64url without padding (one translation for the two).
        cursor = b"%s.%s" % (
            b2a_base64(payload, newline=False),
            b2a_base64(mac.digest(), newline=False),
        )
        return cursor.translate(URLSAFE, b"=")

    def cursor(self) -> str:
        return self.cursor_bytes().decode("ascii")
