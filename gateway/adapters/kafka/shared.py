"""Shared reading: one consumer per topic in the process feeds every stream near the tail.

``SharedReaders.source(topic)`` gives each stream or pull a ``SharedSource``. While the
stream's position is inside the topic's *window* (what the shared ``TopicReader`` has read
lately, bounded in bytes), it reads from there and waits on the reader, not on Kafka: no
consumer, thread or broker connection of its own. A stream behind the window (it starts in
history, or fell behind because its client is slow) borrows a consumer from a bounded pool of
catch-up readers, queueing first come, first served while all are busy, and gives it back once
it reaches the window. A slow stream never holds the reader back: the window moves on without
it. Metadata calls (partitions, watermarks, offsets by time) of every stream go through one
consumer of the process that is never assigned anything.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from datetime import datetime
from typing import Any

import anyio
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from gateway.adapters.kafka.errors import map_kafka_errors
from gateway.adapters.kafka.source import (
    STREAM_CONSUMER_DEFAULTS,
    KafkaRecordSource,
    ValueDecoder,
    records_of,
)
from gateway.errors import BrokerUnavailable

log = logging.getLogger(__name__)

#: How often a topic's reader looks for partitions added to its topic.
PARTITION_REFRESH_SECONDS = 5.0
#: A stream waiting for a catch-up consumer looks up from the queue this often (a wake-up does
#: not reach it there), to re-check its contract.
POOL_WAIT_SECONDS = 0.25
#: The shortest time between two wake-ups of a topic's streams.
COALESCE_SECONDS = 0.02


def _offset(message: Message) -> int:
    offset = message.offset()
    return -1 if offset is None else offset


def _partition(message: Message) -> int:
    partition = message.partition()
    return -1 if partition is None else partition


def _size(message: Message) -> int:
    """What a held record counts against the window's budget (its bytes, and some overhead)."""
    return len(message.value() or b"") + len(message.key() or b"") + 64


class _Window:
    """One partition's recent records: every record from ``covered_from`` up to ``next``."""

    __slots__ = (
        "bytes", "covered_from", "from_beginning", "next", "offsets", "published", "records",
    )  # fmt: skip

    def __init__(self, start: int, *, from_beginning: bool) -> None:
        self.offsets: list[int] = []
        self.records: list[Message] = []
        self.bytes = 0
        self.covered_from = start
        self.next = start
        #: Streams see the records before this offset: published at each wake-up, and between
        #: wake-ups at most every ``COALESCE_SECONDS``, so that the streams served together
        #: read the same slice (and share its encoding).
        self.published = start
        #: The reader started this partition at its beginning (it was added to the topic while
        #: the reader ran), so a stream that has no position in it yet may read it from here.
        self.from_beginning = from_beginning

    def add(self, message: Message) -> None:
        offset = _offset(message)
        if offset < self.next:  # already held (never expected from one consumer)
            return
        self.offsets.append(offset)
        self.records.append(message)
        self.bytes += _size(message)
        self.next = offset + 1

    def trim(self, budget: int) -> None:
        """Forget the oldest records until at most ``budget`` bytes are held."""
        if self.bytes <= budget:
            return
        target, dropped, cut = budget * 3 // 4, 0, 0
        while cut < len(self.records) and self.bytes - dropped > target:
            dropped += _size(self.records[cut])
            cut += 1
        self.covered_from = self.offsets[cut - 1] + 1
        del self.offsets[:cut]
        del self.records[:cut]
        self.bytes -= dropped

    def take(self, position: int, limit: int) -> list[Message]:
        if position >= self.published:
            return []
        start = bisect.bisect_left(self.offsets, position)
        end = bisect.bisect_left(self.offsets, self.published, lo=start)
        return self.records[start : min(end, start + limit)]


