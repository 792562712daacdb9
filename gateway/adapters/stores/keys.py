"""Where provider-side secrets for field protection live.

- ``LocalKeySource``: the key-encryption key (KEK) in a 0600 file of the state directory. A KMS
  plugs in by implementing ``KeySource`` (``seal``/``open`` calling the KMS's encrypt/decrypt
  with ``context`` as its encryption context / AAD) and naming it in ``GATEWAY_KEY_SOURCE``
  (``module:Class``, constructed without arguments: it reads its own configuration).
- ``FileDataKeyStore``: every data key ever made, sealed under the KEK, one JSON line each, in
  ``data-keys/<contract>.jsonl``. Keys are never deleted, so records in a partner's replay
  window can always be decrypted. Replicas share the state directory, hence the store.

Rotating the local KEK (``state_dir.py``'s phases) never leaves a data key unreadable:
``kek.next.key`` (after ``add``) and ``kek.previous.key`` (after ``promote``) open what they
sealed, so every replica opens what any other replica, restarted or not, sealed during the
rolling restarts; ``retire_kek`` re-seals every data key under ``kek.key`` before it removes
``kek.previous.key``.
"""

from __future__ import annotations

import base64
import fcntl
import importlib
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.adapters.stores.state_dir import (
    KEK_FILE,
    Phase,
    next_file,
    previous_file,
    replace_private,
    rotate,
)
from gateway.errors import StateInvalid
from gateway.services.datakeys import StoredKey


class KeySource(Protocol):
    """Seals and opens small secrets with a key the gateway's files do not hold in clear."""

    def seal(self, secret: bytes, context: bytes) -> bytes: ...
    def open(self, sealed: bytes, context: bytes) -> bytes: ...


class LocalKeySource:
    """AES-256-GCM under a KEK kept in a 0600 file among the gateway's secrets
    (``state_dir.py``): ``kek`` seals and opens, each of ``opening`` only opens."""

    def __init__(self, kek: bytes, opening: Sequence[bytes] = ()) -> None:
        self._aead = AESGCM(kek)
        self._opening = [AESGCM(other) for other in opening]

    @classmethod
    def from_directory(cls, directory: Path) -> LocalKeySource:
        """``kek.key``, with ``kek.previous.key`` and ``kek.next.key`` when a rotation is under
        way."""
        others = [directory / f(KEK_FILE) for f in (previous_file, next_file)]
        kek = (directory / KEK_FILE).read_bytes()
        return cls(kek, [path.read_bytes() for path in others if path.is_file()])

    def seal(self, secret: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, secret, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        """The secret; ``InvalidTag`` when no KEK present opens it."""
        nonce, ciphertext = sealed[:12], sealed[12:]
        try:
            return self._aead.decrypt(nonce, ciphertext, context)
        except InvalidTag:
            for other in self._opening:  # a rotation under way (the module docstring)
                try:
                    return other.decrypt(nonce, ciphertext, context)
                except InvalidTag:
                    continue
            raise


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
        path = self._path(contract_id)
        while True:
            handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "r+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
                # ``reseal`` renames a new file over this one while it holds the lock: a writer
                # that waited for it would append to the replaced file, and the key be lost.
                held, there = os.fstat(handle.fileno()), os.stat(path)
            except BaseException:
                handle.close()
                raise
            if (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino):
                break
            handle.close()
        with handle:
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _items(self, handle: IO[str], contract_id: str) -> Iterator[tuple[dict[str, Any], bytes]]:
        """Each line as written, with the data key it seals opened."""
        handle.seek(0)
        for line in handle:
            if line.strip():
                item = json.loads(line)
                sealed = base64.b64decode(item["sealed"])
                context = f"{contract_id}/{item['kid']}".encode()
                yield item, self._source.open(sealed, context)

    def _read(self, handle: IO[str], contract_id: str) -> list[StoredKey]:
        return [
            StoredKey(item["kid"], item["created"], item["recipient_kid"], secret)
            for item, secret in self._items(handle, contract_id)
        ]

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

    def reseal(self) -> int:
        """Seal every data key anew under the source's current key (each file rewritten
        whole to a temporary file and renamed over it while its lock is held, so a writer
        never appends to the replaced file, ``_locked``); how many were sealed. A key no
        key of the source opens stops it before its file is touched (``StateInvalid``)."""
        count = 0
        for path in sorted(self._directory.glob("*.jsonl")):
            contract_id = path.stem
            with self._locked(contract_id) as handle:
                lines = []
                try:
                    for item, secret in self._items(handle, contract_id):
                        sealed = self._source.seal(secret, f"{contract_id}/{item['kid']}".encode())
                        sealed_text = base64.b64encode(sealed).decode()
                        lines.append(json.dumps({**item, "sealed": sealed_text}))
                except InvalidTag:
                    raise StateInvalid(
                        f"{path}: a data key opens under none of the KEKs present: put the KEK "
                        f"it was sealed under back as {previous_file(KEK_FILE)} and run again"
                    ) from None
                replace_private(path, "".join(f"{line}\n" for line in lines).encode())
                count += len(lines)
        return count


def retire_kek(secrets_dir: Path, data_keys: Path) -> list[str]:
    """The last phase of a KEK rotation: every data key in ``data_keys`` re-sealed under
    ``kek.key``, then ``kek.previous.key`` removed (``state_dir.rotate``); what changed.
    Run it once no replica seals under the previous KEK any more (the promotion rolled out):
    a key sealed later under it would open only with a copy of the old KEK."""
    previous = secrets_dir / previous_file(KEK_FILE)
    if not previous.is_file():
        raise StateInvalid(f"{previous}: missing: nothing to retire")
    if not data_keys.is_dir():  # a mistyped state directory would leave every key unsealed
        raise StateInvalid(
            f"{data_keys}: missing: give the state directory the replicas share (with no data "
            f"key made yet, remove {previous} by hand)"
        )
    store = FileDataKeyStore(data_keys, LocalKeySource.from_directory(secrets_dir))
    count = store.reseal()
    done = f"re-sealed {count} data keys in {data_keys} under {secrets_dir / KEK_FILE}"
    return [done, *rotate(secrets_dir, "kek", Phase.RETIRE, now=0.0)]  # (no time for a file)


def key_source(spec: str | None, secrets_dir: Path) -> KeySource:
    """The configured ``KeySource``: ``module:Class``, or the local KEK files by default."""
    if not spec:
        return LocalKeySource.from_directory(secrets_dir)
    module_name, _, class_name = spec.partition(":")
    module = importlib.import_module(module_name)
    source: KeySource = getattr(module, class_name)()
    return source
