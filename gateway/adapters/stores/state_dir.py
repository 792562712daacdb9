"""The gateway's own secrets, created on first start in the state directory.

- ``gateway-signing.jwks.json``: the P-256 key signing access tokens (private, 0600);
- ``ledger-signing.jwks.json``: the Ed25519 key signing the ledger's checkpoints (private,
  0600; its public half is in ``/.well-known/jwks.json``);
- ``cursor.key``: the secret protecting cursors;
- ``pseudonym.key``: the master secret of keyed pseudonyms (never leaves the gateway);
- ``kek.key`` and ``data-keys/``: see ``keys.py``.

Replicas behind one load balancer must share both (mount the same state directory or
distribute the two files as secrets): a token or cursor from one replica is valid at all.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from joserfc.jwk import ECKey, KeySet, OKPKey

from gateway.errors import DocumentInvalid

SIGNING_KEY_FILE = "gateway-signing.jwks.json"
LEDGER_KEY_FILE = "ledger-signing.jwks.json"
CURSOR_KEY_FILE = "cursor.key"
PSEUDONYM_KEY_FILE = "pseudonym.key"


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


def load_or_create(state_dir: Path) -> GatewaySecrets:
    key_path = state_dir / SIGNING_KEY_FILE
    if not key_path.exists():
        key = ECKey.generate_key("P-256", parameters={"use": "sig", "alg": "ES256"}, auto_kid=True)
        write_private(key_path, json.dumps(KeySet([key]).as_dict(private=True)).encode())
    signing_keys = KeySet.import_key_set(json.loads(key_path.read_text()))
    ledger_path = state_dir / LEDGER_KEY_FILE
    if not ledger_path.exists():
        okp = OKPKey.generate_key("Ed25519", parameters={"use": "sig"}, auto_kid=True)
        write_private(ledger_path, json.dumps(KeySet([okp]).as_dict(private=True)).encode())
    ledger_key = KeySet.import_key_set(json.loads(ledger_path.read_text())).keys[0]
    if not isinstance(ledger_key, OKPKey):
        raise DocumentInvalid(f"{ledger_path}: not an Ed25519 key")
    return GatewaySecrets(
        signing_keys,
        _secret(state_dir / CURSOR_KEY_FILE),
        _secret(state_dir / PSEUDONYM_KEY_FILE),
        ledger_key,
    )


def _secret(path: Path) -> bytes:
    if not path.exists():
        write_private(path, secrets.token_bytes(32))
    return path.read_bytes()
