"""Records in the Schema Registry wire format (magic byte, schema id, payload), with
confluent-kafka's own serdes and its HTTP registry client (``schema_registry.url``).

Avro and JSON Schema records: ``RegistryValues.decode`` turns a record's value into the JSON
object partners receive, so that a contract's fields, filters, encryption and pseudonyms apply
exactly as to a JSON product; its ``encode`` writes a team's published JSON value with the
subject's latest registered schema. (Protobuf is not among them: confluent's deserializer
needs the generated message class, which a gateway serving any product cannot have.)

Two kinds of failure, never confused:

- the value cannot be decoded (not the wire format, a schema id the registry does not know, a
  payload that does not match its schema): ``UndecodableValue``; the stream reports that record
  as ``event: refused`` and goes on — the record is never passed through;
- the registry cannot be asked now (down, timing out, 5xx): ``BrokerUnavailable`` with code
  ``schema_registry_unavailable``; the stream ends and the partner resumes from its cursor
  later, so a registry outage never turns records into refusals.

Schemas are cached by id after the first fetch, so a running stream makes no registry calls.
"""

from __future__ import annotations

import base64
import decimal
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

from gateway.adapters.kafka.source import UndecodableValue
from gateway.core.contracts import Product, RecordFormat
from gateway.errors import BrokerUnavailable
from gateway.services.registry import Registry
from gateway.settings import Settings

log = logging.getLogger(__name__)

#: Registry answers that mean "this value names something that does not exist", as opposed to
#: "ask again later": 40401 subject, 40402 version, 40403 schema not found.
_NOT_FOUND = frozenset({40401, 40402, 40403})


