"""Where provider-side secrets for field protection live.

- ``LocalKeySource``: the key-encryption key (KEK) in a 0600 file of the state directory. A KMS
  plugs in by implementing ``KeySource`` (``seal``/``open`` calling the KMS's encrypt/decrypt
  with ``context`` as its encryption context / AAD) and naming it in ``GATEWAY_KEY_SOURCE``
  (``module:Class``, constructed without arguments: it reads its own configuration).
- ``FileDataKeyStore``: every data key ever made, sealed under the KEK, one JSON line each, in
  ``data-keys/<contract>.jsonl``. Keys are never deleted, so records in a partner's replay
  window can always be decrypted. Replicas share the state directory, hence the store.
"""

from __future__ import annotations

import base64
import fcntl
import importlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.adapters.stores.state_dir import KEK_FILE
from gateway.services.datakeys import StoredKey


class KeySource(Protocol):
    """Seals and opens small secrets with a key the gateway's files do not hold in clear."""

    def seal(self, secret: bytes, context: bytes) -> bytes: ...
    def open(self, sealed: bytes, context: bytes) -> bytes: ...


class LocalKeySource:
    """AES-256-GCM under a KEK kept in a 0600 file among the gateway's secrets
    (``state_dir.py``)."""

    def __init__(self, path: Path) -> None:
        self._aead = AESGCM(path.read_bytes())

    def seal(self, secret: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, secret, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], context)


class FileDataKeyStore:
    """The data keys of each contract in ``<directory>/<contract>.jsonl`` (``flock``ed)."""

    def __init__(self, directory: Path, source: KeySource) -> None:
        self._directory = directory
        self._source = source

    def _path(self, contract_id: str) -> Path:
        return self._directory / f"{contract_id}.jsonl"

    @contextmanager
    def _locked(self, contract_id: str) -> Iterator[IO[str]]:
        self._directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path(contract_id), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self, handle: IO[str], contract_id: str) -> list[StoredKey]:
        handle.seek(0)
        keys = []
        for line in handle:
            if line.strip():
                item = json.loads(line)
                sealed = base64.b64decode(item["sealed"])
                secret = self._source.open(sealed, f"{contract_id}/{item['kid']}".encode())
                keys.append(StoredKey(item["kid"], item["created"], item["recipient_kid"], secret))
        return keys

    def all(self, contract_id: str) -> list[StoredKey]:
        if not self._path(contract_id).exists():
            return []
        with self._locked(contract_id) as handle:
            return self._read(handle, contract_id)

    def append(self, contract_id: str, key: StoredKey) -> None:
        sealed = self._source.seal(key.secret, f"{contract_id}/{key.kid}".encode())
        line = {
            "kid": key.kid,
            "created": key.created,
            "recipient_kid": key.recipient_kid,
            "sealed": base64.b64encode(sealed).decode(),
        }
        with self._locked(contract_id) as handle:
            handle.write(json.dumps(line) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def key_source(spec: str | None, secrets_dir: Path) -> KeySource:
    """The configured ``KeySource``: ``module:Class``, or the local KEK file by default."""
    if not spec:
        return LocalKeySource(secrets_dir / KEK_FILE)
    module_name, _, class_name = spec.partition(":")
    module = importlib.import_module(module_name)
    source: KeySource = getattr(module, class_name)()
    return source
