"""Topic administration and a small producer, for the demo and tests (not the record path)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from gateway.adapters.kafka.errors import map_kafka_errors
from gateway.errors import BrokerUnavailable


def create_topic(
    config: Mapping[str, Any],
    name: str,
    partitions: int = 1,
    *,
    topic_config: Mapping[str, str] | None = None,
    replication_factor: int = 1,
) -> None:
    """Create ``name`` unless it exists."""
    admin = AdminClient(dict(config))
    topic = NewTopic(
        name, partitions, replication_factor=replication_factor, config=dict(topic_config or {})
    )
    with map_kafka_errors("create a topic"):
        futures = admin.create_topics([topic], request_timeout=10)
        for future in futures.values():
            try:
                future.result(timeout=15)
            except TimeoutError:
                raise BrokerUnavailable(f"Kafka did not create topic {name!r} in time") from None
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise


def produce(
    config: Mapping[str, Any],
    topic: str,
    records: Iterable[tuple[bytes | str | None, bytes]],
    *,
    partition: int | None = None,
    producer_config: Mapping[str, Any] | None = None,
) -> None:
    """Produce ``(key, value)`` pairs and wait until every one is acknowledged."""
    producer = Producer({**config, "enable.idempotence": True, **(producer_config or {})})
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for key, value in records:
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(30)
    if remaining or failures:
        raise RuntimeError(f"{remaining} records unacknowledged, failures: {failures[:3]}")
