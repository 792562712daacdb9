"""Checking a login costs the same whether or not the user exists."""

from __future__ import annotations

from typing import Any

from gateway.services import passwords
from gateway.services.passwords import check_login, hash_secret


def test_an_unknown_user_costs_one_argon2_check_like_a_known_one(monkeypatch: Any) -> None:
    users = [("lena", hash_secret("correct horse"))]
    checked: list[str] = []
    real = passwords.verify_secret

    def counting(secret_hash: str, secret: str) -> bool:
        checked.append(secret_hash)
        return real(secret_hash, secret)

    monkeypatch.setattr(passwords, "verify_secret", counting)
    assert check_login(users, "lena", "correct horse")
    assert not check_login(users, "lena", "wrong")
    assert not check_login(users, "nobody", "correct horse")
    assert len(checked) == 3, "one Argon2 verification each, known user or not"
    assert checked[2] != users[0][1]