class _Signal:
    """Wakes every stream waiting on a topic; fired from the reader's thread.

    Wake-ups are at most ``COALESCE_SECONDS`` apart: at a high record rate a thousand streams
    each woken for every record would spend the process on waking, while woken together they
    read the same slice, encoded once. ``publish`` runs on the event loop just before the
    streams wake (it makes the new records visible to them). Streams wake in the order they
    began to wait: one served early in a round of wake-ups is early in the next, so each waits
    about a round between its turns (in another order, anywhere from none to two).

    A stream waits on a future of its own, with its ``Alarm`` for its timeout: an idle stream
    wakes for its heartbeat by that timer (a cancel scope's timeout, which it had been,
    delivered a cancellation each time and cost several times the heartbeat's write)."""

    def __init__(self, publish: Callable[[], None]) -> None:
        self._publish = publish
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[asyncio.Future[None], None] = {}
        self._last = 0.0
        self._scheduled = False

    def waiter(self) -> asyncio.Future[None]:
        """A future the next wake-up resolves (called on the event loop, before looking for
        records, so that no wake-up is missed). ``wait`` or ``forget`` it."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._publish()  # what arrived before anyone waited (its wake-up reached no loop)
        future = self._loop.create_future()
        self._waiters[future] = None
        return future

    async def wait(self, waiter: asyncio.Future[None], timeout: float, alarm: Alarm) -> None:
        """Until the next wake-up or ``timeout`` seconds (by the waiting stream's ``alarm``,
        which may ring sooner), whichever comes first."""
        alarm.set(waiter, timeout)
        try:
            await waiter
        finally:
            alarm.waiter = None
            self._waiters.pop(waiter, None)

    def forget(self, waiter: asyncio.Future[None]) -> None:
        self._waiters.pop(waiter, None)

    def fire(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._due)

    def _due(self) -> None:
        if self._scheduled or self._loop is None:
            return
        wait = self._last + COALESCE_SECONDS - self._loop.time()
        if wait <= 0:
            self._swap()
        else:
            self._scheduled = True
            self._loop.call_later(wait, self._swap)

    def _swap(self) -> None:
        self._scheduled = False
        if self._loop is not None:
            self._last = self._loop.time()
        self._publish()
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters:
            _resolve(waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Alarm:
    """One stream's timeout across its waits: one timer, moved only when a wait must end
    sooner than it rings. A stream woken ten times a second by new records waits each time
    until its next heartbeat (15 s on): a timer made and cancelled per wait was a tenth of
    its wake-up's cost. Rung early (the stream's last wait ended later), a wait ends without
    records, and the stream waits again."""

    __slots__ = ("_at", "_handle", "waiter")

    def __init__(self) -> None:
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0
        #: The wait the alarm ends (``None`` between waits).
        self.waiter: asyncio.Future[None] | None = None

    def set(self, waiter: asyncio.Future[None], timeout: float) -> None:
        loop = waiter.get_loop()
        at = loop.time() + timeout
        if self._handle is None or self._at > at:
            if self._handle is not None:
                self._handle.cancel()
            self._handle, self._at = loop.call_at(at, self._ring), at
        self.waiter = waiter

    def _ring(self) -> None:
        self._handle = None
        if self.waiter is not None:
            _resolve(self.waiter)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class TopicReader:
    """The process's one consumer of ``topic``, from its end on, in a thread of its own."""

    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str,
        window_bytes: int,
        decode: ValueDecoder | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic = topic
        self._decode = decode
        self._config = {**STREAM_CONSUMER_DEFAULTS, **config}
        self._window_bytes = window_bytes
        self.windows: dict[int, _Window] = {}
        self.lock = threading.Lock()
        self.signal = _Signal(self._publish)
        #: Why the reader stopped (its topic is gone, Kafka failed fatally), or ``None``.
        self.failure: BrokerUnavailable | None = None
        self._monotonic = monotonic
        #: When the windows' records were last made visible to the streams.
        self._published_at = -math.inf
        self._stopping = threading.Event()
        with map_kafka_errors("create a consumer"):
            self._consumer = Consumer(self._config)
        self._thread = threading.Thread(target=self._run, name=f"reader:{topic}", daemon=True)

    def _publish(self) -> None:
        with self.lock:
            self._publish_held()

    def _publish_held(self) -> None:
        self._published_at = self._monotonic()
        for window in self.windows.values():
            window.published = window.next

    def publish_due(self) -> None:
        """Under ``lock``, by a stream about to read the windows: make what is held visible
        if ``COALESCE_SECONDS`` have passed since it last was. Streams served together read one
        slice (encoded once), but a round of a thousand wake-ups takes a hundred milliseconds
        or more: a stream served late in it reads what came meanwhile, instead of waiting for
        the round to end and its turn in the next."""
        if self._monotonic() - self._published_at >= COALESCE_SECONDS:
            self._publish_held()

    def start(self, ends: Mapping[int, int]) -> None:
        """Read every partition from ``ends`` (their log ends now) on."""
        with self.lock:
            for partition, end in ends.items():
                self.windows[partition] = _Window(end, from_beginning=False)
        with map_kafka_errors("assign partitions"):
            self._consumer.assign([TopicPartition(self.topic, p, o) for p, o in ends.items()])
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with suppress(RuntimeError):
            self._consumer.close()

    def _run(self) -> None:
        refreshed = time.monotonic()
        while not self._stopping.is_set():
            try:
                # The first record as soon as it comes, then what is already there: a batch
                # call with a timeout waits for its count or the timeout (100 ms at a low rate).
                first = self._consumer.poll(0.1)
                if first is not None:
                    self._hold([first, *self._consumer.consume(num_messages=999, timeout=0)])
                if time.monotonic() - refreshed >= PARTITION_REFRESH_SECONDS:
                    refreshed = time.monotonic()
                    self._add_new_partitions()
            except BrokerUnavailable as exc:
                log.warning("shared reader of %s stops: %s", self.topic, exc.detail)
                self.failure = exc
                self.signal.fire()
                return
            except Exception:  # a defect: say so, and let the streams end rather than hang
                log.exception("shared reader of %s failed", self.topic)
                self.failure = BrokerUnavailable("the shared reader of the topic failed")
                self.signal.fire()
                return

    def _hold(self, messages: Sequence[Message]) -> None:
        lost: list[Message] = []
        rest: list[Message] = []
        for message in messages:
            error = message.error()
            (lost if error is not None and _position_lost(error) else rest).append(message)
        records = records_of(rest, self.topic, self._decode)
        with self.lock:
            for message in records:
                window = self.windows.get(_partition(message))
                if window is not None:
                    window.add(message)
            budget = self._window_bytes // max(1, len(self.windows))
            for window in self.windows.values():
                window.trim(budget)
        for message in lost:  # retention outran the reader: go on from what is kept
            self._restart(_partition(message))
        self.signal.fire()

    def _restart(self, partition: int) -> None:
        with map_kafka_errors("read watermark offsets"):
            low, _ = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=5
            )
        log.warning("shared reader of %s: partition %d restarts at %d", self.topic, partition, low)
        with self.lock:
            self.windows[partition] = _Window(low, from_beginning=False)
        with map_kafka_errors("seek"):
            self._consumer.seek(TopicPartition(self.topic, partition, low))

    def _add_new_partitions(self) -> None:
        with map_kafka_errors("read topic metadata"):
            metadata = self._consumer.list_topics(self.topic, timeout=5)
        described = metadata.topics.get(self.topic)
        if described is None or described.error is not None:
            return
        new = sorted(set(described.partitions) - set(self.windows))
        if not new:
            return
        log.info("shared reader of %s: partitions %s added", self.topic, new)
        with self.lock:
            for partition in new:
                self.windows[partition] = _Window(0, from_beginning=True)
        with map_kafka_errors("assign partitions"):
            self._consumer.incremental_assign(
                [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in new]
            )


