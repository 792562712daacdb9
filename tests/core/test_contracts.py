from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from joserfc.jwk import KeySet

from gateway.core.contracts import ContractState, Product, assess, parse_contract
from gateway.core.documents import canonical_bytes, load_yaml, with_signatures
from gateway.core.jose import (
    eddsa_allowed,
    generate_org_keys,
    public_jwks,
    sign_detached,
    signing_key,
    verify_detached,
)
from gateway.errors import DocumentInvalid, SignatureInvalid

NOW = datetime(2026, 11, 21, tzinfo=UTC)
KEYS = {org: generate_org_keys() for org in ("acme", "globex", "initech")}
PUBLIC = {org: KeySet.import_key_set(public_jwks(k)) for org, k in KEYS.items()}  # type: ignore[arg-type]
PRODUCTS = {
    "orders": Product(
        product="orders", owner="acme", team="orders-team", topic="t", description="d"
    )
}

TEXT = """\
# a comment that survives signing
contract: acme-globex-orders
version: 1
provider: acme
consumer: globex
product: orders
purpose: Reconcile
valid_from: 2026-01-01T00:00:00Z
valid_until: 2027-12-31T23:59:59Z
fields:
  order_id: clear
  customer.country: clear
signatures: []
"""


def signed(text: str = TEXT, signers: tuple[str, ...] = ("acme", "globex")) -> str:
    data = load_yaml(text, source="t")
    canonical = canonical_bytes(data)
    sigs = [sign_detached(canonical, signing_key(KEYS[org]), org=org) for org in signers]
    return with_signatures(text, sigs)


def verdict(text: str, now: datetime = NOW) -> Any:
    doc = parse_contract(load_yaml(text, source="t"), source="t")
    return assess(doc, products=PRODUCTS, keys=PUBLIC, gateway_org="acme", now=now)


def test_signed_by_both_is_active_and_comments_survive() -> None:
    text = signed()
    assert text.startswith("# a comment")
    assert verdict(text).state is ContractState.ACTIVE


def test_timestamps_stay_strings_so_every_party_signs_the_same_bytes() -> None:
    data = load_yaml(TEXT, source="t")
    assert data["valid_from"] == "2026-01-01T00:00:00Z"
    assert b'"valid_from":"2026-01-01T00:00:00Z"' in canonical_bytes(data)


@pytest.mark.parametrize(
    ("signers", "reason"),
    [
        ((), "signature_missing"),
        (("acme",), "signature_missing"),
        (("globex",), "signature_missing"),
        (("acme", "globex", "initech"), "signature_invalid"),
        (("acme", "acme"), "signature_invalid"),
    ],
)
def test_both_parties_and_only_they_sign(signers: tuple[str, ...], reason: str) -> None:
    v = verdict(signed(signers=signers))
    # Missing signatures make a draft (issue 3's lifecycle); a wrong signer refuses outright.
    state = ContractState.DRAFT if reason == "signature_missing" else ContractState.REFUSED
    assert (v.state, v.reason) == (state, reason)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("customer.country: clear", "customer.email: clear"),
        ("consumer: globex\n", "consumer: globex\njurisdiction: NL\n"),
        ("2027-12-31T23:59:59Z", "2099-12-31T23:59:59Z"),
        ("purpose: Reconcile", "purpose: Other"),
    ],
)
def test_any_tampering_breaks_the_signatures(old: str, new: str) -> None:
    v = verdict(signed().replace(old, new))
    assert v.reason == "signature_invalid"


def test_validity_window() -> None:
    text = signed()
    assert verdict(text, datetime(2025, 12, 31, tzinfo=UTC)).reason == "not_yet_valid"
    assert verdict(text, datetime(2027, 12, 31, 23, 59, 59, tzinfo=UTC)).reason == "expired"


def test_unknown_product_and_wrong_provider() -> None:
    assert (
        verdict(signed(TEXT.replace("product: orders", "product: payments"))).reason
        == "unknown_product"
    )
    text = signed(TEXT.replace("provider: acme", "provider: initech"), ("initech", "globex"))
    assert verdict(text).reason == "wrong_provider"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("order_id: clear", "order_id: mask"), "mask needs a pattern"),
        (("signatures: []", "filter: amount >\nsignatures: []"), "filter: expected a field"),
        (("order_id: clear", "order_id: publish"), "fields.order_id"),
        (
            ("signatures: []", "quotas: {records_per_minute: 5}\nsignatures: []"),
            "quotas.records_per_minute",
        ),
        (("contract: acme-globex-orders", "contract: Acme Orders"), "contract"),
        (("valid_until: 2027-12-31T23:59:59Z", "valid_until: 2025-01-01T00:00:00Z"), "valid_until"),
        (("valid_from: 2026-01-01T00:00:00Z", "valid_from: 2026-01-01T00:00:00"), "valid_from"),
        (("version: 1", "version: 1\nversion: 2"), "line 4"),
    ],
)
def test_malformed_documents_are_refused_naming_the_field(
    change: tuple[str, str], message: str
) -> None:
    with pytest.raises(DocumentInvalid) as info:
        verdict(TEXT.replace(*change))
    assert message in info.value.detail


def test_ed25519_alg_name_is_accepted() -> None:
    from joserfc import jws

    from gateway.core.jose import CONTRACT_JWS_REGISTRY

    key = signing_key(KEYS["acme"])
    with eddsa_allowed():
        compact = jws.serialize_compact(
            {"alg": "Ed25519", "kid": key.kid, "org": "acme"},
            b"payload",
            key,
            registry=CONTRACT_JWS_REGISTRY,
        )
    detached = jws.detach_content(compact)
    assert verify_detached(detached, b"payload", PUBLIC["acme"])["alg"] == "Ed25519"
    with pytest.raises(SignatureInvalid):
        verify_detached(detached, b"other payload", PUBLIC["acme"])


@given(st.text(max_size=200))
def test_garbage_yaml_is_a_clean_refusal(text: str) -> None:
    with contextlib.suppress(DocumentInvalid):
        parse_contract(load_yaml(text, source="t"), source="t")


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60))
def test_garbage_signatures_are_a_clean_refusal(garbage: str) -> None:
    with pytest.raises(SignatureInvalid):
        verify_detached(garbage, b"x", PUBLIC["acme"])


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (BILLION_LAUGHS, 1),
        ("contract: c\nfields: &f {a: clear}\n", 2),
        ("a: 1\nb: *nothing\n", 2),
    ],
)
def test_anchors_and_aliases_are_refused_before_anything_expands(text: str, line: int) -> None:
    with pytest.raises(DocumentInvalid, match=f"line {line}: YAML anchors and aliases"):
        load_yaml(text, source="bomb.yaml")


def test_a_huge_document_is_refused_unread() -> None:
    with pytest.raises(DocumentInvalid, match="larger than"):
        load_yaml("a: " + "x" * (2 * 1024 * 1024), source="huge.yaml")


@pytest.mark.parametrize("text", ["[" * 5000, "a: " + "{" * 100_000, "a:\n" + "  - [" * 70])
def test_deep_nesting_is_refused_before_parsing(text: str) -> None:
    """PyYAML's scanner is quadratic in flow nesting and its composer recursive: 5,000 '['
    used to end a reload in a RecursionError (no revocation took effect after it)."""
    with pytest.raises(DocumentInvalid, match="nested deeper than 64"):
        load_yaml(text, source="deep.yaml")
