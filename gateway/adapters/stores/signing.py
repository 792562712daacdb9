"""Organisation keys and signed documents as files: the use cases behind ``gateway keys`` and
``gateway contract sign`` / ``suspend`` / ``resume`` / ``revoke``.

    <private-dir>/<org>.private.jwks.json   an organisation's private keys (0600, kept secret)
    keys/<org>.jwks.json                    its public keys, ready to publish
    contracts/<id>.<time>.<kind>.yaml       a signed statement about a contract

Everything here raises ``gateway.errors`` (``DocumentInvalid`` for a key or contract file that
cannot be used, ``DocumentExists`` for a file that would be overwritten, ``ContractNotFound``);
the command line turns them into messages.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from joserfc.jwk import KeySet, OKPKey

from gateway.adapters.stores.contracts_dir import KEYS_SUFFIX, load_registry
from gateway.adapters.stores.state_dir import write_private
from gateway.core.contracts import parse_contract
from gateway.core.documents import canonical_bytes, load_yaml, with_signatures
from gateway.core.jose import (
    generate_org_keys,
    parse_private_jwks,
    private_jwks,
    public_jwks,
    sign_detached,
    signature_header,
    signing_key,
)
from gateway.core.times import rfc3339
from gateway.errors import ContractNotFound, DocumentExists, DocumentInvalid

PRIVATE_SUFFIX = ".private.jwks.json"


def org_of_key_file(path: Path) -> str:
    """The organisation a key file belongs to, by its name: ``acme.private.jwks.json``."""
    return path.name.split(".", 1)[0]


def read_private_keys(path: Path) -> KeySet:
    """The key set in a private JWKS file; ``DocumentInvalid`` says why a file cannot be one."""
    if path.is_dir():
        raise DocumentInvalid(f"{path}: a directory, not a JWKS file")
    try:
        text = path.read_text()
    except OSError as exc:
        raise DocumentInvalid(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DocumentInvalid(f"{path}: not a JWKS (not even text)") from None
    if not text.strip():
        raise DocumentInvalid(f"{path}: the file is empty; a private JWKS was expected")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentInvalid(
            f"{path}: not JSON ({exc.msg}, line {exc.lineno} column {exc.colno}); "
            "a private JWKS was expected"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise DocumentInvalid(f"{path}: not a JWKS (expected an object with 'keys')")
    return parse_private_jwks(data, source=str(path))


def private_signing_key(keys: KeySet, *, source: Path) -> OKPKey:
    """The Ed25519 signing key of a private key set; refuses a public JWKS with a hint."""
    try:
        key = signing_key(keys)
    except DocumentInvalid as exc:
        raise DocumentInvalid(f"{source}: {exc.detail}") from None
    if not key.is_private:
        raise DocumentInvalid(
            f"{source}: holds public keys only, nothing to sign with; give the private JWKS "
            f"(<org>{PRIVATE_SUFFIX}, written by `gateway keys generate`)"
        )
    return key


def read_signing_key(path: Path) -> OKPKey:
    """The Ed25519 signing key in a private JWKS file."""
    return private_signing_key(read_private_keys(path), source=path)


def generate_keys(org: str, keys_dir: Path, private_dir: Path, *, force: bool = False) -> Path:
    """New keys for ``org``: the private JWKS (0600) in ``private_dir``, the public one in
    ``keys_dir``; the private file's path."""
    private_path = private_dir / f"{org}{PRIVATE_SUFFIX}"
    if private_path.exists() and not force:
        raise DocumentExists(f"{private_path} exists; pass --force to replace it")
    key_set = generate_org_keys()
    write_private(private_path, json.dumps(private_jwks(key_set), indent=2).encode())
    keys_dir.mkdir(parents=True, exist_ok=True)
    (keys_dir / f"{org}{KEYS_SUFFIX}").write_text(json.dumps(public_jwks(key_set), indent=2) + "\n")
    return private_path


