from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.cursor import CursorCodec
from gateway.errors import InvalidCursor

codec = CursorCodec(b"k" * 32)
positions = st.dictionaries(st.integers(0, 10_000), st.integers(-2, 2**62), max_size=64)


@given(positions)
def test_round_trip(pos: dict[int, int]) -> None:
    assert codec.decode("c1", codec.encode("c1", pos)) == pos


@given(positions, st.data())
def test_any_edit_is_detected(pos: dict[int, int], data: st.DataObject) -> None:
    cursor = codec.encode("c1", pos)
    index = data.draw(st.integers(0, len(cursor) - 1))
    replacement = data.draw(st.sampled_from("AbZz019-_."))
    edited = cursor[:index] + replacement + cursor[index + 1 :]
    if edited == cursor:
        return
    try:
        decoded = codec.decode("c1", edited)
    except InvalidCursor:
        return
    # Base64 can spell the same bytes two ways (unused trailing bits): nothing was edited then.
    assert decoded == pos


@given(positions)
def test_bound_to_contract_and_secret(pos: dict[int, int]) -> None:
    cursor = codec.encode("c1", pos)
    with pytest.raises(InvalidCursor):
        codec.decode("c2", cursor)
    with pytest.raises(InvalidCursor):
        CursorCodec(b"x" * 32).decode("c1", cursor)


@given(st.text(max_size=300))
def test_arbitrary_text_is_a_clean_refusal(text: str) -> None:
    with contextlib.suppress(InvalidCursor):
        codec.decode("c1", text)
