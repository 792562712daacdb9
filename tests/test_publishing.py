"""A team publishes records over HTTP into Kafka, and its partners receive them.

Against the real test broker: validation with the dead-letter topic, Idempotency-Key across two
replicas sharing Redis, the limits, and a broker cut while publishing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client import generate_latest
from pydantic import SecretStr

from gateway.adapters.kafka.admin import create_topic
from gateway.adapters.kafka.embedded import EmbeddedKafka
from gateway.dev_identity import AUDIENCE, DevIdentityProvider
from gateway.settings import KafkaSettings, OidcSettings, PublishSettings, RedisSettings
from tests.conftest import RunningGateway, World, order
from tests.redis_server import RedisServer
from tests.tcp_proxy import TcpProxy
from tests.test_faults import broker_behind_proxy, until

pytestmark = pytest.mark.kafka
__all__ = ["broker_behind_proxy"]  # a fixture of the fault tests, shared

SCHEMA = """\
schema:
  type: object
  required: [order_id, amount, currency]
  properties:
    order_id: {type: string}
    amount: {type: number, minimum: 0}
    currency: {type: string, enum: [EUR, USD]}
    customer:
      type: object
      properties:
        name: {type: string, x-classification: personal}
        email: {type: string, x-classification: personal}
        country: {type: string}
