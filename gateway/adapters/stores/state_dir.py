"""The gateway's own secrets: five files every replica must share, each mode 0600.

- ``gateway-signing.jwks.json``: the P-256 key signing access tokens;
- ``ledger-signing.jwks.json``: the Ed25519 key signing the ledger's checkpoints and the
  streams' receipts (its public half is in ``/.well-known/jwks.json``);
- ``cursor.key``: the secret protecting cursors;
- ``pseudonym.key``: the master secret of keyed pseudonyms (never leaves the gateway);
- ``kek.key``: the key-encryption key sealing data keys (unless a KMS is configured,
  ``keys.py``).

Two ways to hold them:

- an operator creates them once with ``gateway state init DIR`` and gives every replica the
  same files, read-only (a Kubernetes Secret, ``GATEWAY_SECRETS_DIR``): the gateway never
  writes there, and refuses to start if one is missing;
- or, on one host (``gateway demo``, a single replica), they are created in the state
  directory on first start.

Replicas must share them: a token or cursor from one replica is valid at all, and a
record one replica encrypted is decrypted with a data key sealed under the same KEK.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from joserfc.jwk import ECKey, KeySet, OKPKey

from gateway.errors import SecretsMissing

SIGNING_KEY_FILE = "gateway-signing.jwks.json"
LEDGER_KEY_FILE = "ledger-signing.jwks.json"
CURSOR_KEY_FILE = "cursor.key"
PSEUDONYM_KEY_FILE = "pseudonym.key"
KEK_FILE = "kek.key"
#: Every file ``gateway state init`` creates.
SECRET_FILES = (SIGNING_KEY_FILE, LEDGER_KEY_FILE, CURSOR_KEY_FILE, PSEUDONYM_KEY_FILE, KEK_FILE)


@dataclass(frozen=True)
class GatewaySecrets:
    signing_keys: KeySet
    cursor_secret: bytes
    #: The master secret from which each contract version's pseudonym key is derived.
    pseudonym_secret: bytes
    #: Signs the ledger's checkpoints (chain heads).
    ledger_key: OKPKey


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def init_secrets(directory: Path) -> list[str]:
    """Create the secrets missing from ``directory`` (never overwrite one); the names made."""
    made = []
    for name in SECRET_FILES:
        path = directory / name
        if not path.exists():
            write_private(path, _new_secret(name))
            made.append(name)
    return made


def _new_secret(name: str) -> bytes:
    if name == SIGNING_KEY_FILE:
        key = ECKey.generate_key("P-256", parameters={"use": "sig", "alg": "ES256"}, auto_kid=True)
        return json.dumps(KeySet([key]).as_dict(private=True)).encode()
    if name == LEDGER_KEY_FILE:
        okp = OKPKey.generate_key("Ed25519", parameters={"use": "sig"}, auto_kid=True)
        return json.dumps(KeySet([okp]).as_dict(private=True)).encode()
    return secrets.token_bytes(32)  # cursor, pseudonym and key-encryption keys: 256 bits


def load_secrets(directory: Path, *, create: bool, kek: bool = True) -> GatewaySecrets:
    """The secrets in ``directory``; with ``create``, those missing are made first, else a
    missing one is ``SecretsMissing`` (the directory is only read: a read-only mount works).
    Without ``kek`` (a KMS seals the data keys) no ``kek.key`` is needed."""
    if create:
        init_secrets(directory)
    needed = [name for name in SECRET_FILES if kek or name != KEK_FILE]
    missing = [name for name in needed if not (directory / name).is_file()]
    if missing:
        raise SecretsMissing(
            f"{directory}: missing {', '.join(missing)}: create them once with `gateway state "
            "init DIR` and give every replica the same files (docs/operations.md)"
        )
    try:
        signing_keys = KeySet.import_key_set(json.loads((directory / SIGNING_KEY_FILE).read_text()))
        ledger_keys = KeySet.import_key_set(json.loads((directory / LEDGER_KEY_FILE).read_text()))
    except (ValueError, KeyError, TypeError) as exc:  # joserfc's and json's refusals
        raise SecretsMissing(f"{directory}: a signing key cannot be read ({exc})") from None
    ledger_key = ledger_keys.keys[0]
    if not isinstance(ledger_key, OKPKey):
        raise SecretsMissing(f"{directory / LEDGER_KEY_FILE}: not an Ed25519 key")
    return GatewaySecrets(
        signing_keys,
        _secret(directory / CURSOR_KEY_FILE),
        _secret(directory / PSEUDONYM_KEY_FILE),
        ledger_key,
    )


def _secret(path: Path) -> bytes:
    value = path.read_bytes()
    if len(value) < 32:
        raise SecretsMissing(f"{path}: shorter than 32 bytes (make it with `gateway state init`)")
    return value


def check_writable(state_dir: Path) -> None:
    """Fail at start, not at the first encrypted record, when the state directory (data keys
    are written there) cannot be written: a volume owned by another user, a read-only mount."""
    probe = state_dir / f".writable-{os.getpid()}"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SecretsMissing(
            f"{state_dir}: the state directory cannot be written ({exc.strerror or exc}): the "
            f"gateway keeps data keys there; give user {os.getuid()} a writable volume"
        ) from None
