"""Base64url and RFC 3339 times: one way to write each, strict to read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.jose import b64url, b64url_decode
from gateway.core.times import rfc3339


@given(st.binary(max_size=64))
def test_base64url_round_trips_without_padding(data: bytes) -> None:
    text = b64url(data)
    assert "=" not in text
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert b64url_decode(text) == data


@pytest.mark.parametrize("text", ["QQ==", "a+b/", "QR", "é", "A"])
def test_base64url_refuses_padding_other_alphabets_and_non_canonical_text(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (binascii.Error and UnicodeError are ValueErrors)
        b64url_decode(text)


def test_rfc3339_is_utc_with_z() -> None:
    moment = datetime(2026, 11, 21, 11, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert rfc3339(moment) == "2026-11-21T10:00:00.123456Z"
    assert rfc3339(moment, milliseconds=True) == "2026-11-21T10:00:00.123Z"
    assert rfc3339(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00Z"