def _position_lost(error: KafkaError) -> bool:
    return error.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE)


class SharedReaders:
    """The topic readers of this process, its catch-up pool and its metadata consumer."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        window_bytes: int,
        catch_up_readers: int,
        decoders: Callable[[str], ValueDecoder | None] = lambda topic: None,
    ) -> None:
        self._config = dict(config)
        #: The decoder of a topic's values (products in Avro), or ``None`` (JSON).
        self._decoders = decoders
        self._window_bytes = window_bytes
        self._catch_up_readers = catch_up_readers
        self._pool: anyio.Semaphore | None = None
        self._readers: dict[str, TopicReader] = {}
        self._lock = threading.RLock()
        self._metadata: Consumer | None = None

    def source(self, topic: str) -> SharedSource:
        """A new stream's source on ``topic`` (blocking: may start the topic's reader)."""
        return SharedSource(self, topic)

    def metadata(self, topic: str) -> KafkaRecordSource:
        with self._lock:
            if self._metadata is None:
                with map_kafka_errors("create a consumer"):
                    self._metadata = Consumer({**STREAM_CONSUMER_DEFAULTS, **self._config})
        return KafkaRecordSource(self._config, topic, consumer=self._metadata)

    def reader(self, topic: str) -> TopicReader:
        """The topic's reader, started at the log end if there is none (or it failed)."""
        with self._lock:
            reader = self._readers.get(topic)
            if reader is not None and reader.failure is None:
                return reader
            metadata = self.metadata(topic)
            reader = TopicReader(self._config, topic, self._window_bytes, self._decoders(topic))
            reader.start(metadata.latest(metadata.partitions()))
            old, self._readers[topic] = self._readers.get(topic), reader
        if old is not None:
            old.stop()
        return reader

    def pool(self) -> anyio.Semaphore:
        if self._pool is None:  # created on the event loop, at first use
            self._pool = anyio.Semaphore(self._catch_up_readers)
        return self._pool

    def private(self, topic: str) -> KafkaRecordSource:
        return KafkaRecordSource(self._config, topic, decode=self._decoders(topic))

    def close(self) -> None:
        with self._lock:
            readers, self._readers = list(self._readers.values()), {}
            metadata, self._metadata = self._metadata, None
        for reader in readers:
            reader.stop()
        if metadata is not None:
            with suppress(RuntimeError):
                metadata.close()

    def wake(self) -> None:
        """Wake every stream waiting on a reader (it re-checks its contract and the ledger)."""
        with self._lock:
            readers = list(self._readers.values())
        for reader in readers:
            reader.signal.fire()

    def stats(self) -> dict[str, int]:
        """Topic readers running, the partitions they read, and catch-up readers lent now."""
        pool = self._pool
        with self._lock:
            readers = list(self._readers.values())
        return {
            "topic_readers": len(readers),
            "partitions_read": sum(len(r.windows) for r in readers),
            "catch_up_readers": 0 if pool is None else self._catch_up_readers - pool.value,
        }


