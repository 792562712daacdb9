from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.contracts import FieldRule
from gateway.core.projection import compile_fields, project_value

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
