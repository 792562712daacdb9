"""The gateway's own secrets: five files every replica must share, each mode 0600.

- ``gateway-signing.jwks.json``: the P-256 keys of access tokens: the first signs, every one
  verifies and is published in ``/.well-known/jwks.json``;
- ``ledger-signing.jwks.json``: the Ed25519 keys of the ledger's checkpoints, the streams'
  receipts and the service-level summaries: the first signs, every one verifies the gateway's
  own evidence and is published (public halves) in ``/.well-known/jwks.json``;
- ``cursor.key``: the secret protecting cursors (``cursor.previous.key`` and
  ``cursor.next.key``, present during a rotation, only verify);
- ``pseudonym.key``: the master secret of keyed pseudonyms (never leaves the gateway, never
  rotated: every pseudonym would change meaning);
- ``kek.key``: the key-encryption key sealing data keys (unless a KMS is configured,
  ``keys.py``; ``kek.previous.key`` and ``kek.next.key``, present during a rotation, only open).

Two ways to hold them:

- an operator creates them once with ``gateway state init DIR`` and gives every replica the
  same files, read-only (a Kubernetes Secret, ``GATEWAY_SECRETS_DIR``): the gateway never
  writes there, and refuses to start if one is missing;
- or, on one host (``gateway demo``, a single replica), they are created in the state
  directory on first start.

Replicas must share them: a token or cursor from one replica is valid at all, and a
record one replica encrypted is decrypted with a data key sealed under the same KEK.

Rotation (``rotate``, ``gateway state rotate``) runs in three phases, each followed by a
rolling restart, so that at every moment each replica accepts what any other one produces:

- ``add``: a new key that only verifies (replicas learn it before any replica uses it);
- ``promote``: the new key signs, the old one only verifies (replicas not yet restarted
  already know the new key, restarted ones still know the old);
- ``retire``: the old key is dropped (once nothing signed by it is still needed).

In a JWKS file the key that signs is the first, and the key ``add`` made is the newest (its
``iat`` member, the time it was made); in a file secret the phases are the files
``<name>.next.key`` and ``<name>.previous.key``.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

from joserfc.jwk import ECKey, KeySet, OKPKey

from gateway.errors import StateInvalid

SIGNING_KEY_FILE = "gateway-signing.jwks.json"
LEDGER_KEY_FILE = "ledger-signing.jwks.json"
CURSOR_KEY_FILE = "cursor.key"
PSEUDONYM_KEY_FILE = "pseudonym.key"
KEK_FILE = "kek.key"
#: Every file ``gateway state init`` creates.
SECRET_FILES = (SIGNING_KEY_FILE, LEDGER_KEY_FILE, CURSOR_KEY_FILE, PSEUDONYM_KEY_FILE, KEK_FILE)


def next_file(name: str) -> str:
    """Where ``add`` puts the next value of a file secret: ``cursor.key`` → ``cursor.next.key``."""
    return name.replace(".key", ".next.key")


def previous_file(name: str) -> str:
    """Where ``promote`` keeps the value it replaced: ``cursor.key`` → ``cursor.previous.key``."""
    return name.replace(".key", ".previous.key")


@dataclass(frozen=True)
class GatewaySecrets:
    #: Access tokens' keys: the first signs, all verify.
    signing_keys: KeySet
    cursor_secret: bytes
    #: The master secret from which each contract version's pseudonym key is derived.
    pseudonym_secret: bytes
    #: The ledger's keys (checkpoints, receipts, summaries): the first signs, all verify.
    ledger_keys: KeySet
    #: Cursor secrets that only verify (``cursor.previous.key``, ``cursor.next.key``).
    cursor_verifying: tuple[bytes, ...] = ()

    @property
    def ledger_key(self) -> OKPKey:
        """The key that signs the ledger's checkpoints, receipts and summaries."""
        return cast(OKPKey, self.ledger_keys.keys[0])  # load_secrets refuses any other


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def replace_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically with mode 0600: a temporary file beside it, synced, renamed
    over it (a reader, or a crash, sees the old content or the new, never a part)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """Make a rename or removal in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def init_secrets(directory: Path) -> list[str]:
    """Create the secrets missing from ``directory`` (never overwrite one); the names made.

    Each is written whole to a temporary file, synced, and linked into place only if no file
    has that name yet: processes starting together on one fresh directory (``--workers``)
    all end up reading the same secrets, and a crash leaves no half-written one."""
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    for name in SECRET_FILES:
        path = directory / name
        if not path.exists() and _create_exclusive(path, _new_secret(name, time.time())):
            made.append(name)
    return made


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` (mode 0600) unless it exists; whether this did."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp makes it 0600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)  # fails if another process made it first
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)
    sync_directory(path.parent)
    return True


def _new_secret(name: str, now: float) -> bytes:
    if name in (SIGNING_KEY_FILE, LEDGER_KEY_FILE):
        return _dump_keys([_new_signing_key(name, now)])
    return secrets.token_bytes(32)  # cursor, pseudonym and key-encryption keys: 256 bits


def _new_signing_key(name: str, now: float) -> dict[str, Any]:
    """A private JWK for ``name``'s file; ``iat`` (when it was made) tells ``promote`` which
    key is the newest."""
    key: ECKey | OKPKey
    if name == SIGNING_KEY_FILE:
        key = ECKey.generate_key("P-256", parameters={"use": "sig", "alg": "ES256"}, auto_kid=True)
    else:
        key = OKPKey.generate_key("Ed25519", parameters={"use": "sig"}, auto_kid=True)
    return {**key.as_dict(private=True), "iat": now}


def _dump_keys(keys: list[dict[str, Any]]) -> bytes:
    return json.dumps({"keys": keys}).encode()


def load_secrets(directory: Path, *, create: bool, kek: bool = True) -> GatewaySecrets:
    """The secrets in ``directory``; with ``create``, those missing are made first, else a
    missing one is ``StateInvalid`` (the directory is only read: a read-only mount works).
    Without ``kek`` (a KMS seals the data keys) no ``kek.key`` is needed."""
    if create:
        init_secrets(directory)
    needed = [name for name in SECRET_FILES if kek or name != KEK_FILE]
    missing = [name for name in needed if not (directory / name).is_file()]
    if missing:
        raise StateInvalid(
            f"{directory}: missing {', '.join(missing)}: create them once with `gateway state "
            "init DIR` and give every replica the same files (docs/operations.md)"
        )
    signing_keys = _key_set(directory / SIGNING_KEY_FILE)
    ledger_keys = _key_set(directory / LEDGER_KEY_FILE)
    if not all(isinstance(key, OKPKey) for key in ledger_keys):
        raise StateInvalid(f"{directory / LEDGER_KEY_FILE}: not only Ed25519 keys")
    verifying = [directory / f(CURSOR_KEY_FILE) for f in (previous_file, next_file)]
    return GatewaySecrets(
        signing_keys=signing_keys,
        cursor_secret=_secret(directory / CURSOR_KEY_FILE),
        pseudonym_secret=_secret(directory / PSEUDONYM_KEY_FILE),
        ledger_keys=ledger_keys,
        cursor_verifying=tuple(_secret(path) for path in verifying if path.is_file()),
    )


def _key_set(path: Path) -> KeySet:
    try:
        keys = KeySet.import_key_set(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:  # joserfc's and json's refusals
        raise StateInvalid(f"{path}: a signing key cannot be read ({exc})") from None
    if not keys.keys:
        raise StateInvalid(f"{path}: no key")
    return keys


def _secret(path: Path) -> bytes:
    value = path.read_bytes()
    if len(value) < 32:
        raise StateInvalid(f"{path}: shorter than 32 bytes (make it with `gateway state init`)")
    return value


class Phase(StrEnum):
    """A step of a rotation, each followed by a rolling restart (the module docstring)."""

    ADD = "add"
    PROMOTE = "promote"
    RETIRE = "retire"


#: The secrets ``rotate`` knows, by the name an operator gives, and their files.
ROTATABLE = {
    "gateway-signing": SIGNING_KEY_FILE,
    "ledger-signing": LEDGER_KEY_FILE,
    "cursor": CURSOR_KEY_FILE,
    "kek": KEK_FILE,
}
#: Never rotated, and why (``rotate`` says so).
NOT_ROTATABLE = {
    "pseudonym": "pseudonym.key is never rotated: every pseudonym partners hold would change "
    "meaning (a new key is a new pseudonym for every person)",
}


def rotate(directory: Path, secret: str, phase: Phase, *, now: float) -> list[str]:
    """Take ``secret`` (a name of ``ROTATABLE``) one ``phase`` further in ``directory``; what
    changed, one line each. ``StateInvalid`` (nothing changed) for an unknown secret or a
    phase out of order. Files are replaced atomically and keep mode 0600. The KEK's
    ``retire`` must re-seal the data keys first (``keys.retire_kek``)."""
    if secret in NOT_ROTATABLE:
        raise StateInvalid(NOT_ROTATABLE[secret])
    if secret not in ROTATABLE:
        known = ", ".join([*ROTATABLE, *NOT_ROTATABLE])
        raise StateInvalid(f"{secret!r} is not a secret of the gateway (one of: {known})")
    path = directory / ROTATABLE[secret]
    if not path.is_file():
        raise StateInvalid(f"{path}: missing: create it with `gateway state init DIR`")
    if path.suffix == ".json":
        return [_rotate_key_set(path, phase, now)]
    return _rotate_file(path, phase)


def _rotate_key_set(path: Path, phase: Phase, now: float) -> str:
    _key_set(path)  # one that load_secrets reads, or StateInvalid
    keys = list(json.loads(path.read_text())["keys"])
    # The newest key (greatest iat; keys made before rotation existed have none, and the
    # first wins a tie) is first unless one was added and not promoted yet.
    newest = max(range(len(keys)), key=lambda i: (keys[i].get("iat", 0), -i))
    pending = keys[newest].get("kid") if newest else None
    if phase is Phase.ADD:
        if pending:
            raise StateInvalid(
                f"{path}: key {pending} was added and not promoted yet: run --phase promote"
            )
        key = _new_signing_key(path.name, now)
        replace_private(path, _dump_keys([*keys, key]))
        return f"added key {key['kid']} to {path} (verifies now, signs after --phase promote)"
    if phase is Phase.PROMOTE:
        if not pending:
            raise StateInvalid(
                f"{path}: no key was added since the last promotion: run --phase add first"
            )
        replace_private(path, _dump_keys([keys[newest], *keys[:newest], *keys[newest + 1 :]]))
        return f"promoted key {pending} in {path} (signs now; {keys[0].get('kid')} still verifies)"
    if pending:
        raise StateInvalid(
            f"{path}: key {pending} was added and not promoted yet: promote it first"
        )
    if len(keys) == 1:
        raise StateInvalid(f"{path}: nothing to retire: it holds one key")
    replace_private(path, _dump_keys(keys[:1]))
    dropped = ", ".join(str(k.get("kid")) for k in keys[1:])
    kept = (
        ""
        if path.name != LEDGER_KEY_FILE
        else (
            "; what they signed no longer verifies against /.well-known/jwks.json: keep the JWKS "
            "published before this step"
        )
    )
    return f"retired {dropped} from {path} (only {keys[0].get('kid')} is left){kept}"


def _rotate_file(path: Path, phase: Phase) -> list[str]:
    upcoming, previous = (
        path.with_name(next_file(path.name)),
        path.with_name(previous_file(path.name)),
    )
    if phase is Phase.ADD:
        if upcoming.exists():
            raise StateInvalid(
                f"{upcoming}: a key was added and not promoted yet: run --phase promote"
            )
        replace_private(upcoming, secrets.token_bytes(32))
        return [f"created {upcoming} (accepted now, in use from --phase promote)"]
    if phase is Phase.PROMOTE:
        if not upcoming.exists():
            raise StateInvalid(f"{upcoming}: missing: run --phase add first")
        current = path.read_bytes()
        # Equal: a promotion stopped between its two renames, taken up again.
        if previous.exists() and previous.read_bytes() != current:
            raise StateInvalid(
                f"{previous}: the key before the last rotation is still kept: run --phase "
                "retire first"
            )
        replace_private(previous, current)
        os.replace(upcoming, path)
        sync_directory(path.parent)
        return [
            f"moved {path.name} to {previous} (still accepted, no longer used)",
            f"moved {upcoming.name} to {path} (in use now)",
        ]
    if not previous.exists():
        raise StateInvalid(f"{previous}: missing: nothing to retire")
    previous.unlink()
    sync_directory(path.parent)
    return [f"removed {previous}"]


def check_writable(state_dir: Path) -> None:
    """Fail at start, not at the first encrypted record, when the state directory (data keys
    are written there) cannot be written: a volume owned by another user, a read-only mount."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        # A name of its own: replicas start together on one shared volume (each is PID 1).
        fd, probe = tempfile.mkstemp(dir=state_dir, prefix=".writable-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StateInvalid(
            f"{state_dir}: the state directory cannot be written ({exc.strerror or exc}): the "
            f"gateway keeps data keys there; give user {os.getuid()} a writable volume"
        ) from None
