"""Products whose records are Avro in the Schema Registry wire format: partners receive JSON
under the same contract rules; a record that cannot be decoded is refused, never passed
through; a registry outage ends streams for a resume instead of refusing records. Teams publish
JSON to them and the topic gets Avro.

The registry is a REST server on loopback (``tests/schema_registry.py``), reached through
confluent-kafka's HTTP client exactly as a production registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from gateway.adapters.kafka.producer import produce
from gateway.dev_identity import AUDIENCE, DevIdentityProvider
from gateway.settings import OidcSettings, SchemaRegistrySettings
from tests.conftest import RunningGateway, World
from tests.schema_registry import LocalSchemaRegistry
from tests.test_publishing import publish, read_topic

pytestmark = pytest.mark.kafka

ORDER = {
    "type": "record",
    "name": "Order",
    "namespace": "com.acme",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "currency", "type": "string"},
        {
            "name": "customer",
            "type": {
                "type": "record",
                "name": "Customer",
                "fields": [
                    {"name": "name", "type": "string"},
                    {"name": "email", "type": "string"},
                    {"name": "country", "type": "string"},
                ],
            },
        },
    ],
}


def avro_order(n: int) -> dict[str, Any]:
    return {
        "order_id": f"o-{n}",
        "amount": n * 1.5,
        "currency": "EUR",
        "customer": {"name": f"Name {n}", "email": f"c{n}@example.com", "country": "NL"},
    }


@pytest.fixture
def avro_world(world: World, schema_registry: LocalSchemaRegistry) -> World:
    path = world.contracts_dir / "products" / "orders.yaml"
    path.write_text(path.read_text() + "format: avro\n")
    schema_registry.register(f"{world.topic}-value", json.dumps(ORDER))
    return world


@pytest.fixture
def start(
    serve: Callable[..., RunningGateway],
    avro_world: World,
    schema_registry: LocalSchemaRegistry,
    identity_provider: DevIdentityProvider,
) -> Callable[[], RunningGateway]:
    def start_one() -> RunningGateway:
        return serve(
            schema_registry=SchemaRegistrySettings(url=schema_registry.url, timeout_seconds=2),
            oidc=OidcSettings(issuer=identity_provider.url, audience=AUDIENCE),
        )

    return start_one


def produce_avro(
    kafka_config: dict[str, str], registry: LocalSchemaRegistry, topic: str, values: list[Any]
) -> None:
    """Records as a Java or Python producer with Confluent's serializer would write them."""
    serializer = AvroSerializer(SchemaRegistryClient({"url": registry.url}), json.dumps(ORDER))
    context = SerializationContext(topic, MessageField.VALUE)
    records = [
        (f"k{n}", value if isinstance(value, bytes) else serializer(value, context))
        for n, value in enumerate(values)
    ]
    produce(kafka_config, topic, records, partition=0)


def test_partners_receive_avro_records_as_json_under_their_contract(
    start: Callable[[], RunningGateway],
    avro_world: World,
    schema_registry: LocalSchemaRegistry,
    kafka_config: dict[str, str],
    http: httpx.Client,
) -> None:
    corrupt = b"\x00\x00\x00\x00\x01\xff\xff\xff"  # right magic byte and id, broken payload
    unknown_schema = b"\x00\x00\x00\x03\xe7abc"  # schema id 999
    produce_avro(
        kafka_config,
        schema_registry,
        avro_world.topic,
        [avro_order(0), corrupt, b'{"order_id": "plain json"}', unknown_schema, avro_order(4)],
    )
    gw = start()
    records = gw.pull_records(http, 5)
    assert [r.get("value") for r in records] == [
        {"order_id": "o-0", "amount": 0.0, "customer": {"country": "NL"}},
        None,
        None,
        None,
        {"order_id": "o-4", "amount": 6.0, "customer": {"country": "NL"}},
    ]
    assert [r.get("refused") for r in records] == [
        None, "value_not_json_object", "value_not_json_object", "value_not_json_object", None,
    ]  # fmt: skip


def test_a_registry_outage_ends_the_pull_for_a_retry_and_loses_nothing(
    start: Callable[[], RunningGateway],
    avro_world: World,
    schema_registry: LocalSchemaRegistry,
    kafka_config: dict[str, str],
    http: httpx.Client,
) -> None:
    produce_avro(kafka_config, schema_registry, avro_world.topic, [avro_order(0), avro_order(1)])
    gw = start()
    schema_registry.available = False
    headers = {"Authorization": f"Bearer {gw.token('globex')}"}
    url = f"{gw.url}/v1/contracts/acme-globex-orders/records"
    down = http.get(url, headers=headers, params={"wait": "2"})
    assert down.status_code == 503, down.text
    assert down.json()["code"] == "schema_registry_unavailable"
    assert down.headers["retry-after"]

    schema_registry.available = True
    records = gw.pull_records(http, 2)
    assert [r["value"]["order_id"] for r in records] == ["o-0", "o-1"]


