"""The schema of a record as a contract delivers it, and the contract's AsyncAPI document
(pure; ``tests/test_catalog.py`` checks them against delivered records and AsyncAPI 3.0)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jsonschema_rs

from gateway.core.contracts import Contract, Product
from gateway.core.delivered import asyncapi_document, record_schema, value_schema

PRODUCT = Product.model_validate(
    {
        "product": "orders", "owner": "acme", "team": "t", "topic": "t", "description": "Orders",
        "schema": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "customer": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "email": {"type": "string"},
                                   "tier": {"type": "integer"}},
                },
                "lines": {"type": "array", "items": {"type": "object", "properties": {
                    "sku": {"type": "string"}, "price": {"type": "number"}}}},
                "card": {"type": "string"},
            },
        },
    }
)  # fmt: skip


def contract(fields: dict[str, Any]) -> Contract:
    return Contract.model_validate(
        {
            "contract": "c1", "version": 1, "provider": "acme", "consumer": "globex",
            "product": "orders", "purpose": "Testing",
            "valid_from": datetime(2026, 1, 1, tzinfo=UTC),
            "valid_until": datetime(2027, 1, 1, tzinfo=UTC), "fields": fields, "signatures": [],
        }
    )  # fmt: skip


def test_every_field_action_has_its_shape() -> None:
    fields = {
        "id": "clear",
        "customer": "clear",
        "customer.email": "encrypt",
        "customer.tier": "drop",
        "customer.name": "hash",
        "lines[].sku": "clear",
        "card": {"mask": {"keep_last": 4}},
        "unknown.path": "clear",
    }
    value = value_schema(PRODUCT, contract(fields))
    props = value["properties"]
    assert props["id"] == {"type": "string"}
    customer = props["customer"]["properties"]
    assert set(customer) == {"name", "email"}, "a clear object, less what is dropped"
    assert customer["email"]["contentMediaType"] == "application/jose"
    assert customer["name"]["pattern"] == "^[A-Za-z0-9_-]{43}$"
    assert props["lines"] == {
        "type": "array",
        "items": {"type": "object", "properties": {"sku": {"type": "string"}},
                  "additionalProperties": False},
    }  # fmt: skip
    assert "last 4" in props["card"]["description"]
    assert props["unknown"]["properties"]["path"] == {}

    validator = jsonschema_rs.validator_for(record_schema(PRODUCT, contract(fields)))
    record = {
        "partition": 0, "offset": 5, "timestamp": "2026-11-23T10:00:00Z", "key": "o-1",
        "value": {"id": "o-1", "customer": {"name": "A" * 43, "email": "a.b.c.d.e"},
                  "lines": [{"sku": "x"}], "card": "************1111", "unknown": {"path": 1}},
    }  # fmt: skip
    assert validator.is_valid(record), list(validator.iter_errors(record))
    assert not validator.is_valid({**record, "value": {"secret": 1}})


def test_the_asyncapi_document_names_the_channels_the_token_url_and_the_messages() -> None:
    document = asyncapi_document(
        PRODUCT,
        contract({"id": "clear"}),
        base_url="https://gw.example/base",
        token_url="https://gw.example/base/oauth/token",
    )
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["version"] == "1"
    assert document["servers"]["gateway"] == {
        "host": "gw.example",
        "protocol": "https",
        "pathname": "/base",
        "security": [{"$ref": "#/components/securitySchemes/oauth2"}],
    }
    flows = document["components"]["securitySchemes"]["oauth2"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == "https://gw.example/base/oauth/token"
    assert document["channels"]["records"]["address"] == "/v1/contracts/c1/records"
    assert [m["$ref"] for m in document["operations"]["receiveStream"]["messages"]] == [
        f"#/channels/stream/messages/{name}"
        for name in ("record", "refused", "keys", "gap", "end", "heartbeat")
    ]
