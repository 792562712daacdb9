"""The ledger in a Kafka topic: durable, replicated, reachable from every replica.

The topic is created (infinite retention) and checked by ``admin.check_topics`` before the writer
starts, or once Kafka answers if it did not then. Entries are produced by one background
thread per process (so recording never blocks the record path) with an idempotent producer,
keyed by chain so each chain stays in order on one partition. If entries cannot be written
(topic missing or refused by the check, broker down past ``message.timeout.ms``, queue full),
``problem()`` says why and the gateway refuses new streams until writes succeed again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from gateway.adapters.kafka.errors import map_kafka_errors
from gateway.adapters.kafka.producer import GuardedProducer
from gateway.core.ledger import CHECKPOINT, Chain, checkpoint_claims, timestamp
from gateway.tracing import tracer

log = logging.getLogger(__name__)

_STOP = object()
LEDGER_PRODUCER = {
    "linger.ms": 5,
    "message.timeout.ms": 10_000,
    # A deleted ledger topic must stay missing, and be noticed, not come back empty.
    "allow.auto.create.topics": False,
}
#: How often the writer asks Kafka for the ledger topic, and how long it waits for an answer.
PROBE_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 1.0
#: Entries the writer takes from its queue at a time.
BATCH_ENTRIES = 1000
#: Once an entry comes, the writer waits this long for more before it writes (as long as its
#: producer lingers): a thousand live streams record a thousand progress entries a second, one
#: by one, and a writer woken for each took the GIL from the event loop 2,000 times a second
#: (bench/fanout.py's live phase: the loop's thread then ran 81-83% of the time, 84-88% now).
GATHER_SECONDS = 0.005
#: An entry no chain could take this many times is dropped (and said): it cannot be written.
MAX_CHAINS_PER_ENTRY = 3


class KafkaLedger:
    """The ledger writer of this process: one background thread, one producer, one chain.

    Recording never stops on a bad entry or a failed producer. Details are made recordable
    (``core.ledger.recordable``); an entry that still cannot be appended is logged as the bug it
    is and the writer goes on. When an entry is not acknowledged (a fatal producer error, the
    broker gone past ``message.timeout.ms``) the producer is rebuilt and a new chain begins
    (``chain_started`` names the one it follows); every entry not acknowledged is written
    again, first, on it. Until writes succeed, ``problem()`` says why and nothing new may start.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str,
        replica: str,
        producer: Callable[[], GuardedProducer] | None = None,
        *,
        sign: Callable[[bytes], str] | None = None,
        checkpoint_seconds: float = 10.0,
        on_written: Callable[[float], None] = lambda seconds: None,
        on_failed: Callable[[], None] = lambda: None,
    ) -> None:
        self._config = dict(config)
        #: Told each acknowledgement's latency, and each entry that failed (metrics).
        self._on_written = on_written
        self._on_failed = on_failed
        #: Signs checkpoints (chain heads): at the chain's start, every ``checkpoint_seconds``
        #: (idle or not), and a final one at close.
        self._sign = sign
        self._checkpoint_seconds = checkpoint_seconds
        #: The last entry of the current chain Kafka acknowledged: ``(seq, hash)``.
        self._acknowledged: tuple[int, str] | None = None
        #: The signature of the newest checkpoint Kafka acknowledged (what anchors are given).
        self.latest_checkpoint: str | None = None
        self.topic = topic
        self._replica = replica
        self.chain = self._new_chain_id()
        self._producer_factory = producer or (
            lambda: GuardedProducer(self._config, **LEDGER_PRODUCER)
        )
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=100_000)
        self._problem: str | None = "the ledger is starting"
        #: Set by the probe while no broker answers or the topic is gone (cleared by it too).
        self._unreachable: str | None = None
        self._rebuild: str | None = None
        #: The ledger topic's id at the first probe, and why the chain cannot go on once the
        #: topic has another (it was deleted and created again).
        self._topic_id: str | None = None
        self._replaced: str | None = None
        self._overflowing = False
        self._stopping = False
        self._close_by = math.inf
        #: A check of the ledger topic still owed (Kafka did not answer the one at start):
        #: ``(checked, refused)``; until it has run, nothing may be recorded as if it could.
        self._owed_check: Callable[[], tuple[bool, str | None]] | None = None
        #: Why the topic as it is cannot hold the ledger (its retention, the ACLs).
        self._refused: str | None = None
        #: Whether a broker answered the last probe (``None``: not asked yet).
        self._broker_answers: bool | None = None
        self._thread = threading.Thread(target=self._run, name="ledger", daemon=True)

    def _new_chain_id(self) -> str:
        return f"{self._replica}/{uuid.uuid4().hex[:12]}"

    def start(self) -> None:
        self._thread.start()

    def check_topic_when_reachable(self, check: Callable[[], tuple[bool, str | None]]) -> None:
        """Run ``check`` of the ledger topic once Kafka answers (it did not at start); until
        it has, the ledger counts as unavailable, and if it refuses the topic, for good."""
        self._owed_check = check

    def problem(self) -> str | None:
        """Why the ledger cannot be written now, or ``None`` when it can."""
        if self._thread.ident is not None and not self._thread.is_alive() and not self._stopping:
            return "the ledger writer has stopped"
        if self._refused is not None:
            return self._refused
        if self._owed_check is not None:
            return "the ledger topic is not checked yet (Kafka did not answer at start)"
        if self._overflowing:
            return "the ledger queue is full: entries are not being written"
        return self._unreachable or self._problem

    def queued(self) -> int:
        """Entries recorded and not yet taken by the writer."""
        return self._queue.qsize()

    def reachable(self) -> bool:
        """Whether a broker answered the last probe (``False`` before the first)."""
        return self._broker_answers is True

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first entry to be written; whether it was."""
        deadline = time.monotonic() + timeout
        while self.problem() is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.problem() is None

    def record(self, time: str, kind: str, details: Mapping[str, Any]) -> None:
        """Queue an entry; never blocks. A full queue marks the ledger unavailable until it
        has drained to half."""
        try:
            self._queue.put_nowait((time, kind, dict(details)))
        except queue.Full:
            self._overflowing = True
            log.error("ledger unavailable: the queue is full, an entry was not recorded")

    def record_acknowledged(
        self, time: str, kind: str, details: Mapping[str, Any], timeout: float
    ) -> bool:
        """Record an entry and wait until Kafka has acknowledged it (``acks=all``); whether it
        did within ``timeout`` seconds. An entry not yet acknowledged may still be written
        later (it stays queued), exactly once."""
        written = threading.Event()
        with tracer.start_as_current_span("ledger record", attributes={"ledger.kind": kind}):
            try:
                self._queue.put((time, kind, dict(details), written), timeout=timeout)
            except queue.Full:
                return False
            return written.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and a final checkpoint, waiting for Kafka up to ``timeout``
        seconds in all (with Kafka away, what it did not take by then is not written)."""
        self._stopping = True
        self._close_by = time.monotonic() + timeout
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout + 1)

    def _fail(self, problem: str) -> None:
        if self._problem != problem:
            log.error("ledger unavailable: %s", problem)
        self._problem = problem

    def _run(self) -> None:
        # The first entry opens the chain: it proves writes work before any stream is allowed.
        work: deque[Any] = deque([(self._now(), "chain_started", {"topic": self.topic})])
        unacknowledged: dict[int, Any] = {}
        attempts: dict[int, int] = {}  # id(item) -> chains it was given to
        chain = Chain(self.chain)
        producer: GuardedProducer | None = None
        probed = 0.0
        checkpointed = -math.inf  # the first checkpoint follows the chain's start at once
        while True:
            try:
                if producer is None:
                    producer = self._producer_factory()
                # While no broker answers, a new producer would fail the same way: wait.
                elif (producer.fatal or self._rebuild) and self._unreachable is None:
                    why = producer.fatal or self._rebuild or "unknown"
                    self._fail(f"an entry could not be written ({why})")
                    work.extendleft(reversed(self._again(unacknowledged, attempts)))
                    follows, self.chain = self.chain, self._new_chain_id()
                    chain = Chain(self.chain)
                    started: dict[str, Any] = {
                        "topic": self.topic,
                        "follows": follows,
                        "because": why,
                    }
                    if self._acknowledged is not None:  # where the old chain is proven to end
                        started["follows_seq"], started["follows_head"] = self._acknowledged
                    self._acknowledged = None
                    checkpointed = -math.inf
                    work.appendleft((self._now(), "chain_started", started))
                    log.warning("ledger: a new producer and chain %s (%s)", self.chain, why)
                    self._rebuild = None
                    producer = self._producer_factory()
                while work:
                    item = work.popleft()
                    if item is _STOP:
                        self._checkpoint(producer, chain, unacknowledged, final=True)
                        producer.flush(max(0.0, self._close_by - time.monotonic()))
                        return
                    self._write(producer, chain, item, unacknowledged)
                    if len(unacknowledged) % 1000 == 0:
                        producer.poll(0)
                producer.poll(0)
                # Idle or not: a chain whose latest signed head is recent is a live one.
                if time.monotonic() - checkpointed >= self._checkpoint_seconds:
                    self._checkpoint(producer, chain, unacknowledged, final=False)
                    checkpointed = time.monotonic()
                if time.monotonic() - probed >= PROBE_SECONDS:
                    probed = time.monotonic()
                    self._probe(producer)
                # Take everything queued (up to a batch), waiting briefly only when idle.
                with contextlib.suppress(queue.Empty):
                    work.append(self._queue.get(timeout=0.02))
                    time.sleep(GATHER_SECONDS)
                    for _ in range(BATCH_ENTRIES):
                        work.append(self._queue.get_nowait())
                if self._overflowing and self._queue.qsize() < self._queue.maxsize // 2:
                    self._overflowing = False
            except Exception:  # a defect: say so, rebuild, keep recording
                log.exception("ledger writer: unexpected error; rebuilding its producer")
                self._rebuild = "an unexpected error in the writer"
                time.sleep(0.5)

    @staticmethod
    def _again(unacknowledged: dict[int, Any], attempts: dict[int, int]) -> list[Any]:
        """What a failed producer did not write, in order, to go first on the next chain: not
        the failed chain's own start, and not an entry already given to three chains (it cannot
        be written: a defect, said loudly)."""
        again = []
        for seq in sorted(unacknowledged):
            item = unacknowledged.pop(seq)
            if item[1] in ("chain_started", CHECKPOINT):  # of the failed chain: never moved
                continue
            tries = attempts[id(item)] = attempts.get(id(item), 0) + 1
            if tries >= MAX_CHAINS_PER_ENTRY:
                log.error("ledger: a %s entry could not be written on 3 chains; dropped", item[1])
                attempts.pop(id(item))
                continue
            again.append(item)
        return again

    def _probe(self, producer: GuardedProducer) -> None:
        """Whether the topic can be written to now: a broker outage shows within a second or
        two (entries in flight would show it only after ``message.timeout.ms``)."""
        unreachable = producer.unreachable(self.topic, PROBE_TIMEOUT_SECONDS)
        self._broker_answers = producer.answered
        if producer.answered:  # the topic may be missing yet: the owed check creates it
            self._check_owed()
        if unreachable is None:
            unreachable = self._still_the_same_topic(producer)
        if unreachable != self._unreachable:
            if unreachable is None:
                log.info("ledger: Kafka answers again")
            else:
                log.error("ledger unavailable: %s", unreachable)
            self._unreachable = unreachable

    def _check_owed(self) -> None:
        """The check of the topic Kafka did not answer at start, now that it does."""
        check = self._owed_check
        if check is None:
            return
        checked, refused = check()
        if checked:
            if refused is not None:
                log.error("ledger unavailable: %s", refused)
                self._refused = refused
            self._owed_check = None

    def _still_the_same_topic(self, producer: GuardedProducer) -> str | None:
        """Why this replica's chain cannot go on in the topic, or ``None`` while it can.

        A topic deleted and created again between two probes looks like the same topic but
        has a new id: the chain's beginning is gone from it. Writing on would look like a chain
        cut short, or starting over would hide the loss; the replica refuses until restarted
        (a new process begins a new chain, and the operator has seen why)."""
        if self._replaced is None:
            found = producer.topic_id(self.topic, PROBE_TIMEOUT_SECONDS)
            if found is None:
                return None  # the broker keeps no topic ids (before Kafka 2.8), or is busy
            if self._topic_id is None:
                self._topic_id = found
            elif found != self._topic_id:
                self._replaced = (
                    f"the ledger topic {self.topic!r} was deleted and created again (its id "
                    "changed): this replica's chain does not continue in it; restart the "
                    "replica to begin a new chain"
                )
        return self._replaced

    def _checkpoint(
        self,
        producer: GuardedProducer,
        chain: Chain,
        unacknowledged: dict[int, Any],
        *,
        final: bool,
    ) -> None:
        """Sign the chain's head into it: cutting the chain after this, or rewriting what is
        before, no longer matches a signature (``core.ledger.prove``)."""
        if self._sign is None or chain.prev is None:
            return
        at = self._now()
        claims = checkpoint_claims(chain.chain, chain.seq - 1, chain.prev, at, final=final)
        details = {"covers": chain.seq - 1, "final": final, "signature": self._sign(claims)}
        self._write(producer, chain, (at, CHECKPOINT, details), unacknowledged)

    def _write(
        self, producer: GuardedProducer, chain: Chain, item: Any, unacknowledged: dict[int, Any]
    ) -> None:
        at, kind, details = item[:3]
        written: threading.Event | None = item[3] if len(item) > 3 else None
        try:
            entry = chain.append(at, kind, details)
            value = orjson.dumps(entry)
        except (ValueError, TypeError) as exc:
            log.error("ledger: a %s entry cannot be recorded (a defect): %s", kind, exc)
            return
        seq, chain_id, entry_hash = entry["seq"], chain.chain, entry["hash"]
        unacknowledged[seq] = item
        handed = time.monotonic()

        def delivered(error: str | None, _partition: int | None, _offset: int | None) -> None:
            if chain_id != self.chain:
                return  # an entry of a chain already given up: it is written again on the new
            if error is not None:
                self._rebuild = error
                self._on_failed()
                return
            self._on_written(time.monotonic() - handed)
            unacknowledged.pop(seq, None)
            self._acknowledged = (seq, entry_hash)
            if kind == CHECKPOINT:
                self.latest_checkpoint = str(details["signature"])
            if written is not None:
                written.set()
            if self._problem is not None:
                log.info("ledger writes succeed")
                self._problem = None

        producer.produce(self.topic, value, key=chain_id, on_delivery=delivered)

    @staticmethod
    def _now() -> str:
        return timestamp(datetime.now(UTC))


