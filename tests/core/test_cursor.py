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


def minted(payload: bytes) -> str:
    """A cursor an operator could mint with the cursor secret, over any payload."""
    from gateway.core.jose import b64url

    body = b"v1;" + payload
    return f"{b64url(body)}.{b64url(codec._tag('c1', body))}"


@given(st.binary(max_size=40) | st.sampled_from([b"0:x", "0:\u0661".encode(), b"0:" + b"9" * 30]))
def test_a_minted_cursor_is_positions_or_invalid_cursor_never_anything_else(
    payload: bytes,
) -> None:
    try:
        decoded = codec.decode("c1", minted(payload))
    except InvalidCursor:
        return
    assert all(0 <= p < 2**31 and -2 <= o < 2**63 for p, o in decoded.items())


@pytest.mark.parametrize(
    "payload", [b"0:x", "0:\u0661".encode(), b"0:" + b"9" * 30, b"\xff:1", b"-1:0", b"0:-3"]
)
def test_minted_payloads_out_of_kafka_s_bounds_are_invalid(payload: bytes) -> None:
    with pytest.raises(InvalidCursor, match="positions are malformed"):
        codec.decode("c1", minted(payload))


def test_an_empty_cursor_is_invalid() -> None:
    with pytest.raises(InvalidCursor):
        codec.decode("c1", "")
