"""The fast canonical JSON is RFC 8785's, byte for byte, and refuses what it refuses."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.canonical import canonical_json

text = st.text(st.characters(codec="utf-8"), max_size=12) | st.text(max_size=6)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | text
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(text, inner, max_size=5)
    ),
    max_leaves=20,
)


def reference(value: Any) -> bytes | type[Exception]:
    try:
        return bytes(rfc8785.dumps(value))
    except Exception as exc:
        return type(exc)


def ours(value: Any) -> bytes | type[Exception]:
    try:
        return canonical_json(value)
    except Exception as exc:
        return type(exc)


@given(values)
def test_it_is_rfc8785_for_any_json_value(value: Any) -> None:
    assert ours(value) == reference(value)


@pytest.mark.parametrize(
    "value",
    [
        {"\U0001f600": 1, "\ue000": 2},  # UTF-16 order differs from code point order here
        {"b": 1.0, "a": [1e21, -0.0, 5e-324]},  # ES6 numbers, not Python's
        2**53,  # outside I-JSON: refused
        "\ud800",  # not text
        {1: "a"},  # a key that is not text
        b"bytes",
        '\x00\x1f\x7f\b\t\n\f\r"\\/\u2028é',
    ],
)
def test_the_cases_where_a_shortcut_would_differ(value: Any) -> None:
    assert ours(value) == reference(value)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for n in range(depth):
        value = [value] if n % 2 else {"k": value}
    return value


@pytest.mark.parametrize("depth", [400, 900, 5000])
def test_a_deeply_nested_value_gets_what_rfc8785_gives(depth: int) -> None:
    """A record nested hundreds deep (a pseudonymised field of a producer's odd value) is
    canonicalised, or refused, as before: never a crash of the stream encoding it."""
    assert ours(nested(depth)) == reference(nested(depth))
