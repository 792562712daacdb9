from __future__ import annotations

from gateway.core.contracts import FieldRule
from gateway.core.projection import MISSING
from gateway.core.protection import ContractProtector

HASH_RULE = FieldRule.model_validate("hash")


def test_a_value_rfc_8785_cannot_write_is_withheld_not_a_crash() -> None:
    protector = ContractProtector(b"p" * 32, None)
    assert protector.protect(HASH_RULE, 2**53 + 1, "n") is MISSING
    assert protector.protect(HASH_RULE, {"n": [2**70]}, "n") is MISSING
    assert protector.protect(HASH_RULE, 2**53 - 1, "n") is not MISSING
    assert protector.protect(HASH_RULE, None, "n") is None


def test_a_value_nested_past_any_canonical_form_is_withheld_not_a_crash() -> None:
    protector = ContractProtector(b"p" * 32, None)
    deep: object = 1
    for _ in range(5000):
        deep = [deep]
    assert protector.protect(HASH_RULE, deep, "n") is MISSING
    shallow: object = 1
    for _ in range(400):  # deep, but not past what RFC 8785's writer takes
        shallow = [shallow]
    assert protector.protect(HASH_RULE, shallow, "n") is not MISSING
