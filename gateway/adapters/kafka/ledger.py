"""The ledger in a Kafka topic: durable, replicated, reachable from every replica.

The topic is created with infinite retention if missing. Entries are produced by one background
thread per process (so recording never blocks the record path) with an idempotent producer,
keyed by chain so each chain stays in order on one partition. If entries cannot be written
(topic missing and not creatable, broker down past ``message.timeout.ms``, queue full),
``problem()`` says why and the gateway refuses new streams until writes succeed again.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from gateway.adapters.kafka.admin import create_topic
from gateway.adapters.kafka.producer import GuardedProducer
from gateway.core.ledger import Chain, timestamp
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

LEDGER_TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
_STOP = object()


class KafkaLedger:
    def __init__(self, config: Mapping[str, Any], topic: str, replica: str) -> None:
        self._config = dict(config)
        self.topic = topic
        self.chain = f"{replica}/{uuid.uuid4().hex[:12]}"
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=100_000)
        self._problem: str | None = "the ledger is starting"
        self._thread = threading.Thread(target=self._run, name="ledger", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def problem(self) -> str | None:
        """Why the ledger cannot be written now, or ``None`` when it can."""
        return self._problem

    def record(self, time: str, kind: str, details: Mapping[str, Any]) -> None:
        """Queue an entry; never blocks. A full queue marks the ledger unavailable."""
        try:
            self._queue.put_nowait((time, kind, dict(details)))
        except queue.Full:
            self._fail("the ledger queue is full: entries are not being written")

    def close(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _fail(self, problem: str) -> None:
        if self._problem != problem:
            log.error("ledger unavailable: %s", problem)
        self._problem = problem

    def _run(self) -> None:
        try:
            create_topic(self._config, self.topic, topic_config=LEDGER_TOPIC_CONFIG)
        except GatewayError as exc:
            self._fail(f"cannot create the ledger topic {self.topic!r}: {exc.detail}")
        producer = GuardedProducer(self._config, **{"linger.ms": 5, "message.timeout.ms": 10_000})
        chain = Chain(self.chain)
        pending = 0

        def delivered(error: str | None, _partition: int | None, _offset: int | None) -> None:
            nonlocal pending
            pending -= 1
            if error is not None:
                self._fail(f"an entry could not be written ({error})")
            elif self._problem is not None:
                log.info("ledger writes succeed again")
                self._problem = None

        # The first entry opens the chain: it proves writes work before any stream is allowed.
        work: list[Any] = [(timestamp(datetime.now(UTC)), "chain_started", {"topic": self.topic})]
        while True:
            for item in work:
                if item is _STOP:
                    producer.flush(10)
                    return
                time, kind, details = item
                entry = chain.append(time, kind, details)
                producer.produce(
                    self.topic, orjson.dumps(entry), key=self.chain, on_delivery=delivered
                )
                pending += 1
            producer.poll(0.05 if pending else 0)
            try:
                work = [self._queue.get(timeout=0.1)]
            except queue.Empty:
                work = []
                producer.poll(0)


class KafkaLedgerReader:
    """Reads the whole ledger topic back (``services.container.LedgerReader``)."""

    def __init__(self, config: Mapping[str, Any], topic: str) -> None:
        self._config = dict(config)
        self.topic = topic

    def entries(self) -> list[Mapping[str, Any]]:
        return list(read_entries(self._config, self.topic))


def read_entries(
    config: Mapping[str, Any], topic: str, idle: float = 1.0
) -> Iterator[dict[str, Any]]:
    """Every entry in the ledger topic, partition by partition, in the order written.

    Reads until every partition has reached its end offset and nothing more arrives within
    ``idle`` seconds (entries may still be appended while reading).
    """
    consumer = Consumer(
        {**config, "group.id": "exchange-gateway-ledger-reader", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            return
        partitions = sorted(described.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        by_partition: dict[int, list[dict[str, Any]]] = {p: [] for p in partitions}
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        positions = dict.fromkeys(partitions, 0)
        while True:
            messages = consumer.consume(num_messages=1000, timeout=idle)
            for message in messages:
                if message.error() is not None:
                    continue
                value = message.value()
                try:
                    entry = orjson.loads(value) if value is not None else None
                except orjson.JSONDecodeError:
                    entry = None
                partition, offset = message.partition() or 0, message.offset() or 0
                by_partition[partition].append(
                    entry if isinstance(entry, dict) else {"malformed": True}
                )
                positions[partition] = offset + 1
            if not messages and all(positions[p] >= ends[p] for p in partitions):
                break
        for p in partitions:
            yield from by_partition[p]
    finally:
        consumer.close()