"""


@pytest.fixture
def with_schema(world: World) -> World:
    path = world.contracts_dir / "products" / "orders.yaml"
    path.write_text(path.read_text() + "version: 1.2.0\n" + SCHEMA)
    return world


@pytest.fixture
def start(
    serve: Callable[..., RunningGateway], identity_provider: DevIdentityProvider, with_schema: World
) -> Callable[..., RunningGateway]:
    def start_one(**overrides: Any) -> RunningGateway:
        oidc = OidcSettings(issuer=identity_provider.url, audience=AUDIENCE)
        return serve(oidc=oidc, **overrides)

    return start_one


def read_topic(kafka_config: dict[str, str], topic: str, count: int) -> list[Any]:
    """The first ``count`` records of ``topic`` (key, value, headers), in offset order per
    partition. (Not up to the watermark: the test broker answers a short one.)"""
    consumer = Consumer({**kafka_config, "group.id": "unused", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        found: list[tuple[bytes | None, bytes, Any]] = []
        while len(found) < count:
            msg = consumer.poll(10)
            assert msg is not None, f"{len(found)} of {count} records in {topic}"
            assert msg.error() is None, msg.error()
            found.append((msg.key(), msg.value() or b"null", msg.headers() or []))
        return [(k.decode() if k else None, orjson.loads(v), h) for k, v, h in found]
    finally:
        consumer.close()


def publish(
    http: httpx.Client,
    gw: RunningGateway,
    token: str,
    body: Any,
    *,
    key: str | None = None,
    ndjson: bool = False,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    if ndjson:
        headers["Content-Type"] = "application/x-ndjson"
        content = b"".join(orjson.dumps(r) + b"\n" for r in body)
    else:
        headers["Content-Type"] = "application/json"
        content = body if isinstance(body, bytes) else orjson.dumps(body)
    return http.post(f"{gw.url}/v1/products/orders/records", headers=headers, content=content)


def test_a_team_publishes_and_its_partner_receives_the_records(
    start: Callable[..., RunningGateway],
    identity_provider: DevIdentityProvider,
    http: httpx.Client,
    kafka_config: dict[str, str],
) -> None:
    gw = start()
    token = identity_provider.token(groups=("orders-team",))
    batch = [
        {"key": f"o-{n}", "value": order(n), "headers": {"source": "webshop"}} for n in range(3)
    ]
    r = publish(http, gw, token, batch)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["product"] == "orders"
    assert body["schema_version"] == "1.2.0"
    assert len(body["records"]) == 3
    assert {tuple(p) for p in (rec.values() for rec in body["records"])} <= {
        (p, o) for p in (0, 1) for o in range(3)
    }

    ndjson = publish(http, gw, token, [{"key": "o-3", "value": order(3)}], ndjson=True)
    assert ndjson.status_code == 200, ndjson.text

    stored = read_topic(kafka_config, gw.world.topic, 4)
    assert sorted(v["order_id"] for _, v, _ in stored) == ["o-0", "o-1", "o-2", "o-3"]
    assert ("source", b"webshop") in next(h for k, _, h in stored if k == "o-0")

    received = gw.pull_records(http, 4)
    assert sorted(r["value"]["order_id"] for r in received) == ["o-0", "o-1", "o-2", "o-3"]


def test_invalid_records_are_refused_each_named_and_dead_lettered(
    start: Callable[..., RunningGateway],
    identity_provider: DevIdentityProvider,
    http: httpx.Client,
    kafka_config: dict[str, str],
) -> None:
    gw = start()
    token = identity_provider.token("svc-webshop", groups=("orders-team",))
    bad_amount = order(1, amount=-5)
    bad_currency = order(2, currency="GBP-SECRET")
    del bad_currency["order_id"]
    batch = [{"value": order(0)}, {"key": "b1", "value": bad_amount}, {"value": bad_currency}]
    r = publish(http, gw, token, batch)
    assert r.status_code == 422
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert problem["code"] == "records_invalid"
    assert problem["dead_letter_topic"] == f"{gw.world.topic}.dlq"
    assert sorted((e["record"], e["pointer"], e["rule"]) for e in problem["errors"]) == [
        (1, "/amount", "minimum"),
        (2, "", "required"),
        (2, "/currency", "enum"),
    ]
    assert "SECRET" not in r.text

    # Nothing of the batch was written: the next record published is the topic's first.
    marker = publish(http, gw, token, [{"key": "marker", "value": order(9)}])
    assert marker.status_code == 200
    assert [k for k, _, _ in read_topic(kafka_config, gw.world.topic, 1)] == ["marker"]
    dead = read_topic(kafka_config, f"{gw.world.topic}.dlq", 2)
    assert [v for _, v, _ in dead] == [bad_amount, bad_currency]
    headers = dict(dead[0][2])
    assert headers["gateway.dlq.reason"] == b"schema_violation"
    assert headers["gateway.dlq.schema-version"] == b"1.2.0"
    assert headers["gateway.dlq.caller"] == b"svc-webshop"
    assert dead[0][0] == "b1"


def test_a_retry_on_another_replica_with_the_same_key_writes_nothing_twice(
    start: Callable[..., RunningGateway],
    identity_provider: DevIdentityProvider,
    http: httpx.Client,
    kafka_config: dict[str, str],
    redis_server: RedisServer,
) -> None:
    redis = RedisSettings(url=SecretStr(redis_server.url))
    one, two = start(redis=redis, replica="one"), start(redis=redis, replica="two")
    token = identity_provider.token(groups=("orders-team",))
    batch = [{"key": f"o-{n}", "value": order(n)} for n in range(5)]
    first = publish(http, one, token, batch, key='"batch-2026-11-23-001"')
    again = publish(http, two, token, batch, key='"batch-2026-11-23-001"')
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    published = generate_latest(one.gateway.metrics.registry).decode()
    assert 'gateway_published_records_total{outcome="written",product="orders"} 5.0' in published
    marker = publish(http, one, token, [{"key": "marker", "value": order(9)}])
    assert marker.status_code == 200
    keys = [k for k, _, _ in read_topic(kafka_config, one.world.topic, 6)]
    assert sorted(keys) == ["marker", "o-0", "o-1", "o-2", "o-3", "o-4"], "each record once"

    other = publish(http, two, token, batch[:2], key='"batch-2026-11-23-001"')
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"


def test_the_limits_answer_clearly(
    start: Callable[..., RunningGateway], identity_provider: DevIdentityProvider, http: httpx.Client
) -> None:
    gw = start(
        publish=PublishSettings(max_body_bytes=2048, max_records=3, team_records_per_second=5)
    )
    token = identity_provider.token(groups=("orders-team",))
    big = publish(http, gw, token, [{"value": {"order_id": "x" * 4000}}])
    assert (big.status_code, big.json()["code"]) == (413, "payload_too_large")
    many = publish(http, gw, token, [{"value": order(n)} for n in range(4)])
    assert (many.status_code, many.json()["code"]) == (400, "invalid_parameter")
    assert "at most 3" in many.json()["detail"]
    xml = http.post(
        f"{gw.url}/v1/products/orders/records",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/xml"},
        content=b"<orders/>",
    )
    assert (xml.status_code, xml.json()["code"]) == (415, "unsupported_media_type")
    bad_key = publish(http, gw, token, [{"value": order(0)}], key="no spaces allowed")
    assert bad_key.status_code == 400

    statuses = [
        publish(http, gw, token, [{"value": order(n)} for n in range(3)]).status_code
        for _ in range(4)
    ]
    assert statuses[0] == 200
    assert statuses[-1] == 429
    refused = publish(http, gw, token, [{"value": order(0)}] * 3)
    assert refused.json()["code"] == "too_many_requests"
    assert int(refused.headers["retry-after"]) >= 1
    assert "ratelimit-policy" in refused.headers


def test_a_broker_cut_while_publishing_answers_503_and_the_retry_writes_each_record_once(
    broker_behind_proxy: tuple[EmbeddedKafka, TcpProxy],  # first: it outlives the gateway
    start: Callable[..., RunningGateway],
    identity_provider: DevIdentityProvider,
    http: httpx.Client,
) -> None:
    broker, proxy = broker_behind_proxy
    config = {"bootstrap.servers": broker.bootstrap_servers}
    gw = start(
        kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
        publish=PublishSettings(delivery_timeout_seconds=2),
    )
    create_topic(config, gw.world.topic, 2)
    token = identity_provider.token(groups=("orders-team",))
    first = [{"key": f"o-{n}", "value": order(n)} for n in range(3)]
    assert publish(http, gw, token, first, key="first").status_code == 200

    proxy.cut()
    second = [{"key": f"o-{n}", "value": order(n)} for n in range(3, 6)]
    cut = publish(http, gw, token, second, key="second")
    assert cut.status_code == 503, cut.text
    assert cut.json()["code"] == "broker_unavailable"
    assert "retry with the same Idempotency-Key" in cut.json()["detail"]

    proxy.restore()
    # The first retries may meet a producer that the cut ended (fenced): it answers which
    # records Kafka took, is replaced, and the next retry writes only the rest.
    until(lambda: publish(http, gw, token, second, key="second").status_code == 200, 30)
    again = publish(http, gw, token, second, key="second")
    assert again.headers["idempotent-replayed"] == "true"
    keys = [k for k, _, _ in read_topic(config, gw.world.topic, 6)]
    assert sorted(keys) == [f"o-{n}" for n in range(6)], "each record once"


def test_with_redis_gone_a_keyed_request_is_refused_rather_than_risk_a_duplicate(
    start: Callable[..., RunningGateway],
    identity_provider: DevIdentityProvider,
    http: httpx.Client,
    kafka_config: dict[str, str],
    redis_server: RedisServer,
) -> None:
    gw = start(redis=RedisSettings(url=SecretStr(redis_server.url), timeout_seconds=0.5))
    token = identity_provider.token(groups=("orders-team",))
    redis_server.stop()  # killed: the idempotency keys cannot be checked
    keyed = publish(http, gw, token, [{"key": "o-1", "value": order(1)}], key="k-1")
    assert keyed.status_code == 503, keyed.text
    assert keyed.json()["code"] == "store_unavailable"
    assert keyed.headers["retry-after"]
    # Without a key nothing needs Redis: the record is written (the rate is enforced locally).
    plain = publish(http, gw, token, [{"key": "o-2", "value": order(2)}])
    assert plain.status_code == 200, plain.text
    assert [k for k, _, _ in read_topic(kafka_config, gw.world.topic, 1)] == ["o-2"]
    # The consumption figures live there too: the team is told, not shown zeros.
    figures = http.get(
        f"{gw.url}/v1/products/orders/consumers", headers={"Authorization": f"Bearer {token}"}
    )
    assert (figures.status_code, figures.json()["code"]) == (503, "store_unavailable")
