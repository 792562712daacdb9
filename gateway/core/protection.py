"""Protected fields: keyed pseudonyms, masks, and encryption to the consumer's key.

**Encryption** (see docs/field-encryption.md). Each encrypted value is a compact JWE
(RFC 7516) with ``alg: dir``, ``enc: A256GCM`` under a *data key* (AES-256) named by ``kid``.
Its protected header binds the value to where it was sent::

    {"alg":"dir","enc":"A256GCM","kid":"<data key>","fld":"customer.email","pos":"0:42",
     "crit":["fld","pos"]}

The header is the AES-GCM additional data, so it cannot be changed; ``crit`` makes every JOSE
library refuse the JWE unless the application declares it checks ``fld`` and ``pos`` against
the field and record (partition:offset) it found the JWE in. A ciphertext moved to another
field or record is thereby refused. The plaintext is the value's JSON.

The per-field JWE is assembled here with ``cryptography``'s AES-GCM rather than a JOSE
library because it is on the hot path (one per encrypted field per record); its output is
checked against joserfc in the tests, and partners decrypt it with any JOSE library.

**Pseudonyms** are HMAC-SHA-256 over the value's RFC 8785 JSON, with a key that belongs to one
contract version: the same input gives the same pseudonym within it, and unlinkable ones across
contracts (and so across partners). The key never leaves the gateway.
"""

from __future__ import annotations

import hmac
import os
from binascii import b2a_base64
from dataclasses import dataclass
from typing import Any

import orjson
import rfc8785
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc import jwe
from joserfc.jwk import OKPKey

from gateway.core.canonical import canonical_json
from gateway.core.contracts import FieldAction, FieldRule
from gateway.core.jose import URLSAFE, b64url
from gateway.core.projection import MISSING, encode_json

FIELD_JWE_ALG, FIELD_JWE_ENC = "dir", "A256GCM"


@dataclass(frozen=True)
class DataKey:
    """An AES-256 key for one contract and epoch, and its wrap to the consumer's key."""

    kid: str
    secret: bytes
    #: Compact JWE (ECDH-ES+A256KW, A256GCM) of the key as a JWK, to the consumer's X25519 key.
    wrapped: str

    def announcement(self) -> dict[str, str]:
        return {"kid": self.kid, "jwe": self.wrapped}


def pseudonym_key(master: bytes, contract_id: str, version_hash: str) -> bytes:
    """The pseudonym key of one contract version (rotates with every new version)."""
    return hmac.digest(master, f"pseudonym\0{contract_id}\0{version_hash}".encode(), "sha256")


def pseudonym(key: bytes, value: Any) -> str:
    return b64url(hmac.digest(key, canonical_json(value), "sha256"))


class ContractProtector:
    """Applies one stream's protected rules; ``position`` is set before each record."""

    #: Random IVs drawn from the OS this many at a time (one system call, not one per field).
    IV_BATCH = 256
    #: Header prefixes kept per field path (list elements have a path each: bounded).
    MAX_PREFIXES = 1024

    def __init__(self, pseudonyms: bytes, data_key: DataKey | None) -> None:
        self._pseudonyms = pseudonyms
        self.data_key: DataKey | None = None
        self._aead: AESGCM | None = None
        self._prefixes: dict[str, bytes] = {}
        self._ivs = b""
        self._iv_at = 0
        #: ``partition:offset`` of the record being protected (ASCII digits).
        self.position = b""
        if data_key is not None:
            self.use(data_key)

    def use(self, data_key: DataKey) -> None:
        self.data_key = data_key
        self._aead = AESGCM(data_key.secret)
        self._prefixes = {}

    def protect(self, rule: FieldRule, value: Any, path: str) -> Any:
        action = rule.action
        if action is FieldAction.ENCRYPT and self._aead is not None:
            return self.encrypt(value, path)
        if action is FieldAction.HASH:
            if value is None:
                return None
            try:
                return pseudonym(self._pseudonyms, value)
            # Beyond RFC 8785's numbers (|n| >= 2**53), or nested past any canonical form.
            except (rfc8785.CanonicalizationError, RecursionError):
                return MISSING
        if action is FieldAction.MASK and rule.mask is not None:
            return rule.mask.apply(value)
        return MISSING  # never send what could not be protected

    def _prefix(self, path: str) -> bytes:
        """The protected header up to the record's position, for a field of the current key."""
        prefix = self._prefixes.get(path)
        if prefix is None:
            if self.data_key is None:
                raise RuntimeError("no data key is in use: call use() before encrypting")
            header = encode_json(
                {"alg": FIELD_JWE_ALG, "enc": FIELD_JWE_ENC, "kid": self.data_key.kid, "fld": path}
            )
            prefix = header[:-1] + b',"pos":"'
            if len(self._prefixes) < self.MAX_PREFIXES:
                self._prefixes[path] = prefix
        return prefix

    def encrypt(self, value: Any, path: str) -> str:
        if self._aead is None:
            raise RuntimeError("no data key is in use: call use() before encrypting")
        # The position is "partition:offset" (digits only): no JSON escaping needed.
        header = b'%s%s","crit":["fld","pos"]}' % (
            self._prefixes.get(path) or self._prefix(path),
            self.position,
        )
        protected = b2a_base64(header, newline=False).translate(URLSAFE, b"=")
        at = self._iv_at
        if at >= len(self._ivs):
            self._ivs, at = os.urandom(12 * self.IV_BATCH), 0
        self._iv_at = at + 12
        iv = self._ivs[at : at + 12]
        sealed = self._aead.encrypt(iv, encode_json(value), protected)
        # 12 bytes are 16 base64 characters without padding: the IV and the ciphertext are
        # encoded in one pass and split; one translation makes the rest base64url unpadded.
        iv_and_text = b2a_base64(iv + sealed[:-16], newline=False)
        compact = b"%s..%s.%s.%s" % (
            protected,
            iv_and_text[:16],
            iv_and_text[16:],
            b2a_base64(sealed[-16:], newline=False),
        )
        return compact.translate(URLSAFE, b"=").decode("ascii")


def new_data_key_secret() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def data_key_jwk(kid: str, secret: bytes) -> dict[str, str]:
    return {"kty": "oct", "alg": FIELD_JWE_ENC, "kid": kid, "k": b64url(secret)}


def wrap_data_key(secret: bytes, kid: str, recipient: OKPKey) -> str:
    """The data key for the consumer: a compact JWE (``ECDH-ES+A256KW``, ``A256GCM``, ``kid``
    of the consumer's X25519 key) whose plaintext is the data key as a JWK (``kty: oct``)."""
    header = {"alg": "ECDH-ES+A256KW", "enc": FIELD_JWE_ENC, "kid": recipient.kid}
    return jwe.encrypt_compact(header, orjson.dumps(data_key_jwk(kid, secret)), recipient)
