"""What a contract delivers, described for the partner: the JSON Schema of one record as the
contract's field rules shape it (``GET /v1/contracts/{id}/schema``), and its AsyncAPI 3.0
document (``GET /v1/contracts/{id}/asyncapi``).

The value schema is built from the contract's rules over the product's schema, the way
``core/projection.py`` builds a value: a ``clear`` path keeps the product's schema of that
path (its whole subtree, but for children with rules of their own), ``encrypt`` is a compact
JWE string, ``hash`` a pseudonym string, ``mask`` a string, ``drop`` is absent. A path the
product does not describe is ``{}`` (any JSON).
"""

from __future__ import annotations

import copy
from typing import Any

from gateway.core.contracts import Contract, FieldAction, FieldRule, Product, schema_at

JSON_SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"

#: A compact JWE (RFC 7516 §7.1): five base64url parts.
COMPACT_JWE = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"


def _protected(rule: FieldRule, path: str) -> dict[str, Any]:
    if rule.action is FieldAction.ENCRYPT:
        return {
            "type": ["string", "null"],
            "pattern": COMPACT_JWE,
            "contentMediaType": "application/jose",
            "description": (
                f"Encrypted to your key: a compact JWE whose protected header's fld is {path!r} "
                "(docs/field-encryption.md)"
            ),
        }
    if rule.action is FieldAction.HASH:
        return {
            "type": ["string", "null"],
            "pattern": "^[A-Za-z0-9_-]{43}$",
            "description": "A keyed pseudonym (HMAC-SHA256, base64url): equal values alike",
        }
    return {"type": ["string", "null"], "description": f"Masked: {rule}"}


def value_schema(product: Product, contract: Contract) -> dict[str, Any]:
    """The JSON Schema of ``value`` in the records this contract delivers."""
    root: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    for path in sorted(contract.fields, key=lambda p: p.count(".")):
        rule = contract.fields[path]
        parts = path.split(".")
        parent = root
        for part in parts[:-1]:
            parent = _child(parent, part)
        last = parts[-1]
        name = last.removesuffix("[]")
        properties = parent.setdefault("properties", {})
        if rule.action is FieldAction.DROP:
            properties.pop(name, None)
            continue
        if rule.action is FieldAction.CLEAR:
            described = schema_at(product.json_schema, path)
            leaf = copy.deepcopy(described) if isinstance(described, dict) else {}
        else:
            leaf = _protected(rule, path)
        if last.endswith("[]"):
            leaf = {"type": "array", "items": leaf}
        properties[name] = leaf
    return root


def _child(parent: dict[str, Any], part: str) -> dict[str, Any]:
    """The schema of a path's inner step, created as an object holding only listed children."""
    name = part.removesuffix("[]")
    properties = parent.setdefault("properties", {})
    node = properties.get(name)
    if node is None:
        node = {"type": "object", "properties": {}, "additionalProperties": False}
        properties[name] = {"type": "array", "items": node} if part.endswith("[]") else node
        return node
    inner: dict[str, Any] = node["items"] if part.endswith("[]") and "items" in node else node
    return inner


def record_schema(product: Product, contract: Contract) -> dict[str, Any]:
    """The JSON Schema of one record event's data, as this contract delivers it."""
    return {
        "$schema": JSON_SCHEMA_DRAFT,
        "title": f"A record of {product.product} under contract {contract.contract}",
        "type": "object",
        "required": ["partition", "offset", "timestamp", "value"],
        "properties": {
            "partition": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "timestamp": {"type": ["string", "null"], "format": "date-time"},
            "key": {"type": ["string", "null"], "description": "The Kafka key (UTF-8)"},
            "key_base64": {"type": "string", "description": "A key that is not UTF-8"},
            "value": value_schema(product, contract),
        },
    }


