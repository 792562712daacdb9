"""Reading a product's topic for one stream with a confluent-kafka consumer.

Every method here blocks (librdkafka calls); the streaming service runs them in a worker thread.
The consumer never joins a group or commits: positions live in the partner's cursor, and the
partitions are assigned explicitly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from datetime import datetime
from typing import Any

import anyio
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from gateway.adapters.kafka.errors import map_kafka_errors
from gateway.errors import BrokerUnavailable, CursorOutOfRange

log = logging.getLogger(__name__)

METADATA_TIMEOUT = 5.0
#: The longest a fetch waits in librdkafka.
POLL_SECONDS = 0.25

#: librdkafka consumer properties for streams (memory per stream is bounded by the queue size).
STREAM_CONSUMER_DEFAULTS: dict[str, Any] = {
    "group.id": "exchange-gateway",  # required by librdkafka; never joined, never committed
    # One client id for every stream, so a Kafka broker quota (consumer_byte_rate) can bound
    # what the gateway as a whole takes from the cluster next to the provider's own consumers.
    "client.id": "exchange-gateway",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
    # A position the broker no longer has (retention deleted it while the stream read, or the
    # topic was recreated) is an error, never a silent jump: the stream ends with
    # ``cursor_out_of_range`` and the partner's resumption says what was lost (or refuses).
    "auto.offset.reset": "error",
    "fetch.wait.max.ms": 100,
    "queued.max.messages.kbytes": 16384,
    "fetch.queue.backoff.ms": 10,
}


class KafkaRecordSource:
    """One stream's view of one topic, through a consumer of its own (or, for the metadata
    calls only, a ``consumer`` it borrows and never closes)."""

    #: Its records are read by one stream only.
    shared = False

    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str,
        *,
        consumer: Consumer | None = None,
        decode: ValueDecoder | None = None,
    ) -> None:
        self.topic = topic
        self._decode = decode
        self._owned = consumer is None
        if consumer is None:
            with map_kafka_errors("create a consumer"):
                consumer = Consumer({**STREAM_CONSUMER_DEFAULTS, **config})
        self._consumer = consumer
        self._limiter = anyio.CapacityLimiter(1)

    def partitions(self) -> list[int]:
        with map_kafka_errors("read topic metadata"):
            metadata = self._consumer.list_topics(self.topic, timeout=METADATA_TIMEOUT)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise BrokerUnavailable(
                "the product's topic is not available in Kafka", code="product_unavailable"
            )
        return sorted(topic.partitions)

    def _watermarks(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        with map_kafka_errors("read watermark offsets"):
            return {
                p: self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=METADATA_TIMEOUT
                )
                for p in partitions
            }

    def bounds(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Per partition, the oldest offset still kept (retention deleted what is before) and
        the log end."""
        return self._watermarks(partitions)

    def latest(self, partitions: Sequence[int]) -> dict[int, int]:
        """The log end of each partition: the offset the next produced record will get."""
        return {p: high for p, (_, high) in self._watermarks(partitions).items()}

    def has_unread(self, positions: Mapping[int, int]) -> bool:
        """Whether any partition holds records at or after ``positions``."""
        marks = self._watermarks(list(positions))
        return any(
            (low if positions[p] < 0 else positions[p]) < high for p, (low, high) in marks.items()
        )

    def at_time(self, partitions: Sequence[int], moment: datetime) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is at or after ``moment``."""
        millis = int(moment.timestamp() * 1000)
        query = [TopicPartition(self.topic, p, millis) for p in partitions]
        with map_kafka_errors("look up offsets by time"):
            found = self._consumer.offsets_for_times(query, timeout=METADATA_TIMEOUT)
        ends = None
        result: dict[int, int] = {}
        for tp in found:
            if tp.offset >= 0:
                result[tp.partition] = tp.offset
            else:  # no record at or after the moment yet: start at the end
                ends = ends or self.latest(partitions)
                result[tp.partition] = ends[tp.partition]
        return result

    def assign(self, positions: Mapping[int, int]) -> None:
        assignment = [
            TopicPartition(self.topic, p, OFFSET_BEGINNING if o < 0 else o)
            for p, o in sorted(positions.items())
        ]
        with map_kafka_errors("assign partitions"):
            self._consumer.assign(assignment)

    def fetch_now(self, max_records: int, timeout: float) -> list[Message]:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds for the first
        (blocking)."""
        with map_kafka_errors("fetch records"):
            # The first record as soon as it comes, then what is already there: a batch call
            # with a timeout waits for its full count (or the timeout) before it answers.
            first = self._consumer.poll(timeout)
            if first is None:
                return []
            messages = [first]
            if max_records > 1:
                messages += self._consumer.consume(num_messages=max_records - 1, timeout=0)
        return records_of(messages, self.topic, self._decode)

    async def fetch(self, max_records: int, timeout: float) -> list[Message]:
        """A consumer waiting in librdkafka cannot be woken: it answers within
        ``POLL_SECONDS`` at most, so that the stream re-checks its contract."""
        return await anyio.to_thread.run_sync(
            self.fetch_now, max_records, min(timeout, POLL_SECONDS), limiter=self._limiter
        )

    def close_now(self) -> None:
        if self._owned:
            with suppress(RuntimeError):  # already closed
                self._consumer.close()

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.close_now, limiter=self._limiter)


#: Errors that mean the consumer's position is gone (with ``auto.offset.reset: error``).
_POSITION_LOST = frozenset({KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE})


class UndecodableValue(ValueError):
    """A value that is not a record of its schema; the message never quotes the value."""


#: A product's record values to the JSON partners receive (``schema_registry.AvroValues``):
#: ``UndecodableValue`` for a value that is not a record of its schema, ``BrokerUnavailable``
#: when its schema cannot be fetched now.
ValueDecoder = Callable[[bytes], bytes]

#: What an undecodable value becomes: not JSON, so the stream refuses the record (``event:
#: refused``, ``value_not_json_object``) exactly as a JSON product's malformed value.
UNDECODABLE = b"\x00undecodable"


def records_of(
    messages: Sequence[Message], topic: str, decode: ValueDecoder | None = None
) -> list[Message]:
    """The records among ``messages`` (values decoded by ``decode``, for products not in JSON);
    an error that ends the stream is raised."""
    records = []
    for message in messages:
        err = message.error()
        if err is None:
            if decode is not None:
                _decode_value(message, decode)
            records.append(message)
        elif err.code() in _POSITION_LOST:
            raise CursorOutOfRange(
                f"partition {message.partition()}: the stream's position is no longer in the "
                "topic (retention deleted it, or the topic was recreated); resume with the "
                "cursor to hear which records were lost"
            )
        elif err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.UNKNOWN_TOPIC_ID):
            raise BrokerUnavailable(
                "the product's topic is no longer available in Kafka", code="product_unavailable"
            )
        elif err.fatal():
            raise BrokerUnavailable(f"Kafka fetch failed ({err.name()})")
        else:  # transient: librdkafka retries on its own
            log.warning("kafka: transient fetch error on %s: %s", topic, err.name())
    return records


def _decode_value(message: Message, decode: ValueDecoder) -> None:
    value = message.value()
    if value is None:  # a tombstone stays one
        return
    try:
        message.set_value(decode(value))
    except UndecodableValue as exc:
        log.warning(
            "record %s[%s]@%s cannot be decoded: %s",
            message.topic(), message.partition(), message.offset(), exc,
        )  # fmt: skip
        message.set_value(UNDECODABLE)
