"""The one producer: idempotent, ``acks=all``, and never a ``BufferError`` for a full queue.

Every produce in the project goes through ``GuardedProducer``: the ledger writer, topic
fixtures and the demo's orders, and the partner client's Kafka sink. librdkafka's local queue
filling up is back-pressure, not an error: ``produce`` serves delivery reports until there is
room. Errors librdkafka raises are translated once, by ``map_kafka_errors``; a fatal error
(the idempotent producer can no longer guarantee order or exactly-once writes) is kept in
``fatal`` so the owner can stop using this producer and build a new one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import AdminClient

from gateway.adapters.kafka.errors import map_kafka_errors

#: ``on_delivery(error, partition, offset)``: ``error`` is ``None`` or the Kafka error's name.
DeliveryCallback = Callable[[str | None, int | None, int | None], None]
Headers = Sequence[tuple[str, bytes | str | None]]

log = logging.getLogger(__name__)

#: What a broker answers for a topic's id when it keeps none.
_NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"

#: How long ``produce`` serves delivery reports at a time while the local queue is full.
QUEUE_FULL_POLL_SECONDS = 0.1


class _Fatal:
    """librdkafka's error callback. Kept apart from the producer that owns it: a callback bound
    to its owner would make a reference cycle through the C object, which the garbage collector
    cannot see, and the producer (with its threads and connections) would never be freed."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self, err: KafkaError) -> None:
        if err.fatal():
            self.reason = f"{err.name()}: {err.str()}"


class GuardedProducer:
    def __init__(self, config: Mapping[str, Any], **overrides: Any) -> None:
        self._fatal = _Fatal()
        settings = {**config, "enable.idempotence": True, "acks": "all", **overrides}
        settings["error_cb"] = self._fatal
        with map_kafka_errors("create a producer"):
            self._producer = Producer(settings)
        self._config = {k: v for k, v in config.items() if k != "error_cb"}
        self._admin: AdminClient | None = None

    @property
    def fatal(self) -> str | None:
        """Why this producer must be replaced (a fatal librdkafka error), or ``None``."""
        return self._fatal.reason

    def produce(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | str | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        on_delivery: DeliveryCallback | None = None,
        give_up: Callable[[], bool] | None = None,
    ) -> None:
        """Queue one record; waits while librdkafka's queue is full (``BufferError`` if
        ``give_up`` says to stop waiting)."""
        kwargs: dict[str, Any] = {"key": key, "value": value}
        if headers:
            kwargs["headers"] = list(headers)
        if partition is not None:
            kwargs["partition"] = partition
        if on_delivery is not None:
            kwargs["on_delivery"] = _report(on_delivery)
        with map_kafka_errors("produce a record"):
            self._queue(topic, kwargs, give_up)
            self._producer.poll(0)

    def _queue(
        self, topic: str, kwargs: dict[str, Any], give_up: Callable[[], bool] | None = None
    ) -> None:
        """Queue one record, serving delivery reports while the local queue is full."""
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                return
            except BufferError:
                if give_up is not None and give_up():
                    raise
                self._producer.poll(QUEUE_FULL_POLL_SECONDS)

    def produce_batch(
        self,
        topic: str,
        records: Sequence[tuple[str | None, bytes, dict[str, str]]],
        on_delivery: Callable[[int], DeliveryCallback],
    ) -> None:
        """Queue ``records`` in order (``on_delivery(i)`` reports record ``i``), waiting while
        the local queue is full; delivery reports are left to a thread that polls. One error
        translation for the batch: per record, this path is the C call and little else."""
        with map_kafka_errors("produce a record"):
            for index, (key, value, headers) in enumerate(records):
                kwargs: dict[str, Any] = {"key": key, "value": value}
                kwargs["on_delivery"] = _report(on_delivery(index))
                if headers:
                    kwargs["headers"] = headers
                self._queue(topic, kwargs)

    #: Whether a broker answered the last ``unreachable`` (whatever it said of the topic).
    answered = False

    def unreachable(self, topic: str, timeout: float) -> str | None:
        """Why ``topic`` cannot be written to now (no broker answers, the topic is gone), or
        ``None``: a metadata request, answered within ``timeout`` seconds or not at all."""
        try:
            metadata = self._producer.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            self.answered = False
            err = exc.args[0] if exc.args else None
            return f"Kafka cannot be reached ({err.name() if isinstance(err, KafkaError) else exc})"
        self.answered = True
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            return f"the topic {topic!r} does not exist"
        return None

    def topic_id(self, topic: str, timeout: float) -> str | None:
        """The id Kafka gave ``topic`` when it was created (a topic deleted and created again
        has a new one), or ``None`` when the broker does not say (before Kafka 2.8) or does not
        answer within ``timeout`` seconds."""
        if self._admin is None:
            self._admin = AdminClient(self._config)
        try:
            future = self._admin.describe_topics(TopicCollection([topic]), request_timeout=timeout)[
                topic
            ]
            found = str(future.result(timeout=timeout + 1).topic_id)
        except (KafkaException, TimeoutError, ValueError) as exc:
            log.debug("kafka: no id for topic %s: %s", topic, exc)
            return None
        return None if found in ("", "None", _NO_TOPIC_ID) else found

    def poll(self, timeout: float = 0) -> int:
        """Serve delivery reports for up to ``timeout`` seconds; how many were served."""
        with map_kafka_errors("poll a producer"):
            served: int = self._producer.poll(timeout)
        return served

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every queued record; how many are still queued."""
        with map_kafka_errors("flush a producer"):
            remaining: int = self._producer.flush(timeout)
        return remaining


def _report(on_delivery: DeliveryCallback) -> Callable[[KafkaError | None, Any], None]:
    def delivered(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            on_delivery(err.name(), None, None)
        else:
            on_delivery(None, msg.partition(), msg.offset())

    return delivered


def produce(
    config: Mapping[str, Any],
    topic: str,
    records: Iterable[tuple[bytes | str | None, bytes]],
    *,
    partition: int | None = None,
    producer_config: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> None:
    """Produce ``(key, value)`` pairs and wait until every one is acknowledged."""
    producer = GuardedProducer(config, **(producer_config or {}))
    failures: list[str] = []

    def delivered(error: str | None, _partition: int | None, _offset: int | None) -> None:
        if error is not None:
            failures.append(error)

    for key, value in records:
        producer.produce(topic, value, key=key, partition=partition, on_delivery=delivered)
    remaining = producer.flush(timeout)
    if remaining or failures:
        raise RuntimeError(f"{remaining} records unacknowledged, failures: {failures[:3]}")