def _payload(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def asyncapi_document(
    product: Product, contract: Contract, *, base_url: str, token_url: str
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of one contract: its stream (SSE or NDJSON) and pull
    channels, OAuth 2.0 client credentials, and the messages with their payload schemas."""
    scheme, _, rest = base_url.partition("://")
    host, _, pathname = rest.partition("/")
    cid = contract.contract
    record = record_schema(product, contract)
    record.pop("$schema")
    position = {"partition": {"type": "integer"}, "offset": {"type": "integer"}}
    messages: dict[str, Any] = {
        "record": {
            "name": "record",
            "title": "A record",
            "summary": "SSE: event: record, id: the cursor after it. NDJSON: the object with "
            '"cursor".',
            "payload": record,
        },
        "refused": {
            "name": "refused",
            "title": "A record that could not be delivered",
            "summary": "Its position, and why (its value is not a JSON object).",
            "payload": _payload(
                {**position, "key": {"type": ["string", "null"]}, "refused": {"type": "string"}},
                ["partition", "offset", "refused"],
            ),
        },
        "keys": {
            "name": "keys",
            "title": "Data keys for encrypted fields",
            "summary": "Before the first record that needs a new data key.",
            "payload": _payload(
                {
                    "keys": {
                        "type": "array",
                        "items": _payload(
                            {"kid": {"type": "string"}, "jwe": {"type": "string"}},
                            ["kid", "jwe"],
                        ),
                    }
                },
                ["keys"],
            ),
        },
        "gap": {
            "name": "gap",
            "title": "Records you can no longer get",
            "payload": _payload(
                {
                    "partition": {"type": "integer"},
                    "first": {"type": "integer"},
                    "last": {"type": "integer"},
                    "reason": {"type": "string"},
                },
                ["partition", "first", "last", "reason"],
            ),
        },
        "end": {
            "name": "end",
            "title": "The stream ends",
            "summary": "Reconnect with your cursor (after retry_after seconds, if given).",
            "payload": _payload(
                {
                    "reason": {"type": "string"},
                    "detail": {"type": "string"},
                    "retry_after": {"type": "integer"},
                },
                ["reason"],
            ),
        },
        "heartbeat": {
            "name": "heartbeat",
            "title": "Heartbeat",
            "summary": 'SSE: the comment ": heartbeat". NDJSON: {"event": "heartbeat"}.',
            "payload": _payload({"event": {"const": "heartbeat"}}, []),
        },
    }
    stream_messages = {name: {"$ref": f"#/components/messages/{name}"} for name in messages}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": f"{product.product} from {contract.provider} to {contract.consumer}",
            "version": str(contract.version),
            "description": f"{product.description}\n\nContract {cid}: {contract.purpose}",
        },
        "defaultContentType": "application/json",
        "servers": {
            "gateway": {
                "host": host,
                "protocol": scheme,
                **({"pathname": "/" + pathname} if pathname else {}),
                "security": [{"$ref": "#/components/securitySchemes/oauth2"}],
            }
        },
        "channels": {
            "stream": {
                "address": f"/v1/contracts/{cid}/stream",
                "title": "Stream",
                "description": "Server-Sent Events (Accept: text/event-stream) or NDJSON (Accept: "
                "application/x-ndjson). Resume with Last-Event-ID or ?cursor=.",
                "messages": stream_messages,
            },
            "records": {
                "address": f"/v1/contracts/{cid}/records",
                "title": "Pull",
                "description": 'GET with ?cursor=&limit=&wait=: {"records": [...], "cursor": ...}',
                "messages": {"record": {"$ref": "#/components/messages/record"}},
            },
        },
        "operations": {
            "receiveStream": {
                "action": "receive",
                "channel": {"$ref": "#/channels/stream"},
                "messages": [{"$ref": f"#/channels/stream/messages/{name}"} for name in messages],
            },
            "pullRecords": {
                "action": "receive",
                "channel": {"$ref": "#/channels/records"},
                "messages": [{"$ref": "#/channels/records/messages/record"}],
            },
        },
        "components": {
            "securitySchemes": {
                "oauth2": {
                    "type": "oauth2",
                    "description": "OAuth 2.0 client credentials (RFC 6749 §4.4) with "
                    "private_key_jwt (RFC 7523) or client_secret_basic",
                    "flows": {"clientCredentials": {"tokenUrl": token_url, "availableScopes": {}}},
                }
            },
            "messages": messages,
        },
    }
