"""Topic administration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
