"""How a stream's consumer turns what librdkafka hands back into records or an ending."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, Message

from gateway.adapters.kafka.source import STREAM_CONSUMER_DEFAULTS, records_of
from gateway.errors import BrokerUnavailable, CursorOutOfRange


def record(offset: int) -> Message:
    return Message(topic="orders", partition=1, offset=offset, value=b"{}")


def failure(code: int, *, fatal: bool = False) -> Message:
    return Message(topic="orders", partition=1, error=KafkaError(code, fatal=fatal))


def test_a_position_the_broker_lost_is_never_skipped_silently() -> None:
    """With ``auto.offset.reset: error`` librdkafka reports the lost position instead of
    jumping to the oldest record; the stream ends and the resumption says what was lost."""
    assert STREAM_CONSUMER_DEFAULTS["auto.offset.reset"] == "error"
    for code in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
        with pytest.raises(CursorOutOfRange, match="partition 1"):
            records_of([record(3), failure(code)], "orders")


@pytest.mark.parametrize("code", [KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.UNKNOWN_TOPIC_ID])
def test_a_deleted_topic_is_product_unavailable(code: int) -> None:
    with pytest.raises(BrokerUnavailable) as ended:
        records_of([failure(code)], "orders")
    assert ended.value.code == "product_unavailable"


def test_a_fatal_error_ends_the_stream_and_a_transient_one_is_retried_by_librdkafka() -> None:
    with pytest.raises(BrokerUnavailable, match="fetch failed"):
        records_of([failure(KafkaError._FATAL, fatal=True)], "orders")
    transient = records_of([record(3), failure(KafkaError._TRANSPORT), record(4)], "orders")
    assert [m.offset() for m in transient] == [3, 4]
