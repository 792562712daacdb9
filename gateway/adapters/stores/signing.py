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
    """The key set in a private JWKS file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DocumentInvalid(f"{path}: cannot read a JWKS ({exc})") from None
    return parse_private_jwks(data, source=str(path))


def read_signing_key(path: Path) -> OKPKey:
    """The Ed25519 signing key in a private JWKS file."""
    return signing_key(read_private_keys(path))


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


def sign_file(path: Path, key_path: Path, org: str | None = None) -> str:
    """Add (or replace) ``org``'s signature in the contract file at ``path``."""
    org = org or org_of_key_file(key_path)
    key = read_signing_key(key_path)
    text = path.read_text()
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
    signature = sign_detached(
        canonical_bytes(load_yaml(text, source="statement")), read_signing_key(key_path), org=org
    )
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    path = contracts_dir / f"{contract_id}.{stamp}.{kind}.yaml"
    path.write_text(with_signatures(text, [signature]))
    return path
