from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.contracts import FieldRule
from gateway.core.cursor import CursorCodec
from gateway.core.filters import parse_filter
from gateway.core.projection import compile_fields
from gateway.core.protection import ContractProtector
from gateway.core.records import RecordEncoder, StreamFormat, format_timestamp

CLEAR_RULE = FieldRule.model_validate("clear")
DROP_RULE = FieldRule.model_validate("drop")
HASH_RULE = FieldRule.model_validate("hash")


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


@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 5), st.booleans()), min_size=1, max_size=30
    ),
    st.integers(min_value=0, max_value=5000),
    st.sampled_from(list(StreamFormat)),
)
def test_a_cut_batch_is_whole_records_and_its_cursor_follows_the_last(
    spec: list[tuple[int, int, bool]], max_bytes: int, fmt: StreamFormat
) -> None:
    """Cutting a batch to the day's remaining volume keeps a prefix of whole records, and the
    stream's position is exactly what encoding only that prefix would give."""
    next_offset = {0: 0, 1: 0, 2: 0}
    records = []
    for partition, size, passes in spec:
        value = {"a": "x" * size * 20, "keep": passes}
        records.append(
            FakeRecord(partition, next_offset[partition], b"k", json.dumps(value).encode())
        )
        next_offset[partition] += 1

    def filtered_encoder() -> RecordEncoder:
        return RecordEncoder(
            contract_id="c",
            fields=compile_fields({"a": CLEAR_RULE}),
            codec=codec,
            positions={0: 0, 1: 0, 2: 0},
            stream_format=fmt,
            row_filter=parse_filter("keep == true"),
        )

    filtered = filtered_encoder()
    batch = filtered.encode(records)
    cut = filtered.cut(batch, records, max_bytes)
    assert len(cut.data) <= max_bytes
    assert batch.data.startswith(cut.data)
    kept = cut.records
    assert kept == len(cut.marks)
    if kept:
        last_index = cut.marks[-1][1]
        reference = filtered_encoder()
        again = reference.encode(records[: last_index + 1])
        assert again.data == cut.data
        assert cut.cursor == again.cursor
        assert filtered.positions == reference.positions
    else:
        assert cut.data == b""
        assert filtered.positions == {0: 0, 1: 0, 2: 0}
    if kept < batch.records:  # the next record would not have fit
        assert batch.marks[kept][0] > max_bytes


@dataclass
class TimedRecord(FakeRecord):
    ts: tuple[int, int] = (1, 1_795_000_000_123)

    def timestamp(self) -> tuple[int, int]:
        return self.ts


event_values = st.one_of(
    st.dictionaries(
        st.sampled_from(["a", "b", "c"]),
        st.none() | st.integers() | st.text(max_size=3) | st.lists(st.integers(), max_size=2),
        max_size=3,
    ).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"[1]", b"not json", b'"text"', b"{}"]),
    st.none(),
)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.none() | st.binary(max_size=3) | st.text(max_size=3).map(str.encode),
            event_values,
            st.sampled_from([(0, -1), (1, 1_795_000_000_123), (2, 12_345)]),
        ),
        max_size=12,
    ),
    st.sampled_from(list(StreamFormat)),
    st.booleans(),
)
def test_the_fast_path_writes_the_bytes_the_generic_path_writes(
    spec: list[tuple[int, bytes | None, bytes | None, tuple[int, int]]],
    fmt: StreamFormat,
    hashed: bool,
) -> None:
    rules = {"a": CLEAR_RULE, "c": HASH_RULE if hashed else DROP_RULE}
    offsets = {0: 0, 1: 0, 2: 0}
    records = []
    for partition, key, value, ts in spec:
        records.append(TimedRecord(partition, offsets[partition], key, value, ts))
        offsets[partition] += 1

    def make(fast: bool) -> RecordEncoder:
        return RecordEncoder(
            contract_id="c",
            fields=compile_fields(rules),
            codec=codec,
            positions={0: 0, 1: 0},
            stream_format=fmt,
            protector=ContractProtector(b"p" * 32, None) if hashed else None,
            fast=fast,
        )

    fast, generic = make(True).encode(records), make(False).encode(records)
    assert fast == generic