def test_a_team_publishes_json_and_the_topic_holds_avro(
    start: Callable[[], RunningGateway],
    avro_world: World,
    schema_registry: LocalSchemaRegistry,
    identity_provider: DevIdentityProvider,
    kafka_config: dict[str, str],
    http: httpx.Client,
) -> None:
    gw = start()
    token = identity_provider.token(groups=("orders-team",))
    ok = publish(http, gw, token, [{"key": "o-7", "value": avro_order(7)}])
    assert ok.status_code == 200, ok.text

    misfit = {**avro_order(8), "amount": "lots"}
    refused = publish(http, gw, token, [{"value": avro_order(9)}, {"value": misfit}])
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {
            "record": 1,
            "pointer": "",
            "rule": "avro",
            "message": "does not fit the schema registered for the product (Avro)",
        }
    ]
    dead = read_topic(kafka_config, f"{avro_world.topic}.dlq", 1)
    assert dead[0][1] == misfit  # the JSON the team sent
    assert dict(dead[0][2])["gateway.dlq.reason"] == b"encoding_failed"

    raw = read_raw(kafka_config, avro_world.topic)
    assert raw[:1] == b"\x00", "the Schema Registry wire format"
    decoder = AvroDeserializer(SchemaRegistryClient({"url": schema_registry.url}))
    context = SerializationContext(avro_world.topic, MessageField.VALUE)
    assert decoder(raw, context) == avro_order(7)
    assert gw.pull_records(http, 1)[0]["value"]["order_id"] == "o-7"


def read_raw(kafka_config: dict[str, str], topic: str) -> bytes:
    """The value of the first record found in ``topic``, as stored."""
    consumer = Consumer({**kafka_config, "group.id": "unused", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while True:
            msg = consumer.poll(10)
            assert msg is not None, "no record"
            if msg.error() is None:
                return bytes(msg.value() or b"")
    finally:
        consumer.close()


def test_undecodable_values_are_never_logged_with_their_content(
    start: Callable[[], RunningGateway],
    avro_world: World,
    schema_registry: LocalSchemaRegistry,
    kafka_config: dict[str, str],
    http: httpx.Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = b"\x00\x00\x00\x00\x01" + orjson.dumps("SECRET-IBAN-NL91ABNA0417164300")
    produce_avro(kafka_config, schema_registry, avro_world.topic, [secret])
    gw = start()
    assert gw.pull_records(http, 1)[0]["refused"] == "value_not_json_object"
    assert "SECRET" not in caplog.text
    assert "cannot be decoded" in caplog.text


ORDER_JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Order",
    "type": "object",
    "required": ["order_id", "amount"],
    "properties": {
        "order_id": {"type": "string"},
        "amount": {"type": "number"},
        "currency": {"type": "string"},
        "customer": {"type": "object", "properties": {"country": {"type": "string"}}},
    },
}


def test_json_schema_records_in_the_wire_format_too(
    serve: Callable[..., RunningGateway],
    world: World,
    schema_registry: LocalSchemaRegistry,
    identity_provider: DevIdentityProvider,
    kafka_config: dict[str, str],
    http: httpx.Client,
) -> None:
    from confluent_kafka.schema_registry.json_schema import JSONSerializer

    path = world.contracts_dir / "products" / "orders.yaml"
    path.write_text(path.read_text() + "format: json-schema\n")
    subject = f"{world.topic}-value"
    schema_id = schema_registry.register(subject, json.dumps(ORDER_JSON_SCHEMA), "JSON")
    serializer = JSONSerializer(
        json.dumps(ORDER_JSON_SCHEMA),
        SchemaRegistryClient({"url": schema_registry.url}),
        conf={"auto.register.schemas": False, "use.latest.version": True},
    )
    context = SerializationContext(world.topic, MessageField.VALUE)
    wrong = b"\x00" + schema_id.to_bytes(4, "big") + b'{"order_id": 5, "amount": "SECRET"}'
    produce(
        kafka_config,
        world.topic,
        [("k0", serializer(avro_order(0), context)), ("k1", wrong)],
        partition=0,
    )
    gw = serve(
        schema_registry=SchemaRegistrySettings(url=schema_registry.url),
        oidc=OidcSettings(issuer=identity_provider.url, audience=AUDIENCE),
    )
    first, second = gw.pull_records(http, 2)
    assert first["value"] == {"order_id": "o-0", "amount": 0.0, "customer": {"country": "NL"}}
    assert second["refused"] == "value_not_json_object"

    token = identity_provider.token(groups=("orders-team",))
    ok = publish(http, gw, token, [{"key": "o-5", "value": avro_order(5)}])
    assert ok.status_code == 200, ok.text
    refused = publish(http, gw, token, [{"value": {"order_id": 6, "amount": "SECRET-6"}}])
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["message"] == (
        "does not fit the schema registered for the product (JSON Schema)"
    )
    assert "SECRET" not in refused.text
