"""The publisher's own edges (its Kafka path is tested end to end in tests/test_publishing.py)."""

from __future__ import annotations

import time

from gateway.adapters.kafka.publisher import KafkaPublisher


def test_an_empty_batch_is_answered_at_once() -> None:
    publisher = KafkaPublisher({"bootstrap.servers": "127.0.0.1:9"}, delivery_timeout=5)
    try:
        started = time.monotonic()
        assert publisher.write("t", []) == []
        assert time.monotonic() - started < 1
    finally:
        publisher.close()
