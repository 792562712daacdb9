"""Secrets people type (partners' client secrets, legal users' passwords), kept as Argon2 hashes.

A check costs the same whether or not the user exists: an unknown name is checked against a
hash of nothing, so timing does not tell which names exist.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error

_hasher = PasswordHasher()
_NOBODY = _hasher.hash(secrets.token_urlsafe(16))


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(secret_hash: str, secret: str) -> bool:
    try:
        return bool(_hasher.verify(secret_hash, secret))
    except Argon2Error:
        return False


def check_login(users: Iterable[tuple[str, str]], username: str, password: str) -> bool:
    """Whether ``(username, password)`` matches one of ``users`` (name, Argon2 hash)."""
    found = _NOBODY
    for name, secret_hash in users:
        if secrets.compare_digest(name.encode(), username.encode()):
            found = secret_hash
    return verify_secret(found, password) and found is not _NOBODY
