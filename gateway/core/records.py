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
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgspec

from gateway.core.cursor import CursorCodec, CursorWriter
from gateway.core.filters import Expr
from gateway.core.projection import (
    CompiledFields,
    ValueProjector,
    decode_json,
    encode_json,
    project_value,
)
from gateway.core.protection import ContractProtector, DataKey


class SourceRecord(Protocol):
    """What the encoder needs of a Kafka record (``confluent_kafka.Message`` fits as it is)."""

    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def key(self) -> str | bytes | None: ...
    def value(self) -> str | bytes | None: ...


#: ``(records wanted) -> (key, how many of them it may encrypt: at least one)``.
DataKeyReserver = Callable[[int], tuple[DataKey, int]]

#: Record events as the fast path writes them (the generic path writes the same bytes).
_JSON_RECORD = (
    b'{"partition":%(partition)d,"offset":%(offset)d,"timestamp":%(timestamp)s,%(key)s,'
    b'"value":%(value)s'
)
_SSE_RECORD: Final = b"event: record\nid: %(cursor)s\ndata: " + _JSON_RECORD + b"}\n\n"
_NDJSON_RECORD: Final = _JSON_RECORD + b',"cursor":"%(cursor)s"}\n'


def _key_json(key: str | bytes) -> bytes:
    """The ``key`` members of a record event (``key_base64`` when the key is not UTF-8)."""
    if isinstance(key, bytes):
        try:
            key = key.decode("utf-8")
        except UnicodeDecodeError:
            return encode_json(_key_members(key))[1:-1]
    return b'"key":' + encode_json(key)


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


@functools.lru_cache(maxsize=256)
def _second_json(seconds: int) -> bytes:
    return b'"' + _second(seconds).encode()


