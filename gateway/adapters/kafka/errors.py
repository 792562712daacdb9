"""librdkafka errors translated once, at the boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import KafkaError, KafkaException

from gateway.errors import BrokerUnavailable


@contextmanager
def map_kafka_errors(action: str) -> Iterator[None]:
    """Raise ``BrokerUnavailable`` (with the Kafka error's name) for any librdkafka failure."""
    try:
        yield
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        name = err.name() if isinstance(err, KafkaError) else type(exc).__name__
        raise BrokerUnavailable(f"Kafka could not {action} ({name})") from None
