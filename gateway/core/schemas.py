"""JSON Schema for data products: the schema checked when a descriptor loads, and records
validated against it when a team publishes (``jsonschema-rs``: compiled once per schema).

Errors name the record's failing place as a JSON Pointer (RFC 6901) and say why, in the
validator's words; they never quote the value (it may be a protected field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema_rs

#: A registry holding nothing, so that meta-validation never retrieves a ``$schema`` URL.
_NOTHING_REMOTE = jsonschema_rs.Registry([])


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    """Why a record does not conform: where (a JSON Pointer into the value) and which rule."""

    pointer: str
    rule: str
    message: str


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless ``schema`` is a valid JSON Schema (its draft's meta-schema)
    that compiles with nothing fetched: a ``$ref`` or ``$schema`` naming a URL is refused, not
    retrieved (loading a descriptor must not make the gateway send requests)."""
    try:
        jsonschema_rs.meta.validate(schema, registry=_NOTHING_REMOTE)
        RecordSchema(schema)
    except jsonschema_rs.ValidationError as exc:
        where = _pointer(exc.instance_path) or "/"
        raise ValueError(
            f"not a valid JSON Schema at {where}: {exc.message.splitlines()[0]}"
        ) from None
    except (jsonschema_rs.ReferencingError, ValueError, TypeError) as exc:
        raise ValueError(f"not a valid JSON Schema: {str(exc).splitlines()[0]}") from None


class RecordSchema:
    """A product schema compiled once; ``violations`` of one record value."""

    __slots__ = ("_validator",)

    def __init__(self, schema: dict[str, Any]) -> None:
        self._validator = jsonschema_rs.validator_for(schema, offline=True)

    def violations(self, value: Any, limit: int = 10) -> list[SchemaViolation]:
        if self._validator.is_valid(value):  # the common case, without building errors
            return []
        found: list[SchemaViolation] = []
        for error in self._validator.iter_errors(value):
            found.append(
                SchemaViolation(_pointer(error.instance_path), error.kind.name, _reason(error))
            )
            if len(found) >= limit:
                break
        return found


def _pointer(path: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _reason(error: Any) -> str:
    """Why, from the rule's parameters only: never the offending value, which may be a
    protected field (the validator's own message quotes it)."""
    rule, params = error.kind.name, error.kind.as_dict()
    if rule == "required":
        return f"required property {params['property']!r} is missing"
    if rule == "type":
        return f"must be of type {' or '.join(params['types'])}"
    if rule == "additionalProperties":
        return f"properties not allowed here: {', '.join(map(repr, params['unexpected']))}"
    shown = ", ".join(f"{k} {v!r}" for k, v in params.items())
    return f"violates {rule}" + (f" ({shown})" if shown else "")
