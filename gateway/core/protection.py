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
from dataclasses import dataclass
from typing import Any

import orjson
import rfc8785
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc import jwe
from joserfc.jwk import OKPKey

from gateway.core.contracts import FieldAction, FieldRule
from gateway.core.jose import b64url
from gateway.core.projection import MISSING

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
    return b64url(hmac.digest(key, rfc8785.dumps(value), "sha256"))


class ContractProtector:
    """Applies one stream's protected rules; ``position`` is set before each record."""

    def __init__(self, pseudonyms: bytes, data_key: DataKey | None) -> None:
        self._pseudonyms = pseudonyms
        self.data_key = data_key
        self._aead = AESGCM(data_key.secret) if data_key else None
        self.position = ""

    def use(self, data_key: DataKey) -> None:
        self.data_key = data_key
        self._aead = AESGCM(data_key.secret)

    def protect(self, rule: FieldRule, value: Any, path: str) -> Any:
        action = rule.action
        if action is FieldAction.HASH:
            return None if value is None else pseudonym(self._pseudonyms, value)
        if action is FieldAction.MASK and rule.mask is not None:
            return rule.mask.apply(value)
        if action is FieldAction.ENCRYPT and self._aead is not None and self.data_key:
            return self.encrypt(value, path)
        return MISSING  # never send what could not be protected

    def encrypt(self, value: Any, path: str) -> str:
        if self._aead is None or self.data_key is None:
            raise RuntimeError("no data key is in use: call use() before encrypting")
        header = orjson.dumps(
            {
                "alg": FIELD_JWE_ALG,
                "enc": FIELD_JWE_ENC,
                "kid": self.data_key.kid,
                "fld": path,
                "pos": self.position,
                "crit": ["fld", "pos"],
            }
        )
        protected = b64url(header)
        iv = os.urandom(12)
        sealed = self._aead.encrypt(iv, orjson.dumps(value), protected.encode("ascii"))
        return f"{protected}..{b64url(iv)}.{b64url(sealed[:-16])}.{b64url(sealed[-16:])}"


def new_data_key_secret() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def data_key_jwk(kid: str, secret: bytes) -> dict[str, str]:
    return {"kty": "oct", "alg": FIELD_JWE_ENC, "kid": kid, "k": b64url(secret)}


def wrap_data_key(secret: bytes, kid: str, recipient: OKPKey) -> str:
    """The data key for the consumer: a compact JWE (``ECDH-ES+A256KW``, ``A256GCM``, ``kid``
    of the consumer's X25519 key) whose plaintext is the data key as a JWK (``kty: oct``)."""
    header = {"alg": "ECDH-ES+A256KW", "enc": FIELD_JWE_ENC, "kid": recipient.kid}
    return jwe.encrypt_compact(header, orjson.dumps(data_key_jwk(kid, secret)), recipient)
