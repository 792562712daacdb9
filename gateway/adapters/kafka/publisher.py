"""Writing published records to Kafka: one idempotent ``acks=all`` producer per process.

A thread serves the producer's delivery reports; ``write`` queues a batch and waits until
Kafka has acknowledged or refused every record of it (or ``message.timeout.ms`` passed), and
answers per record: ``(partition, offset)`` or the Kafka error's name. Callers in several
threads share the producer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.adapters.kafka.admin import create_topic
from gateway.adapters.kafka.producer import GuardedProducer
from gateway.errors import BrokerUnavailable
from gateway.services.publishing import Outcome, OutgoingRecord
from gateway.tracing import tracer

log = logging.getLogger(__name__)

#: Delivery errors after which the idempotent producer cannot go on (its epoch is fenced, or
#: the broker lost its sequence): librdkafka reports them per record, not always as fatal.
PRODUCER_ENDING = frozenset(
    {"PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH", "_FATAL", "OUT_OF_ORDER_SEQUENCE_NUMBER"}
)


class _Batch:
    def __init__(self, size: int) -> None:
        self.outcomes: list[Outcome | None] = [None] * size
        self.left = size
        self.done = threading.Event()
        if size == 0:  # nothing to wait for
            self.done.set()
        self._lock = threading.Lock()

    def report(self, index: int) -> Any:
        def delivered(error: str | None, partition: int | None, offset: int | None) -> None:
            outcome: Outcome = error or (int(partition or 0), int(offset or 0))
            with self._lock:
                self.outcomes[index] = outcome
                self.left -= 1
                if self.left == 0:
                    self.done.set()

        return delivered


class KafkaPublisher:
    """Starts its producer (and the thread serving it) at the first write: a gateway whose
    teams publish nothing holds no producer, thread or broker connection for it."""

    def __init__(self, config: Mapping[str, Any], *, delivery_timeout: float) -> None:
        self._config = dict(config)
        self._timeout = delivery_timeout
        self._producer: GuardedProducer | None = None
        self._swap = threading.Lock()
        self._topics: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="publisher", daemon=True)

    def _new_producer(self) -> GuardedProducer:
        overrides = {"message.timeout.ms": int(self._timeout * 1000), "linger.ms": 5}
        return GuardedProducer(self._config, **overrides)

    def _replace_if_fatal(self, producer: GuardedProducer, outcomes: list[Outcome]) -> None:
        """A fatal error (fenced, or the idempotence guarantee lost) ends a producer for good:
        the next batch goes through a new one (its records were answered as not written)."""
        ended = [o for o in outcomes if isinstance(o, str) and o in PRODUCER_ENDING]
        reason = producer.fatal or (ended[0] if ended else None)
        if reason is None:
            return
        with self._swap:
            if self._producer is producer:
                log.error("publisher: the producer failed (%s); starting a new one", reason)
                self._producer = self._new_producer()

    def _serve(self) -> None:
        while not self._stop.is_set() and (producer := self._producer) is not None:
            producer.poll(0.05)

    def _open(self) -> GuardedProducer:
        with self._swap:
            if self._stop.is_set():
                raise BrokerUnavailable("the gateway is shutting down; publish again")
            if self._producer is None:
                self._producer = self._new_producer()
                self._thread.start()
            return self._producer

    def write(self, topic: str, records: Sequence[OutgoingRecord]) -> list[Outcome]:
        """Produce ``records`` in order; every one's outcome (blocking)."""
        producer = self._open()
        batch = _Batch(len(records))
        attributes: dict[str, str | int] = {
            "messaging.destination.name": topic,
            "messaging.batch.message_count": len(records),
        }
        with tracer.start_as_current_span("kafka produce", attributes=attributes):
            producer.produce_batch(topic, records, batch.report)  # the thread serves reports
            # librdkafka reports every record by message.timeout.ms; the margin covers that.
            if not batch.done.wait(self._timeout + 5):
                log.error("publisher: %d deliveries unreported after the timeout", batch.left)
        outcomes = [o if o is not None else "_TIMED_OUT" for o in batch.outcomes]
        self._replace_if_fatal(producer, outcomes)
        return outcomes

    def ensure_topic(self, topic: str, partitions: int = 1) -> None:
        """Create ``topic`` unless this process did, or found it, before (dead-letter topics)."""
        if topic not in self._topics:
            create_topic(self._config, topic, partitions)
            self._topics.add(topic)

    def close(self) -> None:
        with self._swap:
            self._stop.set()
            producer, self._producer = self._producer, None
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if producer is not None:
            remaining = producer.flush(self._timeout)
            if remaining:
                log.error("publisher: %d records unacknowledged at shutdown", remaining)
        # Dropped here rather than when the gateway is collected: a producer left to the
        # garbage collector keeps its threads and keeps reconnecting to the broker meanwhile.
