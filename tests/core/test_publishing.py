"""Reading publish requests, and what refused records carry (pure)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.identity import TeamMember, member_from_claims, teams_of
from gateway.core.publishing import fingerprint, parse_records
from gateway.errors import InvalidRequest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
records = st.lists(
    st.fixed_dictionaries(
        {"value": json_values},
        optional={
            "key": st.none() | st.text(max_size=8),
            "headers": st.dictionaries(st.text("abc", min_size=1, max_size=4), st.text(max_size=4)),
        },
    ),
    min_size=1,
    max_size=5,
)


@given(records)
def test_a_json_array_and_ndjson_carry_the_same_records(items: list[dict[str, Any]]) -> None:
    array = parse_records(orjson.dumps(items), ndjson=False, max_records=10)
    lines = parse_records(
        b"\n".join(orjson.dumps(i) for i in items) + b"\n", ndjson=True, max_records=10
    )
    assert array == lines
    assert [r.value for r in array] == [i["value"] for i in items]
    assert fingerprint(array) == fingerprint(lines)


def typed(value: Any) -> Any:
    """``value`` with every scalar's JSON type beside it, and objects without key order:
    equal exactly when the JSON is the same (Python's ``0 == False`` is not JSON's)."""
    if isinstance(value, dict):
        return ("object", sorted((k, typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", [typed(v) for v in value])
    return (type(value).__name__, value)


@given(records, records)
def test_the_fingerprint_tells_batches_apart(
    a: list[dict[str, Any]], b: list[dict[str, Any]]
) -> None:
    pa = parse_records(orjson.dumps(a), ndjson=False, max_records=10)
    pb = parse_records(orjson.dumps(b), ndjson=False, max_records=10)
    same = [typed([r.key, r.value, r.headers]) for r in pa] == [
        typed([r.key, r.value, r.headers]) for r in pb
    ]
    assert (fingerprint(pa) == fingerprint(pb)) == same


def test_false_and_zero_are_other_records() -> None:
    """Python finds them equal; a partner's JSON does not, nor does the fingerprint."""
    zero = parse_records(b'[{"value": {"a": 0}}]', ndjson=False, max_records=10)
    false = parse_records(b'[{"value": {"a": false}}]', ndjson=False, max_records=10)
    assert fingerprint(zero) != fingerprint(false)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{}", "must be a JSON array"),
        (b"[", "not JSON"),
        (b"[]", "no records"),
        (b"[1]", "record 0 is not an object"),
        (b'[{"key": "k"}]', "record 0 has no value"),
        (b'[{"value": 1, "key": 5}]', "key must be a string or null"),
        (b'[{"value": 1, "headers": {"a": 1}}]', "headers must be an object of string values"),
        (b'[{"value": 1, "headers": {"gateway.dlq.reason": "x"}}]', "reserved"),
        (b'[{"value": 1, "partition": 3}]', "unknown member 'partition'"),
        (b'[{"value":1},{"value":2},{"value":3}]', "3 records in one request; at most 2"),
    ],
)
def test_a_malformed_request_names_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_records(body, ndjson=False, max_records=2)


def test_ndjson_names_the_line() -> None:
    with pytest.raises(InvalidRequest, match="line 2 is not a JSON object"):
        parse_records(b'{"value": 1}\n{oops\n', ndjson=True, max_records=5)


@given(
    st.one_of(st.none(), st.integers(), st.text(), st.lists(st.one_of(st.text(), st.integers())))
)
def test_a_teams_claim_of_any_shape_grants_at_most_its_strings(value: Any) -> None:
    teams = teams_of(value)
    assert all(isinstance(t, str) and t for t in teams)
    member = member_from_claims(
        {"sub": "s", "groups": value}, teams_claim="groups", admin_team="root"
    )
    assert member.admin == ("root" in teams)
    assert member.manages("x") == (member.admin or "x" in teams)


def test_an_admin_manages_every_team() -> None:
    assert TeamMember("s", frozenset({"root"}), admin=True).manages("anything")
    with pytest.raises(ValueError, match="no subject"):
        member_from_claims({"groups": ["a"]}, teams_claim="groups", admin_team=None)
