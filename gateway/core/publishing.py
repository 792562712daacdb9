"""Records a team publishes over HTTP: reading the request body, validating each value against
the product's schema, and what a refused record carries to the dead-letter topic.

A request is a JSON array of ``{"key", "value", "headers"}`` objects, or the same objects as
NDJSON (one per line). ``key`` is a string or null, ``headers`` an object of string values,
``value`` any JSON value (validated against the product's schema).

A batch is **all or nothing**: when any record fails its schema, no record of the request is
written to the product's topic; the failing ones are copied to the dead-letter topic and the
answer names each of them (which record, which place in it, which rule). The caller fixes or
drops those and sends the batch again. This keeps a retry simple (the whole request is one
unit, see ``Idempotency-Key`` in ``services/publishing.py``) and a topic never holds half of a
batch that its producer considered one thing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from gateway.core.schemas import RecordSchema, SchemaViolation
from gateway.errors import InvalidRequest

#: Header names the dead-letter copy carries (besides the record's own headers).
DLQ_REASON = "gateway.dlq.reason"
DLQ_ERRORS = "gateway.dlq.errors"
DLQ_PRODUCT = "gateway.dlq.product"
DLQ_SCHEMA_VERSION = "gateway.dlq.schema-version"
DLQ_CALLER = "gateway.dlq.caller"
DLQ_REQUEST = "gateway.dlq.request"


class IncomingRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One record of a request, as msgspec decodes and checks it (in C, straight from the
    body: no second object per record)."""

    value: Any
    key: str | None = None
    headers: dict[str, str] = {}

    def value_bytes(self) -> bytes:
        return orjson.dumps(self.value)


@dataclass(frozen=True, slots=True)
class RecordRefusal:
    """Record ``index`` (0-based, in request order) and why its value does not conform."""

    index: int
    violations: list[SchemaViolation] = field(default_factory=list)
    #: ``schema_violation`` (the product's JSON Schema) or ``encoding_failed`` (the value does
    #: not fit the product's record format, e.g. its registered Avro schema).
    reason: str = "schema_violation"

    def as_json(self) -> list[dict[str, str]]:
        return [
            {"pointer": v.pointer, "rule": v.rule, "message": v.message} for v in self.violations
        ]


NOT_AN_ARRAY = "the body must be a JSON array of records (or NDJSON)"
_ARRAY = msgspec.json.Decoder(list[IncomingRecord])
_LINE = msgspec.json.Decoder(IncomingRecord)
_AT = re.compile(r" - at `\$(?:\[(\d+)\])?\.?([^`]*)`$")


def parse_records(body: bytes, *, ndjson: bool, max_records: int) -> list[IncomingRecord]:
    """The records of a request body, or ``InvalidRequest`` naming the first bad one."""
    if ndjson:
        lines = [line for line in body.split(b"\n") if line.strip()]
        if len(lines) > max_records:
            raise InvalidRequest(f"{len(lines)} records in one request; at most {max_records}")
        decoded: list[IncomingRecord] = []
        for number, line in enumerate(lines, start=1):
            try:
                decoded.append(_LINE.decode(line))
            except msgspec.ValidationError as exc:
                raise InvalidRequest(f"line {number}: {_explained(exc, number - 1)}") from None
            except msgspec.DecodeError:
                raise InvalidRequest(f"line {number} is not a JSON object") from None
    else:
        try:
            decoded = _ARRAY.decode(body)
        except msgspec.ValidationError as exc:
            if str(exc).endswith("- at `$`") or ("`$`" not in str(exc) and "[" not in str(exc)):
                raise InvalidRequest(
                    "the body must be a JSON array of records (or NDJSON)"
                ) from None
            raise InvalidRequest(_explained(exc, None)) from None
        except msgspec.DecodeError as exc:
            raise InvalidRequest(f"the body is not JSON ({exc})") from None
        if len(decoded) > max_records:
            raise InvalidRequest(f"{len(decoded)} records in one request; at most {max_records}")
    if not decoded:
        raise InvalidRequest("the request holds no records")
    for index, record in enumerate(decoded):
        if record.headers and any(name.startswith("gateway.") for name in record.headers):
            raise InvalidRequest(
                f"record {index}: header names starting with 'gateway.' are reserved"
            )
    return decoded


def _explained(exc: msgspec.ValidationError, line_index: int | None) -> str:
    """msgspec's error in the words of this API: which record, which member, what is expected."""
    text = str(exc)
    found = _AT.search(text)
    index = found[1] if found and found[1] is not None else line_index
    member = (found[2] if found else "").split(".")[0].split("[")[0]
    where = f"record {index}" if index is not None else "the record"
    if "missing required field `value`" in text:
        return f"{where} has no value"
    unknown = re.search(r"unknown field `([^`]*)`", text)
    if unknown:
        return f"{where}: unknown member {unknown[1]!r}"
    if member == "key":
        return f"{where}: key must be a string or null"
    if member == "headers":
        return f"{where}: headers must be an object of string values"
    return f"{where} is not an object with key, value and headers"


def refusals(records: Sequence[IncomingRecord], schema: RecordSchema | None) -> list[RecordRefusal]:
    """The records whose value does not conform to ``schema`` (none without a schema)."""
    if schema is None:
        return []
    found = []
    for index, record in enumerate(records):
        violations = schema.violations(record.value)
        if violations:
            found.append(RecordRefusal(index, violations))
    return found


def dead_letter_headers(
    record: IncomingRecord,
    refusal: RecordRefusal,
    *,
    product: str,
    schema_version: str,
    caller: str,
    request_id: str,
) -> dict[str, str]:
    """The record's own headers and the reason it was refused (never a field's value)."""
    return {
        **record.headers,
        DLQ_REASON: refusal.reason,
        DLQ_ERRORS: orjson.dumps(refusal.as_json()).decode(),
        DLQ_PRODUCT: product,
        DLQ_SCHEMA_VERSION: schema_version,
        DLQ_CALLER: caller,
        DLQ_REQUEST: request_id,
    }


def fingerprint(records: Sequence[IncomingRecord]) -> str:
    """What an ``Idempotency-Key`` is bound to: the same key with other records is refused."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(
            orjson.dumps([record.key, record.value, record.headers], option=orjson.OPT_SORT_KEYS)
        )
        digest.update(b"\n")
    return "sha256:" + digest.hexdigest()
