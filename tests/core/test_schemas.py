"""Product schemas: checked when loaded, records validated against them (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.contracts import parse_product
from gateway.core.schemas import RecordSchema, check_schema
from gateway.errors import DocumentInvalid

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "qty"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "maxLength": 3},
        "qty": {"type": "integer", "minimum": 1},
        "a/b~c": {"type": "string"},
    },
}


def test_violations_say_where_and_why_and_never_quote_the_value() -> None:
    schema = RecordSchema(SCHEMA)
    assert schema.violations({"id": "x", "qty": 2}) == []
    found = schema.violations({"id": "SECRET-TOO-LONG", "qty": 0, "a/b~c": 5, "extra": 1})
    shown = [(v.pointer, v.rule, v.message) for v in found]
    assert ("/id", "maxLength", "violates maxLength (limit 3)") in shown
    assert ("/qty", "minimum", "violates minimum (limit 1)") in shown
    assert ("/a~1b~0c", "type", "must be of type string") in shown
    assert ("", "additionalProperties", "properties not allowed here: 'extra'") in shown
    assert "SECRET" not in str(shown)
    missing = schema.violations({})
    assert ("", "required", "required property 'id' is missing") in [
        (v.pointer, v.rule, v.message) for v in missing
    ]
    assert len(schema.violations({"id": 1, "qty": "x", "a/b~c": 1}, limit=2)) == 2


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "nope"}, "not a valid JSON Schema at /type"),
        ({"$schema": "http://example.com/meta", "type": "object"}, "not a valid JSON Schema"),
        ({"properties": {"a": {"$ref": "https://example.com/a.json"}}}, "example.com/a.json"),
    ],
)
def test_a_bad_or_remote_schema_is_refused_without_a_request(
    schema: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_schema(schema)


BASE = {"product": "p", "owner": "acme", "team": "t", "topic": "t", "description": "d"}


def test_a_schema_ref_is_read_by_the_caller_given_reader() -> None:
    read: list[str] = []

    def schema_file(ref: str) -> dict[str, Any]:
        read.append(ref)
        return {"type": "object", "properties": {"id": {"type": "string"}}}

    product = parse_product(
        {**BASE, "schema_ref": "s/p.json"}, source="p.yaml", schema_file=schema_file
    )
    assert read == ["s/p.json"]
    assert product.field_paths() == ["id"]
    assert product.schema_ref == "s/p.json"

    def failing(ref: str) -> dict[str, Any]:
        raise DocumentInvalid("cannot be read (gone)")

    with pytest.raises(DocumentInvalid, match=r"p.yaml: schema_ref s/p.json: cannot be read"):
        parse_product({**BASE, "schema_ref": "s/p.json"}, source="p.yaml", schema_file=failing)
    with pytest.raises(DocumentInvalid, match="not both"):
        parse_product({**BASE, "schema_ref": "s/p.json", "schema": {}}, source="p.yaml")
    with pytest.raises(DocumentInvalid, match="cannot be read here"):
        parse_product({**BASE, "schema_ref": "s/p.json"}, source="p.yaml")
    with pytest.raises(DocumentInvalid, match=r"no '\.\.'"):
        parse_product(
            {**BASE, "schema_ref": "s/../x.json"}, source="p.yaml", schema_file=schema_file
        )