class SharedSource:
    """A stream's ``RecordSource``: the topic's window, or a borrowed catch-up consumer."""

    def __init__(self, readers: SharedReaders, topic: str) -> None:
        self.topic = topic
        self._readers = readers
        self._reader = readers.reader(topic)
        self._metadata = readers.metadata(topic)
        self._positions: dict[int, int] = {}
        self._private: KafkaRecordSource | None = None
        self._holding_slot = False
        #: The last fetch read the topic's window (other streams read the same records).
        self.shared = True
        self._alarm = Alarm()

    # Positioning: metadata calls through the process's metadata consumer (blocking).

    def partitions(self) -> list[int]:
        return self._metadata.partitions()

    def latest(self, partitions: Sequence[int]) -> dict[int, int]:
        return self._metadata.latest(partitions)

    def bounds(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        return self._metadata.bounds(partitions)

    def at_time(self, partitions: Sequence[int], moment: datetime) -> dict[int, int]:
        return self._metadata.at_time(partitions, moment)

    def has_unread(self, positions: dict[int, int]) -> bool:
        return self._metadata.has_unread(positions)

    def assign(self, positions: Mapping[int, int]) -> None:
        self._positions = dict(positions)

    # Reading.

    async def fetch(self, max_records: int, timeout: float) -> list[Message]:
        self.shared = self._private is None
        if self._private is None:
            signal = self._reader.signal
            waiter = signal.waiter()  # taken before looking: no wake-up is missed
            try:
                taken = self._from_window(max_records)
            except BaseException:
                signal.forget(waiter)
                raise
            if taken is None:  # behind the window: catch up on a consumer of its own
                signal.forget(waiter)
                self.shared = False
                return await self._catch_up(max_records, timeout)
            if taken:
                signal.forget(waiter)
                return taken
            await signal.wait(waiter, timeout, self._alarm)
            return self._from_window(max_records) or []
        return await self._catch_up(max_records, timeout)

    def _from_window(self, limit: int) -> list[Message] | None:
        """Records after the stream's positions, or ``None`` when some partition's position is
        behind what the window holds (or the reader failed)."""
        reader = self._reader
        if reader.failure is not None:
            raise reader.failure
        taken: list[Message] = []
        moved: dict[int, int] = {}  # the new positions, kept only if every partition is held
        with reader.lock:
            reader.publish_due()
            for partition, window in reader.windows.items():
                position = self._positions.get(partition)
                if position is None or position < 0:
                    if not window.from_beginning or window.covered_from > 0:
                        return None  # unknown here, and the window does not start at 0
                    position = moved[partition] = 0
                if position < window.covered_from:
                    return None
                if len(taken) < limit:
                    more = window.take(position, limit - len(taken))
                    if more:
                        moved[partition] = _offset(more[-1]) + 1
                        taken.extend(more)
        self._positions.update(moved)
        return taken

    def _joined(self) -> bool:
        """Whether every position is inside the window now (the consumer can be given back)."""
        reader = self._reader
        with reader.lock:
            for partition, window in reader.windows.items():
                position = self._positions.get(partition, -1)
                if position < window.covered_from:
                    return False
        return True

    async def _catch_up(self, max_records: int, timeout: float) -> list[Message]:
        if self._private is None:
            with anyio.move_on_after(min(timeout, POOL_WAIT_SECONDS)):
                await self._readers.pool().acquire()
                self._holding_slot = True
            if not self._holding_slot:
                return []  # every catch-up reader is busy: the stream waits its turn
            try:
                # Shielded: a consumer made while the stream is cancelled would be lost unclosed.
                with anyio.CancelScope(shield=True):
                    private = await anyio.to_thread.run_sync(self._start_private)
                self._private = private
            except BaseException:
                self._release()
                raise
        private = self._private
        records = await private.fetch(max_records, timeout)
        for record in records:
            self._positions[_partition(record)] = _offset(record) + 1
        if self._joined():
            self._private = None
            await private.close()
            self._release()
        return records

    def _start_private(self) -> KafkaRecordSource:
        # "From the beginning" becomes the oldest offset kept, so that a partition with nothing
        # to read has a position to compare with the window's.
        unplaced = [p for p, o in self._positions.items() if o < 0]
        if unplaced:
            for partition, (oldest, _) in self._metadata.bounds(unplaced).items():
                self._positions[partition] = oldest
        private = self._readers.private(self.topic)
        try:
            private.assign(self._positions)
        except BaseException:
            private.close_now()
            raise
        return private

    def _release(self) -> None:
        if self._holding_slot:
            self._holding_slot = False
            self._readers.pool().release()

    async def close(self) -> None:
        self._alarm.cancel()
        private, self._private = self._private, None
        if private is not None:
            await private.close()
        self._release()