def _entry(value: bytes | None) -> dict[str, Any] | None:
    """A ledger entry from a message's value; ``None`` when it is not one."""
    try:
        entry = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) else None


class KafkaLedgerFollower:
    """Follows the ledger topic from its beginning (``services.container.LedgerFollower``):
    what every replica recorded about contracts reaches every other one.

    Each read opens a consumer, assigns every partition at the positions reached so far (no
    consumer group), reads to the end and closes it: following holds no connection between
    reads, and a ledger topic deleted in between is simply not found (a consumer left assigned
    to a deleted topic crashed inside librdkafka on the test broker's metadata answer).
    """

    def __init__(self, config: Mapping[str, Any], topic: str) -> None:
        self._config = {
            **config,
            "group.id": "exchange-gateway-ledger-follower",
            "enable.auto.commit": False,
        }
        self.topic = topic
        self._positions: dict[int, int] = {}

    def read(self, timeout: float) -> list[dict[str, Any]]:
        """The entries written since the last read, up to the end of the topic as it is now
        (within ``timeout`` seconds; what is not read by then comes with the next read)."""
        deadline = time.monotonic() + timeout
        entries: list[dict[str, Any]] = []
        with map_kafka_errors("follow the ledger"):
            consumer = Consumer(self._config)
            try:
                described = consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
                if described is None or described.error is not None:
                    return []
                ends = {}
                for p in sorted(described.partitions):
                    ends[p] = consumer.get_watermark_offsets(
                        TopicPartition(self.topic, p), timeout=timeout
                    )[1]
                    self._positions.setdefault(p, 0)
                behind = [p for p, end in ends.items() if self._positions[p] < end]
                if not behind:
                    return []
                consumer.assign([TopicPartition(self.topic, p, self._positions[p]) for p in behind])
                while time.monotonic() < deadline:
                    messages = consumer.consume(num_messages=1000, timeout=0.2)
                    for message in messages:
                        if message.error() is not None:
                            continue
                        partition, offset = message.partition() or 0, message.offset() or 0
                        self._positions[partition] = offset + 1
                        entry = _entry(message.value())
                        if entry is not None:
                            entries.append(entry)
                    if all(self._positions[p] >= ends[p] for p in behind):
                        break
            finally:
                consumer.close()
        return entries


#: Reads of the ledger that bring nothing before a reader gives up on an end it cannot reach.
QUIET_READS = 5


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

    Reads until every partition has reached the end offset it had when reading began (or
    nothing arrives for ``QUIET_READS`` reads of ``idle`` seconds).
    """
    with map_kafka_errors("read the ledger"):
        yield from _read_entries(config, topic, idle)


def _read_entries(config: Mapping[str, Any], topic: str, idle: float) -> Iterator[dict[str, Any]]:
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
        quiet = 0
        while True:
            messages = consumer.consume(num_messages=1000, timeout=idle)
            for message in messages:
                if message.error() is not None:
                    continue
                partition, offset = message.partition() or 0, message.offset() or 0
                by_partition[partition].append(_entry(message.value()) or {"malformed": True})
                positions[partition] = offset + 1
            # Up to the end as it was when reading began: a ledger written all the time (a
            # checkpoint every few seconds, progress every second) would never fall quiet.
            if all(positions[p] >= ends[p] for p in partitions):
                break
            quiet = 0 if messages else quiet + 1
            if quiet >= QUIET_READS:  # an end that cannot be reached: what arrived is all
                break
        for p in partitions:
            yield from by_partition[p]
    finally:
        consumer.close()
