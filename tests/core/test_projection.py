from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.contracts import FieldRule
from gateway.core.projection import (
    MISSING,
    ValueProjector,
    compile_fields,
    decode_json,
    encode_json,
    project_value,
)

CLEAR_RULE = FieldRule.model_validate("clear")
DROP_RULE = FieldRule.model_validate("drop")

CLEAR, DROP = CLEAR_RULE, DROP_RULE

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from("abcxyz"), children, max_size=4)
    ),
    max_leaves=20,
)
records = st.dictionaries(st.sampled_from("abcxyz"), json_values, max_size=6)
paths = st.lists(st.sampled_from("abcxyz"), min_size=1, max_size=3).map(".".join)
rules = st.dictionaries(paths, st.sampled_from([CLEAR, DROP]), min_size=1, max_size=6)


def leaf_paths(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict) and value:
        out: set[str] = set()
        for k, v in value.items():
            out |= leaf_paths(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip(".")}


def allowed(path: str, fields: dict[str, FieldRule]) -> bool:
    """A leaf may leave iff its nearest listed ancestor-or-self says clear."""
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        rule = fields.get(".".join(parts[:n]))
        if rule is not None:
            return rule is CLEAR
    return False


@given(records, rules)
def test_only_allowed_paths_leave(record: dict[str, Any], fields: dict[str, FieldRule]) -> None:
    out = project_value(record, compile_fields(fields))
    for path in leaf_paths(out):
        if path:
            assert allowed(path, fields), (path, fields, out)


def test_examples() -> None:
    record = {
        "order_id": "o-1",
        "amount": 3,
        "customer": {"name": "N", "email": "e", "country": "NL"},
        "items": [{"sku": "a"}],
    }
    fields = {"order_id": CLEAR, "customer.country": CLEAR}
    assert project_value(record, compile_fields(fields)) == {
        "order_id": "o-1",
        "customer": {"country": "NL"},
    }
    fields = {"customer": CLEAR, "customer.email": DROP}
    assert project_value(record, compile_fields(fields)) == {
        "customer": {"name": "N", "country": "NL"}
    }
    # A listed field that is missing is simply absent; a scalar where an object was expected
    # is withheld when its children have rules.
    assert project_value({"customer": "x"}, compile_fields({"customer.country": CLEAR})) == {}
    assert project_value({"customer": [{"email": "e"}]}, compile_fields(fields)) == {}


HASH_RULE = FieldRule.model_validate("hash")


class MarkingProtector:
    """Marks what it protects with the path it was given (a list cannot be protected here)."""

    def protect(self, rule: FieldRule, value: Any, path: str) -> Any:
        return MISSING if isinstance(value, list) else f"{rule.action}:{path}:{value!r}"


fast_paths = st.lists(
    st.sampled_from(["a", "b", "x", "a[]", "b[]", "odd key", 'q"uote', "é"]),
    min_size=1,
    max_size=3,
).map(".".join)
fast_rules = st.dictionaries(
    fast_paths, st.sampled_from([CLEAR, DROP, HASH_RULE]), min_size=1, max_size=6
)
fast_keys = st.sampled_from(["a", "b", "x", "odd key", 'q"uote', "é"])
fast_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(fast_keys, children, max_size=4)
    ),
    max_leaves=25,
)


@given(fast_values, fast_rules, st.booleans())
def test_the_fast_projection_says_exactly_what_the_generic_one_says(
    value: Any, fields: dict[str, FieldRule], protected: bool
) -> None:
    compiled = compile_fields(fields)
    protector = MarkingProtector() if protected else None
    raw = json.dumps(value).encode()
    fast = ValueProjector(compiled)(raw, protector)
    decoded = decode_json(raw)
    if not isinstance(decoded, dict):
        assert fast is None  # not an object: the generic path refuses it
        return
    generic = encode_json(project_value(decoded, compiled, protector))
    if fast is not None:
        assert fast == generic


def test_the_fast_projection_takes_records_of_the_expected_shape() -> None:
    fields = {
        "id": CLEAR,
        "customer.country": CLEAR,
        "customer.email": HASH_RULE,
        "items[].sku": CLEAR,
        "notes": DROP,
    }
    project = ValueProjector(compile_fields(fields))
    raw = (
        b'{"id":1,"notes":"n","customer":{"name":"N","email":"e","country":"NL"},'
        b'"items":[{"sku":"s","qty":2},"stray"],"big":123456789012345678901234567890}'
    )
    assert project(raw, MarkingProtector()) == (
        b'{"id":1,"customer":{"country":"NL","email":"hash:customer.email:\'e\'"},'
        b'"items":[{"sku":"s"}]}'
    )
    # An object with none of its listed fields says nothing; integers keep every digit.
    assert project(b'{"customer":{"name":"N"}}', None) == b"{}"
    big = ValueProjector(compile_fields({"n": CLEAR}))
    assert big(b'{"n":123456789012345678901234567890}', None) == (
        b'{"n":123456789012345678901234567890}'
    )
    # A shape the rules do not describe, or no object at all: the generic path decides.
    assert project(b'{"customer":"x"}', None) is None
    assert project(b"[1]", None) is None
    assert project(b"{not json", None) is None