def _timestamp_json(millis: int) -> bytes:
    """``format_timestamp`` as a JSON string (the fast path)."""
    seconds, ms = divmod(millis, 1000)
    return b'%s.%03dZ"' % (_second_json(seconds), ms)


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
    #: Spans of ``data`` before the last record that are not record events (key
    #: announcements): a receipt's digest leaves them out (``core/receipts.py``).
    skips: list[tuple[int, int]] = field(default_factory=list)
    #: The first offset read per partition.
    first: dict[int, int] = field(default_factory=dict)
    #: The Kafka timestamps of the records sent, once a stream has read them for the
    #: freshness figures (``core/service_levels.Stamps``; shared with the batch).
    stamps: Any = None


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
        data_keys: DataKeyReserver | None = None,
        projector: ValueProjector | None = None,
        fast: bool = True,
    ) -> None:
        self._fields = fields
        self._filter = row_filter
        self.protector = protector
        #: Reserves the data key for the next records with encrypted fields (epochs rotate
        #: after a number of records, so a key is reserved for a run of them at a time).
        self.data_keys = data_keys
        self._key_left = 0
        #: The fast projection (not for a row-filtered contract: the filter reads the whole
        #: value); ``projector`` is one already built for ``fields`` (streams of a contract
        #: version share one). ``fast=False`` keeps to the generic path (tests compare both).
        self._project = (
            (projector or ValueProjector(fields)) if fast and row_filter is None else None
        )
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
        left out by the contract's row filter (None). The generic path: every record whose
        value the fast projection could not take, and every record of a filtered contract."""
        ts_type, ts = record.timestamp()
        obj: dict[str, Any] = {
            "partition": record.partition(),
            "offset": record.offset(),
            "timestamp": format_timestamp(ts) if ts_type else None,
        }
        raw = record.value()
        try:
            value = decode_json(raw) if raw is not None else None
        except msgspec.DecodeError:
            value = None
        if not isinstance(value, dict):
            obj.update(_key_members(record.key()))
            obj["refused"] = "value_not_json_object"
            return obj, False
        if self._filter is not None and not self._filter.evaluate(value):
            return obj, None
        obj.update(_key_members(record.key()))
        obj["value"] = project_value(value, self._fields, self.protector)
        return obj, True

    def _protect_at(
        self, protector: ContractProtector, partition: int, offset: int, left: int
    ) -> None:
        """Ready ``protector`` for the record at ``partition:offset`` (its position; the data
        key, reserved a run at a time with ``left`` records to go in the batch)."""
        protector.position = b"%d:%d" % (partition, offset)
        if self._fields.encrypted and self.data_keys is not None:
            if self._key_left <= 0:
                key, self._key_left = self.data_keys(left)
                if protector.data_key is not key:
                    protector.use(key)
            self._key_left -= 1

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
        skips: list[tuple[int, int]] = []
        first: dict[int, int] = {}
        before = dict(self._cursor.positions)
        writer = self._cursor
        size = 0
        passed = False  # the cursor moved past records that were not sent
        sse, project = self._sse, self._project
        protector = self.protector if self._fields.protected else None
        encrypted = self._fields.encrypted
        for index, record in enumerate(records):
            partition, offset = record.partition() or 0, record.offset() or 0
            if partition not in first:
                first[partition] = offset
            writer.advance(partition, offset + 1)
            if protector is not None:
                self._protect_at(protector, partition, offset, len(records) - index)
            raw = record.value()
            value = None if project is None or raw is None else project(raw, protector)
            if value is None:  # the generic path: refused, left out, or an unusual shape
                obj, verdict = self.record_object(record)
                if verdict is None:
                    passed = True
                    continue
                body = encode_json(obj)[:-1]  # the object without its closing brace
                if verdict and encrypted and (announced := self._announce()) is not None:
                    keys.append(announced)
                    parts.append(event := self.keys_event([announced]))
                    skips.append((size, size + len(event)))
                    size += len(event)
                kind = b"record" if verdict else b"refused"
                event = (
                    b"event: %s\nid: %s\ndata: %s}\n\n" % (kind, writer.cursor_bytes(), body)
                    if sse
                    else b'%s,"cursor":"%s"}\n' % (body, writer.cursor_bytes())
                )
            else:
                if encrypted and (announced := self._announce()) is not None:
                    keys.append(announced)
                    parts.append(event := self.keys_event([announced]))
                    skips.append((size, size + len(event)))
                    size += len(event)
                ts_type, ts = record.timestamp()
                key = record.key()
                event = (_SSE_RECORD if sse else _NDJSON_RECORD) % {
                    b"cursor": writer.cursor_bytes(),
                    b"partition": partition,
                    b"offset": offset,
                    b"timestamp": _timestamp_json(ts) if ts_type else b"null",
                    b"key": b'"key":null' if key is None else _key_json(key),
                    b"value": value,
                }
            passed = False
            parts.append(event)
            size += len(event)
            marks.append((size, index))
        cursor_text = writer.cursor() if records else None
        if passed and cursor_text is not None:
            # Records at the end were left out by the filter: still move the partner's cursor
            # past them (SSE: an event with only an id sets Last-Event-ID, dispatches nothing).
            parts.append(
                b"id: %s\n\n" % cursor_text.encode("ascii")
                if sse
                else encode_json({"event": "position", "cursor": cursor_text}) + b"\n"
            )
        return EncodedBatch(
            b"".join(parts), len(marks), cursor_text, keys, marks, before, skips, first
        )

    def cut(
        self, batch: EncodedBatch, records: Sequence[SourceRecord], max_bytes: int
    ) -> EncodedBatch:
        """The batch's longest run of whole records within ``max_bytes``; the stream's position
        moves back to just after the last record kept (``records`` is what ``encode`` got)."""
        kept = [mark for mark in batch.marks if mark[0] <= max_bytes]
        end, last = kept[-1] if kept else (0, -1)
        self._cursor = CursorWriter(self._codec, self._contract_id, batch.before)
        for record in records[: last + 1]:
            self._cursor.advance(record.partition() or 0, (record.offset() or 0) + 1)
        first: dict[int, int] = {}
        for record in records[: last + 1]:
            first.setdefault(record.partition() or 0, record.offset() or 0)
        cursor = self._cursor.cursor() if last >= 0 else None
        skips = [span for span in batch.skips if span[1] <= end]
        return EncodedBatch(
            batch.data[:end], len(kept), cursor, batch.keys, kept, batch.before, skips, first
        )

    def keys_event(self, keys: list[dict[str, str]]) -> bytes:
        if self._sse:
            return b"event: keys\ndata: %s\n\n" % encode_json({"keys": keys})
        return encode_json({"event": "keys", "keys": keys}) + b"\n"

    def notice(self, event: str, body: dict[str, Any]) -> bytes:
        """A control event (no cursor): ``gap`` for records the partner can no longer get."""
        if self._sse:
            return b"event: %s\ndata: %s\n\n" % (event.encode(), encode_json(body))
        return encode_json({"event": event, **body}) + b"\n"

    def heartbeat(self) -> bytes:
        return b": heartbeat\n\n" if self._sse else b'{"event":"heartbeat"}\n'

    def end(self, reason: str, **extra: Any) -> bytes:
        body = encode_json({"reason": reason, **extra})
        if self._sse:
            return b"event: end\ndata: %s\n\n" % body
        return encode_json({"event": "end", "reason": reason, **extra}) + b"\n"
