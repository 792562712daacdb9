"""Turning Kafka records into the bytes a partner receives (the hot path).

Each record becomes one event carrying the cursor *after* it, so a client that stops anywhere
resumes exactly after the last record it received. Events are pre-encoded to bytes and joined
per batch, so the HTTP layer writes one buffer per batch.

SSE::

    event: record
    id: <cursor>
    data: {"partition":0,"offset":42,"timestamp":"…Z","key":"o-42","value":{…}}

NDJSON: the same object plus ``"cursor"``, one per line. A record whose value is not a JSON
object is not dropped silently: it is delivered as ``event: refused`` (NDJSON: a line with
``"refused"`` instead of ``"value"``) so the partner sees the position and the reason.
"""

from __future__ import annotations

import base64
import enum
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.core.cursor import CursorCodec, CursorWriter
from gateway.core.filters import Expr
from gateway.core.projection import CompiledFields, project_value
from gateway.core.protection import ContractProtector, DataKey


class SourceRecord(Protocol):
    """What the encoder needs of a Kafka record (``confluent_kafka.Message`` fits as it is)."""

    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def key(self) -> str | bytes | None: ...
    def value(self) -> str | bytes | None: ...


class StreamFormat(enum.StrEnum):
    SSE = "text/event-stream"
    NDJSON = "application/x-ndjson"