def rotate_keys(org: str, keys_dir: Path, private_dir: Path) -> tuple[str, str]:
    """A new Ed25519 signing key for ``org``, first in its private JWKS (so it signs from
    now on); every older key stays, in the private and the public JWKS, so that signatures
    made with them keep verifying. ``(new kid, previous signing kid)``."""
    private_path = private_dir / f"{org}{PRIVATE_SUFFIX}"
    keys = read_private_keys(private_path)
    previous = private_signing_key(keys, source=private_path)
    new = OKPKey.generate_key("Ed25519", parameters={"use": "sig"}, auto_kid=True)
    rotated = KeySet([new, *keys])
    # Written beside and renamed over: a crash half-way never leaves the keys half-written.
    staged = private_path.with_name(private_path.name + ".new")
    write_private(staged, json.dumps(private_jwks(rotated), indent=2).encode())
    staged.replace(private_path)
    keys_dir.mkdir(parents=True, exist_ok=True)
    (keys_dir / f"{org}{KEYS_SUFFIX}").write_text(json.dumps(public_jwks(rotated), indent=2) + "\n")
    return new.kid or "", previous.kid or ""


def fingerprints(path: Path) -> list[str]:
    """One line per key of a JWKS file: its use, curve and RFC 7638 thumbprint (computed from
    the key, never taken from its ``kid``), and whether its ``kid`` is that thumbprint."""
    try:
        data = json.loads(path.read_text())
        keys = parse_private_jwks(data, source=str(path))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DocumentInvalid(f"{path}: not a JWKS ({exc})") from None
    org = path.name.split(".", 1)[0]
    lines = []
    for key in keys:
        thumbprint = key.thumbprint()
        kid = key.kid
        said = "kid matches" if kid == thumbprint else f"kid {kid!r} is NOT its thumbprint"
        curve = key.get("crv") or key.key_type
        lines.append(f"{org}: {key.get('use') or '-'} {curve} SHA256:{thumbprint} ({said})")
    return lines


def _read_document(path: Path) -> str:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise DocumentInvalid(f"{path}: cannot be read ({reason or exc})") from None
    if not text.strip():
        raise DocumentInvalid(f"{path}: the file is empty; a contract was expected")
    return text


def sign_file(path: Path, key_path: Path, org: str | None = None) -> str:
    """Add (or replace) ``org``'s signature in the contract file at ``path``."""
    org = org or org_of_key_file(key_path)
    key = read_signing_key(key_path)
    text = _read_document(path)
    data = load_yaml(text, source=str(path))
    doc = parse_contract(data, source=str(path))
    others = [s for s in doc.contract.signatures if signature_header(s).get("org") != org]
    signature = sign_detached(doc.canonical, key, org=org, signed_at=int(time.time()))
    path.write_text(with_signatures(text, [*others, signature]))
    return org


def write_statement(
    kind: str,
    contract_id: str,
    *,
    reason: str,
    key_path: Path,
    contracts_dir: Path,
    keys_dir: Path,
    org: str | None = None,
    now: datetime | None = None,
) -> Path:
    """Sign a suspend/resume/revoke statement about the version in force and store it beside."""
    org = org or org_of_key_file(key_path)
    key = read_signing_key(key_path)  # a key that cannot sign is refused before anything is read
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    registry = load_registry(contracts_dir, keys_dir, gateway_org=None, now=now)
    history = registry.histories.get(contract_id)
    if history is None or not history.chain:
        raise ContractNotFound(f"no contract {contract_id!r} signed by both parties")
    version = history.status_at(now).governing or history.chain[-1]
    data = {
        "statement": kind,
        "contract": contract_id,
        "contract_version": version.hash,
        "issued_by": org,
        "issued_at": rfc3339(now),
        "reason": reason,
    }
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    signature = sign_detached(canonical_bytes(load_yaml(text, source="statement")), key, org=org)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    path = contracts_dir / f"{contract_id}.{stamp}.{kind}.yaml"
    path.write_text(with_signatures(text, [signature]))
    return path
