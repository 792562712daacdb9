"""Data keys for encrypted fields: one per contract and epoch, wrapped to the consumer's key.

A new epoch starts after ``max_records`` encrypted records or ``max_age`` seconds, and at once
when the consumer's encryption key (``use: enc`` in ``keys/<org>.jwks.json``) changes. Wrapping
is a compact JWE (``ECDH-ES+A256KW``, ``A256GCM``, ``kid`` of the consumer's key) whose
plaintext is the data key as a JWK (``kty: oct``, ``alg: A256GCM``, ``kid``).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from joserfc.jwk import KeySet, OKPKey

from gateway.core.protection import DataKey, new_data_key_secret, wrap_data_key
from gateway.errors import NoEncryptionKey


@dataclass(frozen=True)
class StoredKey:
    kid: str
    created: float
    recipient_kid: str
    secret: bytes


class DataKeyStore(Protocol):
    """Every data key ever made, per contract, in the order made (``adapters/stores/keys.py``).

    Keys are never deleted, so records in a partner's replay window can always be decrypted;
    replicas share the store. Blocking."""

    def all(self, contract_id: str) -> list[StoredKey]: ...
    def append(self, contract_id: str, key: StoredKey) -> None: ...


def encryption_key(keys: KeySet | None, org: str) -> OKPKey:
    for key in keys or []:
        if isinstance(key, OKPKey) and key.curve_name == "X25519" and key.get("use") == "enc":
            return key
    raise NoEncryptionKey(
        f"{org} publishes no X25519 encryption key (use: enc)", reason="no_encryption_key"
    )


class DataKeyService:
    def __init__(
        self,
        store: DataKeyStore,
        *,
        max_records: int,
        max_age: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._max_records = max_records
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._current: dict[str, tuple[StoredKey, DataKey]] = {}
        self._used: dict[str, int] = {}

    def current(self, contract_id: str, recipient: OKPKey) -> DataKey:
        """The data key to encrypt with now (a new epoch when due). Blocking (file I/O)."""
        with self._lock:
            found = self._current.get(contract_id)
            if found is None:
                stored = self._store.all(contract_id)
                if stored:
                    latest = stored[-1]
                    found = (
                        latest,
                        DataKey(
                            latest.kid,
                            latest.secret,
                            wrap_data_key(latest.secret, latest.kid, recipient),
                        ),
                    )
            if found is None or self._due(contract_id, found[0], recipient):
                found = self._rotate(contract_id, recipient)
            self._current[contract_id] = found
            return found[1]

    def reserve(self, contract_id: str, recipient: OKPKey, records: int) -> tuple[DataKey, int]:
        """The key for up to ``records`` more encrypted records and how many of them it may
        take (at least one): counts them, and starts a new epoch when due. A stream reserves a
        batch's run at once; a record the row filter then leaves out still counts, so an epoch
        never holds more than ``max_records``."""
        key = self.current(contract_id, recipient)
        with self._lock:
            used = self._used.get(contract_id, 0)
            granted = max(1, min(records, self._max_records - used))
            self._used[contract_id] = used + granted
        return key, granted

    def _due(self, contract_id: str, key: StoredKey, recipient: OKPKey) -> bool:
        return (
            key.recipient_kid != recipient.kid
            or self._clock() - key.created >= self._max_age
            or self._used.get(contract_id, 0) >= self._max_records
        )

    def _rotate(self, contract_id: str, recipient: OKPKey) -> tuple[StoredKey, DataKey]:
        secret = new_data_key_secret()
        kid = f"{contract_id}.{secrets.token_hex(6)}"
        stored = StoredKey(kid, self._clock(), str(recipient.kid), secret)
        self._store.append(contract_id, stored)
        self._used[contract_id] = 0
        return stored, DataKey(kid, secret, wrap_data_key(secret, kid, recipient))

    def wrapped(self, contract_id: str, recipient: OKPKey, kid: str | None) -> list[dict[str, str]]:
        """Every data key of the contract (or the one named), wrapped to the current key."""
        keys = [k for k in self._store.all(contract_id) if kid is None or k.kid == kid]
        return [{"kid": k.kid, "jwe": wrap_data_key(k.secret, k.kid, recipient)} for k in keys]
