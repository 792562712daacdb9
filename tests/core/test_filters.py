from __future__ import annotations

import contextlib
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.filters import (
    Compare,
    In,
    IsNull,
    Junction,
    Literal,
    Not,
    Path,
    parse_filter,
)
from gateway.errors import FilterSyntaxError

names = st.sampled_from(["amount", "status", "customer.country", "a.b.c", "x_1", "$meta"])
paths = names.map(lambda n: Path(tuple(n.split("."))))
literals = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=64).filter(lambda f: abs(f) < 1e300),
    st.text(max_size=8),
).map(Literal)
operands = st.one_of(paths, literals)
tests = st.one_of(
    st.builds(Compare, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), operands, operands),
    st.builds(In, operands, st.lists(literals, max_size=3).map(tuple), st.booleans()),
    st.builds(IsNull, paths, st.booleans()),
)
expressions = st.recursive(
    tests,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.builds(
            Junction,
            st.sampled_from(["and", "or"]),
            st.lists(inner, min_size=2, max_size=3).map(tuple),
        ),
    ),
    max_leaves=8,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda c: st.lists(c, max_size=2) | st.dictionaries(st.sampled_from("abc"), c, max_size=2),
    max_leaves=6,
)
records = st.dictionaries(
    st.sampled_from(["amount", "status", "customer", "a", "x_1", "$meta"]), json_values, max_size=5
)


@given(expressions)
def test_print_parse_round_trip(expr: Any) -> None:
    assert parse_filter(str(expr)) == expr


@given(st.text(max_size=80))
def test_no_text_crashes_the_parser(text: str) -> None:
    with contextlib.suppress(FilterSyntaxError):
        parse_filter(text)


@given(
    st.lists(
        st.sampled_from(
            ["(", ")", "not", "and", "or", "a", "==", "1", "in", "[", "]", ",", "is", "null"]
        ),
        max_size=40,
    )
)
def test_no_token_soup_crashes_the_parser(tokens: list[str]) -> None:
    with contextlib.suppress(FilterSyntaxError):
        parse_filter(" ".join(tokens))


@given(expressions, records)
def test_evaluation_is_total(expr: Any, record: dict[str, Any]) -> None:
    assert expr.evaluate(record) in (True, False)


def test_cannot_execute_code() -> None:
    for text in ["__import__('os').system('true')", "amount.__class__ == 1", "exec('x')", "a; b"]:
        try:
            expr = parse_filter(text)
        except FilterSyntaxError:
            continue
        assert expr.evaluate({"amount": 1}) in (True, False)


@pytest.mark.parametrize(
    ("text", "record", "expected"),
    [
        ("amount > 100", {"amount": 150}, True),
        ("amount > 100", {"amount": "150"}, False),  # different types never compare
        ("amount > 100", {}, False),
        ("customer.country in ['NL', \"DE\"]", {"customer": {"country": "DE"}}, True),
        ("customer.country not in ['NL']", {"customer": {"country": "NL"}}, False),
        ("status is null", {}, True),
        ("status is not null and not (status == 'cancelled')", {"status": "placed"}, True),
        ("amount >= 10 and amount < 20 or status == 'vip'", {"amount": 5, "status": "vip"}, True),
        ("flag == true", {"flag": 1}, False),
        ("1 == 1.0", {}, True),
    ],
)
def test_semantics(text: str, record: dict[str, Any], expected: bool) -> None:
    assert parse_filter(text).evaluate(record) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("amount >", "expected a field or a value"),
        ("amount 100", "expected a comparison"),
        ("(amount > 1", "expected )"),
        ("amount in [status]", "literals only"),
        ("'x' is null", "applies to a field"),
        ("amount > 1 extra", "unexpected"),
        ("(" * 40 + "a == 1" + ")" * 40, "nested"),
    ],
)
def test_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(FilterSyntaxError, match=re.escape(message)):
        parse_filter(text)