@functools.lru_cache(maxsize=256)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def format_timestamp(millis: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-21T10:00:00.123Z``."""
    seconds, ms = divmod(millis, 1000)
    return f"{_second(seconds)}.{ms:03d}Z"


def _key_members(key: str | bytes | None) -> dict[str, Any]:
    if key is None or isinstance(key, str):
        return {"key": key}
    try:
        return {"key": key.decode("utf-8")}
    except UnicodeDecodeError:
        return {"key": None, "key_base64": base64.b64encode(key).decode("ascii")}


@dataclass(slots=True)
class EncodedBatch:
    data: bytes
    #: Records sent (a record the row filter leaves out is not counted, but is passed).
    records: int
    #: The cursor after the batch's last record (``None`` if the batch was empty).
    cursor: str | None
    #: Data keys announced in this batch (``{"kid", "jwe"}``), before the records using them.
    keys: list[dict[str, str]]
    #: Per record sent: (end of its bytes in ``data``, its index in the records read).
    marks: list[tuple[int, int]]
    #: The positions before the batch.
    before: dict[int, int]


class RecordEncoder:
    """Projects and encodes records for one stream, advancing that stream's cursor."""

    def __init__(
        self,
        *,
        contract_id: str,
        fields: CompiledFields,
        codec: CursorCodec,
        positions: dict[int, int],
        stream_format: StreamFormat,
        row_filter: Expr | None = None,
        protector: ContractProtector | None = None,
        data_key: Callable[[], DataKey] | None = None,
    ) -> None:
        self._fields = fields
        self._filter = row_filter
        self.protector = protector
        #: Gives the data key for each record with encrypted fields (epochs rotate per record).
        self.data_key = data_key
        self._announced: set[str] = set()
        self._codec = codec
        self._contract_id = contract_id
        self._cursor = CursorWriter(codec, contract_id, positions)
        self._sse = stream_format is StreamFormat.SSE

    @property
    def positions(self) -> dict[int, int]:
        return self._cursor.positions

    def cursor(self) -> str:
        return self._cursor.cursor()

    def adopt(self, positions: Mapping[int, int]) -> None:
        """Take ``positions`` as this stream's own, after sending a batch another stream of the
        same contract version encoded from the same positions (the bytes are the same)."""
        self._cursor.reposition(positions)

    def record_object(self, record: SourceRecord) -> tuple[dict[str, Any], bool | None]:
        """The partner-facing object for ``record``: accepted (True), refused (False), or
        left out by the contract's row filter (None)."""
        ts_type, ts = record.timestamp()
        obj: dict[str, Any] = {
            "partition": record.partition(),
            "offset": record.offset(),
            "timestamp": format_timestamp(ts) if ts_type else None,
        }
        raw = record.value()
        try:
            value = orjson.loads(raw) if raw is not None else None
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            obj.update(_key_members(record.key()))
            obj["refused"] = "value_not_json_object"
            return obj, False
        if self._filter is not None and not self._filter.evaluate(value):
            return obj, None
        obj.update(_key_members(record.key()))
        protector = self.protector
        if protector is not None:
            protector.position = f"{obj['partition']}:{obj['offset']}"
            if self._fields.encrypted and self.data_key is not None:
                key = self.data_key()
                if protector.data_key is not key:
                    protector.use(key)
        obj["value"] = project_value(value, self._fields, protector)
        return obj, True

    def _announce(self) -> dict[str, str] | None:
        """The current data key, the first time this stream uses it."""
        key = self.protector.data_key if self.protector else None
        if not self._fields.encrypted or key is None or key.kid in self._announced:
            return None
        self._announced.add(key.kid)
        return key.announcement()

    def encode(self, records: Sequence[SourceRecord]) -> EncodedBatch:
        parts: list[bytes] = []
        keys: list[dict[str, str]] = []
        marks: list[tuple[int, int]] = []
        before = dict(self._cursor.positions)
        cursor: str | None = None
        size = 0
        passed = False  # the cursor moved past records that were not sent
        advance = self._cursor.advance
        for index, record in enumerate(records):
            obj, accepted = self.record_object(record)
            cursor = advance(obj["partition"], obj["offset"] + 1)
            if accepted is None:
                passed = True
                continue
            passed = False
            if accepted and (announced := self._announce()) is not None:
                keys.append(announced)
                parts.append(event := self.keys_event([announced]))
                size += len(event)
            if self._sse:
                kind = b"record" if accepted else b"refused"
                event = b"event: %s\nid: %s\ndata: %s\n\n" % (
                    kind,
                    cursor.encode("ascii"),
                    orjson.dumps(obj),
                )
            else:
                obj["cursor"] = cursor
                event = orjson.dumps(obj) + b"\n"
            parts.append(event)
            size += len(event)
            marks.append((size, index))
        if passed and cursor is not None:
            # Records at the end were left out by the filter: still move the partner's cursor
            # past them (SSE: an event with only an id sets Last-Event-ID, dispatches nothing).
            parts.append(
                b"id: %s\n\n" % cursor.encode("ascii")
                if self._sse
                else orjson.dumps({"event": "position", "cursor": cursor}) + b"\n"
            )
        return EncodedBatch(b"".join(parts), len(marks), cursor, keys, marks, before)

    def cut(
        self, batch: EncodedBatch, records: Sequence[SourceRecord], max_bytes: int
    ) -> EncodedBatch:
        """The batch's longest run of whole records within ``max_bytes``; the stream's position
        moves back to just after the last record kept (``records`` is what ``encode`` got)."""
        kept = [mark for mark in batch.marks if mark[0] <= max_bytes]
        end, last = kept[-1] if kept else (0, -1)
        self._cursor = CursorWriter(self._codec, self._contract_id, batch.before)
        cursor = None
        for record in records[: last + 1]:
            cursor = self._cursor.advance(record.partition() or 0, (record.offset() or 0) + 1)
        return EncodedBatch(batch.data[:end], len(kept), cursor, batch.keys, kept, batch.before)

    def keys_event(self, keys: list[dict[str, str]]) -> bytes:
        if self._sse:
            return b"event: keys\ndata: %s\n\n" % orjson.dumps({"keys": keys})
        return orjson.dumps({"event": "keys", "keys": keys}) + b"\n"

    def notice(self, event: str, body: dict[str, Any]) -> bytes:
        """A control event (no cursor): ``gap`` for records the partner can no longer get."""
        if self._sse:
            return b"event: %s\ndata: %s\n\n" % (event.encode(), orjson.dumps(body))
        return orjson.dumps({"event": event, **body}) + b"\n"

    def heartbeat(self) -> bytes:
        return b": heartbeat\n\n" if self._sse else b'{"event":"heartbeat"}\n'

    def end(self, reason: str, **extra: Any) -> bytes:
        body = orjson.dumps({"reason": reason, **extra})
        if self._sse:
            return b"event: end\ndata: %s\n\n" % body
        return orjson.dumps({"event": "end", "reason": reason, **extra}) + b"\n"