def _jsonable(value: Any) -> Any:
    """orjson's fallback for what Avro decodes and JSON lacks."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def _unavailable(exc: Exception) -> BrokerUnavailable:
    log.warning("schema registry: %s", type(exc).__name__)
    return BrokerUnavailable(
        "the Schema Registry cannot be reached to decode the product's records; try again",
        code="schema_registry_unavailable",
    )


class RegistryValues:
    """Record values of one format in the wire format (Avro, or JSON Schema), through one
    registry client shared by the formats."""

    def __init__(self, client: SchemaRegistryClient, record_format: RecordFormat) -> None:
        publish_conf = {"auto.register.schemas": False, "use.latest.version": True}
        self.name = _NAMES[record_format]
        if record_format is RecordFormat.AVRO:
            self._decoder: Any = AvroDeserializer(client)
            self._encoder: Any = AvroSerializer(client, conf=publish_conf)
        else:
            # Imported here: only a JSON Schema product needs jsonschema.
            from confluent_kafka.schema_registry.json_schema import (
                JSONDeserializer,
                JSONSerializer,
            )

            self._decoder = JSONDeserializer(None, schema_registry_client=client)
            self._encoder = JSONSerializer(None, client, conf=publish_conf)
        self._lock = threading.Lock()

    def decode(self, topic: str, value: bytes) -> bytes:
        """The JSON bytes of a record value (blocking on the first sight of a schema)."""
        context = SerializationContext(topic, MessageField.VALUE)
        with _registry_errors("its schema id is not in the Schema Registry"):
            try:
                decoded = self._decoder(value, context)
            except (SerializationError, ValueError, TypeError, EOFError, IndexError) as exc:
                raise UndecodableValue(
                    f"not a record of its {self.name} schema ({type(exc).__name__})"
                ) from None
        return orjson.dumps(decoded, default=_jsonable)

    def encode(self, topic: str, value: Any) -> bytes:
        """``value`` in the wire format with the subject's latest schema, or
        ``UndecodableValue`` saying which field does not fit (never its value: the serdes'
        own messages may quote it)."""
        context = SerializationContext(topic, MessageField.VALUE)
        not_found = f"no {self.name} schema is registered for subject {topic}-value"
        with _registry_errors(not_found):
            try:
                with self._lock:
                    encoded = self._encoder(value, context)
            except (SerializationError, ValueError, TypeError, KeyError, AttributeError) as exc:
                field = re.search(r"on field (\w+)", str(exc))
                where = f" (field {field[1]})" if field else ""
                raise UndecodableValue(
                    f"does not fit the schema registered for the product ({self.name}){where}"
                ) from None
        if not isinstance(encoded, bytes):
            raise UndecodableValue(
                f"does not fit the schema registered for the product ({self.name})"
            )
        return encoded


_NAMES = {RecordFormat.AVRO: "Avro", RecordFormat.JSON_SCHEMA: "JSON Schema"}


def registry_client(url: str, *, basic_auth: str | None, timeout: float) -> SchemaRegistryClient:
    conf: dict[str, Any] = {
        "url": url,
        "timeout": timeout,
        # A schema registered later is seen for publishing within a minute.
        "cache.latest.ttl.sec": 60,
        # One attempt: a stream that cannot decode ends and resumes, it does not stall.
        "max.retries": 1,
    }
    if basic_auth:
        conf["basic.auth.user.info"] = basic_auth
    return SchemaRegistryClient(conf)


@contextmanager
def _registry_errors(not_found: str) -> Iterator[None]:
    """The registry's answers translated once: "no such schema" is the value's fault
    (``UndecodableValue``); anything else about reaching it is ``schema_registry_unavailable``."""
    try:
        yield
    except SchemaRegistryError as exc:
        if exc.error_code in _NOT_FOUND:
            raise UndecodableValue(not_found) from None
        raise _unavailable(exc) from None
    except OSError as exc:
        raise _unavailable(exc) from None
    except Exception as exc:  # the HTTP client's own errors (httpx2): not the value's fault
        if type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2"):
            raise _unavailable(exc) from None
        raise


class ProductFormats:
    """The decoder and encoder of each product's record values: none for JSON, the Schema
    Registry's serdes for ``format: avro`` and ``format: json-schema`` (created at first use).
    A product in the wire format with no registry configured cannot be read or written: every
    attempt answers ``schema_registry_unavailable`` and the log says why."""

    def __init__(self, settings: Settings, registry: Callable[[], Registry]) -> None:
        self._settings = settings.schema_registry
        self._registry = registry
        self._client: SchemaRegistryClient | None = None
        self._values: dict[RecordFormat, RegistryValues] = {}
        self._lock = threading.Lock()

    def values(self, record_format: RecordFormat) -> RegistryValues:
        with self._lock:
            if record_format not in self._values:
                url = self._settings.url
                if url is None:
                    log.error("a product is in %s and no GATEWAY_SCHEMA_REGISTRY__URL is set",
                              record_format.value)  # fmt: skip
                    raise BrokerUnavailable(
                        f"the product's records are {_NAMES[record_format]} and no Schema "
                        "Registry is configured",
                        code="schema_registry_unavailable",
                    )
                if self._client is None:
                    auth = self._settings.basic_auth
                    self._client = registry_client(
                        url,
                        basic_auth=auth.get_secret_value() if auth else None,
                        timeout=self._settings.timeout_seconds,
                    )
                self._values[record_format] = RegistryValues(self._client, record_format)
            return self._values[record_format]

    def _format_of(self, topic: str) -> RecordFormat:
        products = self._registry().products.values()
        found = {p.format for p in products if p.topic == topic}
        return next(iter(found - {RecordFormat.JSON}), RecordFormat.JSON)

    def decoder(self, topic: str) -> Callable[[bytes], bytes] | None:
        record_format = self._format_of(topic)
        if record_format is RecordFormat.JSON:
            return None
        return lambda value: self.values(record_format).decode(topic, value)

    def encoder(self, product: Product) -> Callable[[Any], bytes] | None:
        if product.format is RecordFormat.JSON:
            return None
        return lambda value: self.values(product.format).encode(product.topic, value)
