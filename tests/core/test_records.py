from __future__ import annotations

import json
from dataclasses import dataclass

from gateway.core.contracts import FieldRule
from gateway.core.cursor import CursorCodec
from gateway.core.projection import compile_fields
from gateway.core.records import RecordEncoder, StreamFormat, format_timestamp

CLEAR_RULE = FieldRule.model_validate("clear")
DROP_RULE = FieldRule.model_validate("drop")


@dataclass
class FakeRecord:
    p: int
    o: int
    k: bytes | None
    v: bytes | None

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_795_000_000_123)

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v


codec = CursorCodec(b"s" * 32)


def encoder(fmt: StreamFormat) -> RecordEncoder:
    return RecordEncoder(
        contract_id="c",
        fields=compile_fields({"a": CLEAR_RULE}),
        codec=codec,
        positions={0: -2, 1: -2},
        stream_format=fmt,
    )


def test_sse_frames_carry_the_cursor_after_each_record() -> None:
    enc = encoder(StreamFormat.SSE)
    batch = enc.encode([FakeRecord(1, 7, b"k", b'{"a":1,"b":2}'), FakeRecord(0, 3, None, b"{}")])
    frames = batch.data.decode().split("\n\n")[:-1]
    assert frames[0].startswith("event: record\nid: ")
    first_cursor = frames[0].split("\n")[1].removeprefix("id: ")
    assert codec.decode("c", first_cursor) == {0: -2, 1: 8}
    assert json.loads(frames[0].split("data: ")[1]) == {
        "partition": 1,
        "offset": 7,
        "timestamp": "2026-11-18T11:06:40.123Z",
        "key": "k",
        "value": {"a": 1},
    }
    assert codec.decode("c", batch.cursor or "") == {0: 4, 1: 8}


def test_values_that_are_not_json_objects_are_refused_visibly() -> None:
    enc = encoder(StreamFormat.NDJSON)
    batch = enc.encode([FakeRecord(0, 0, b"\xff", b"not json"), FakeRecord(0, 1, None, b"[1]")])
    lines = [json.loads(line) for line in batch.data.splitlines()]
    assert [line["refused"] for line in lines] == ["value_not_json_object"] * 2
    assert "value" not in lines[0]
    assert lines[0]["key_base64"] == "/w=="
    assert codec.decode("c", lines[1]["cursor"]) == {0: 2, 1: -2}


def test_control_events() -> None:
    assert encoder(StreamFormat.SSE).end("token_expired") == (
        b'event: end\ndata: {"reason":"token_expired"}\n\n'
    )
    assert json.loads(encoder(StreamFormat.NDJSON).end("expired")) == {
        "event": "end",
        "reason": "expired",
    }
    assert encoder(StreamFormat.SSE).heartbeat().startswith(b":")


def test_timestamp_format() -> None:
    assert format_timestamp(0) == "1970-01-01T00:00:00.000Z"
