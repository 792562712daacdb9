"""Publishing records: all-or-nothing validation, the dead-letter copy, and Idempotency-Key
(with an in-memory sink; ``tests/test_publishing.py`` does the same against Kafka)."""

from __future__ import annotations

import orjson
import pytest

from gateway.adapters.stores.idempotency import MemoryIdempotencyStore
from gateway.core.contracts import Product
from gateway.core.identity import TeamMember
from gateway.core.publishing import IncomingRecord
from gateway.errors import (
    BrokerUnavailable,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    ProductNotFound,
    RecordsInvalid,
)
from gateway.services.publishing import PublishService
from gateway.services.registry import Registry
from tests.fakes import FakeRecordSink

PRODUCT = Product.model_validate(
    {
        "product": "orders",
        "owner": "acme",
        "team": "orders-team",
        "topic": "orders",
        "description": "d",
        "version": "2.1.0",
        "schema": {
            "type": "object",
            "required": ["id", "amount"],
            "properties": {"id": {"type": "string"}, "amount": {"type": "number"}},
        },
    }
)
ALICE = TeamMember("alice", frozenset({"orders-team"}))


@pytest.fixture
def sink() -> FakeRecordSink:
    return FakeRecordSink()


@pytest.fixture
def service(sink: FakeRecordSink) -> PublishService:
    registry = Registry(products={"orders": PRODUCT})
    return PublishService(
        registry=lambda: registry,
        sink=sink,
        idempotency=MemoryIdempotencyStore(),
        window_seconds=3600,
    )


def rec(n: int, amount: object = 1.5) -> IncomingRecord:
    return IncomingRecord({"id": f"o{n}", "amount": amount}, f"k{n}", {"trace": f"t{n}"})


def test_valid_records_are_written_in_order_with_their_positions(
    service: PublishService, sink: FakeRecordSink
) -> None:
    published = service.publish(
        ALICE, "orders", [rec(0), rec(1)], idempotency_key=None, request_id="r"
    )
    assert published.positions == [(0, 0), (0, 1)]
    assert [orjson.loads(v) for _, v, _ in sink.topics["orders"]] == [
        {"id": "o0", "amount": 1.5},
        {"id": "o1", "amount": 1.5},
    ]
    assert sink.topics["orders"][0][2] == [("trace", "t0")]


def test_one_invalid_record_writes_nothing_and_goes_to_the_dead_letter_topic(
    service: PublishService, sink: FakeRecordSink
) -> None:
    batch = [rec(0), rec(1, amount="SECRET-4111"), rec(2)]
    with pytest.raises(RecordsInvalid) as refused:
        service.publish(ALICE, "orders", batch, idempotency_key=None, request_id="req-1")
    assert refused.value.errors == [
        {"record": 1, "pointer": "/amount", "rule": "type", "message": "must be of type number"}
    ]
    assert "SECRET" not in str(refused.value.errors) + refused.value.detail
    assert sink.topics.get("orders", []) == []
    [(key, value, headers)] = sink.topics["orders.dlq"]
    assert key == "k1"
    assert orjson.loads(value) == {"id": "o1", "amount": "SECRET-4111"}
    named = dict(headers)
    assert named["trace"] == "t1"
    assert named["gateway.dlq.reason"] == "schema_violation"
    assert named["gateway.dlq.schema-version"] == "2.1.0"
    assert named["gateway.dlq.caller"] == "alice"
    assert named["gateway.dlq.request"] == "req-1"
    assert orjson.loads(named["gateway.dlq.errors"])[0]["pointer"] == "/amount"


def test_another_teams_product_is_not_found(service: PublishService) -> None:
    bob = TeamMember("bob", frozenset({"billing"}))
    with pytest.raises(ProductNotFound):
        service.publish(bob, "orders", [rec(0)], idempotency_key=None, request_id="r")


def test_a_retry_with_the_same_key_writes_nothing_twice(
    service: PublishService, sink: FakeRecordSink
) -> None:
    first = service.publish(ALICE, "orders", [rec(0), rec(1)], idempotency_key="k", request_id="r")
    again = service.publish(ALICE, "orders", [rec(0), rec(1)], idempotency_key="k", request_id="r")
    assert again.replayed
    assert not first.replayed
    assert again.positions == first.positions
    assert len(sink.topics["orders"]) == 2
    with pytest.raises(IdempotencyKeyReused):
        service.publish(ALICE, "orders", [rec(7)], idempotency_key="k", request_id="r")
    # Keys are the caller's own: another member's same key is another request.
    carol = TeamMember("carol", frozenset({"orders-team"}))
    service.publish(carol, "orders", [rec(7)], idempotency_key="k", request_id="r")
    assert len(sink.topics["orders"]) == 3


def test_a_refused_batch_retried_with_its_key_is_not_dead_lettered_twice(
    service: PublishService, sink: FakeRecordSink
) -> None:
    for _ in range(2):
        with pytest.raises(RecordsInvalid):
            service.publish(ALICE, "orders", [rec(0, "x")], idempotency_key="k", request_id="r")
    assert len(sink.topics["orders.dlq"]) == 1


def test_after_a_broker_failure_mid_batch_the_retry_writes_only_the_rest(
    service: PublishService, sink: FakeRecordSink
) -> None:
    batch = [rec(n) for n in range(5)]
    sink.fail_after = 2
    with pytest.raises(BrokerUnavailable, match="acknowledged 2 of 5 records"):
        service.publish(ALICE, "orders", batch, idempotency_key="k", request_id="r")
    done = service.publish(ALICE, "orders", batch, idempotency_key="k", request_id="r")
    values = [orjson.loads(v)["id"] for _, v, _ in sink.topics["orders"]]
    assert values == ["o0", "o1", "o2", "o3", "o4"]
    assert done.positions == [(0, n) for n in range(5)]


def test_a_second_request_while_the_first_holds_the_key_is_refused(
    service: PublishService,
) -> None:
    key = "orders\0alice\0k"
    assert service.idempotency.claim(key, 60)
    with pytest.raises(IdempotencyInProgress):
        service.publish(ALICE, "orders", [rec(0)], idempotency_key="k", request_id="r")


def test_when_the_dead_letter_copy_fails_the_refusal_is_not_answered(
    service: PublishService, sink: FakeRecordSink
) -> None:
    sink.fail_after = 0
    with pytest.raises(BrokerUnavailable, match="could not be copied"):
        service.publish(ALICE, "orders", [rec(0, "x")], idempotency_key="k", request_id="r")
    with pytest.raises(RecordsInvalid):  # the retry, once the DLQ takes writes
        service.publish(ALICE, "orders", [rec(0, "x")], idempotency_key="k", request_id="r")
    assert len(sink.topics["orders.dlq"]) == 1
