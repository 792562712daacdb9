"""Opening a partner's stream or pull on a contract, and running it.

Everything that can refuse a request (contract, cursor, broker, topic) happens in ``open``,
before any byte of a response is sent, so refusals are proper problem responses. A source's
``fetch`` is awaited (a shared reader's window wakes the streams waiting on it, without a thread
each); the blocking calls of opening, and the transform of large or encrypting batches, run in
worker threads of one limiter for the whole service, so threads stay bounded however many
streams are open. Small plaintext batches (the live tail) are transformed on the event loop.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio
import anyio.to_thread

from gateway.core.contracts import ContractDocument
from gateway.core.cursor import OFFSET_BEGINNING, CursorCodec
from gateway.core.filters import parse_filter
from gateway.core.ledger import PROGRESS, DeliveryEntry, timestamp
from gateway.core.lifecycle import (
    LEDGER_GRACE_SECONDS,
    Status,
    StreamCarriesOn,
    StreamEnds,
    stream_decision,
)
from gateway.core.projection import CompiledFields, ValueProjector, compile_fields
from gateway.core.protection import ContractProtector, pseudonym_key
from gateway.core.receipts import RECEIPT, ReceiptPolicy, ReceiptWindow
from gateway.core.records import EncodedBatch, RecordEncoder, SourceRecord, StreamFormat
from gateway.core.service_levels import Stamps
from gateway.errors import (
    AuthenticationFailed,
    BrokerUnavailable,
    ContractNotActive,
    CursorOutOfRange,
    GatewayError,
    InvalidRequest,
    LedgerUnavailable,
    Overloaded,
    QuotaExceeded,
)
from gateway.services.authorization import Partner
from gateway.services.datakeys import DataKeyService, encryption_key
from gateway.services.ledger import Ledger
from gateway.services.quotas import QuotaService, StreamQuota
from gateway.services.registry import Registry
from gateway.services.service_levels import Meter, ServiceLevelTracker

log = logging.getLogger(__name__)


class RecordSource(Protocol):
    """A product topic as one stream reads it (see ``adapters/kafka/source.py``). Blocking."""

    def partitions(self) -> list[int]: ...
    def latest(self, partitions: Sequence[int]) -> dict[int, int]: ...
    def bounds(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]: ...
    def at_time(self, partitions: Sequence[int], moment: datetime) -> dict[int, int]: ...
    def assign(self, positions: dict[int, int]) -> None: ...
    async def fetch(self, max_records: int, timeout: float) -> Sequence[SourceRecord]: ...
    def has_unread(self, positions: dict[int, int]) -> bool: ...
    async def close(self) -> None: ...

    #: Whether the records of the last fetch may be given to other streams too (the shared
    #: window's): only such batches are worth keeping for them, encoded.
    shared: bool


SourceFactory = Callable[[str], RecordSource]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: A live stream records its progress at least this often while it sends: the most of a
#: delivery a replica that dies (SIGKILL, power) can have sent unrecorded.
PROGRESS_SECONDS = 1.0
#: Spreads streams' periodic work (progress entries, receipts) over its period: the n-th stream
#: opened has the phase ``n * PHASE_STEP % 1`` (the golden ratio's fractional part: a sequence
#: that fills the interval evenly whatever the number of streams), and its first period is
#: ``1 - phase`` of the whole, so that streams opened together (a thousand partners' clients
#: at the tail, a reconnect storm) do not all do it in the same round of wake-ups.
PHASE_STEP = 0.6180339887498949
#: What a stream ended by a shutdown says.
SHUTDOWN_DETAIL = "the gateway is shutting down: resume with your cursor"

#: Batches up to this size without encrypted fields are transformed on the event loop (about
#: 2 ms at 7.5 µs a record: a thread hop costs more than it saves, since the transform holds
#: the GIL either way); larger ones, and encrypting ones, in a worker thread (where the GIL's
#: switch interval lets the event loop in every 5 ms). At 64, a thousand tail streams woken
#: late under load each hopped to a thread: 18% of the process went on the hops.
INLINE_RECORDS = 256

#: Worker threads the stream service uses at once, for all streams together.
WORKER_THREADS = 32

#: How long a pull keeps fetching past ``wait`` while the log end says records are waiting.
PULL_CATCH_UP_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Start:
    """Where a first connection (one without a cursor) begins."""

    kind: str  # "earliest" | "latest" | "time"
    moment: datetime | None = None

    @classmethod
    def parse(cls, text: str | None) -> Start:
        if text is None or text == "earliest":
            return cls("earliest")
        if text == "latest":
            return cls("latest")
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise InvalidRequest(
                "'from' must be 'earliest', 'latest' or an RFC 3339 time with a UTC offset"
            )
        if moment < EPOCH:  # Kafka times start in 1970 (and -1 ms would mean "latest")
            raise InvalidRequest("'from' must not be before 1970-01-01T00:00:00Z")
        return cls("time", moment)


@dataclass(frozen=True, slots=True)
class StreamLimits:
    batch_records: int = 1000
    #: The longest a stream waits for records before re-checking its token and contract.
    poll_seconds: float = 0.25
    #: The longest an idle stream sleeps (everything that ends it also wakes it: a guard).
    idle_seconds: float = 300.0
    #: Streams and pulls open at once in the process (above it: ``503 overloaded``).
    max_streams: int = 10_000


class BatchCache:
    """Encode once, send many: batches encoded for one stream, for the next stream of the same
    contract version at the same positions that reads the very same records (streams at the
    tail read the same slices of a topic's window). Only for contracts without encrypted
    fields (those bytes depend on nothing else), and only for records of a shared window (a
    catch-up consumer's are read by one stream: kept, they had held 330,000 records of a
    single history stream alive). Bounded in batches and in bytes (least recently used out)."""

    def __init__(self, size: int = 512, max_bytes: int = 32 << 20) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._batches: OrderedDict[Hashable, tuple[EncodedBatch, dict[int, int], object]] = (
            OrderedDict()
        )
        self.hits = 0

    def __len__(self) -> int:
        return len(self._batches)

    def get(self, key: Hashable) -> tuple[EncodedBatch, dict[int, int]] | None:
        found = self._batches.get(key)
        if found is None:
            return None
        self._batches.move_to_end(key)
        self.hits += 1
        return found[0], found[1]

    def put(
        self, key: Hashable, batch: EncodedBatch, after: dict[int, int], records: object
    ) -> None:
        # The records are kept with the batch: the key names them by identity.
        old = self._batches.pop(key, None)
        if old is not None:
            self._bytes -= len(old[0].data)
        self._batches[key] = (batch, after, records)
        self._bytes += len(batch.data)
        while len(self._batches) > self._size or self._bytes > self._max_bytes:
            _, (dropped, _, _) = self._batches.popitem(last=False)
            self._bytes -= len(dropped.data)


@dataclass(frozen=True)
class StreamContext:
    """What a running stream reads from its surroundings (the same for every stream)."""

    registry: Callable[[], Registry]
    ledger: Ledger
    limits: StreamLimits
    clock: Callable[[], datetime]
    monotonic: Callable[[], float]
    batches: BatchCache = field(default_factory=BatchCache)
    #: Whether the server is shutting down (every stream ends, with ``shutdown``).
    stopping: Callable[[], bool] = lambda: False
    #: Told of each delivery as it goes and when it ends (``services/consumption.py``).
    on_delivery: Callable[[DeliveryEntry], None] = lambda entry: None
    #: Measures the freshness of what streams write (``None``: not measured).
    service_levels: ServiceLevelTracker | None = None
    #: When streams send signed receipts, and what signs them (``None``: no receipts).
    receipts: ReceiptPolicy = field(default_factory=ReceiptPolicy)
    sign_receipt: Callable[[bytes], str] | None = None


class Stream:
    """One open stream or pull: a positioned source and the encoder of its contract."""

    def __init__(
        self,
        *,
        context: StreamContext,
        partner: Partner,
        contract_id: str,
        version: ContractDocument,
        source: RecordSource,
        encoder: RecordEncoder,
        limiter: anyio.CapacityLimiter,
        kind: str,
        stream_format: StreamFormat,
        quota: StreamQuota,
        on_close: Callable[[], None] = lambda: None,
        history: dict[int, int] | None = None,
        phase: float = 0.0,
    ) -> None:
        if not 0.0 <= phase < 1.0:
            raise ValueError(f"a stream's phase is in [0, 1), not {phase}")
        self._context = context
        self.quota = quota
        #: Called before a batch is encrypted: the consumer's key may have changed.
        self._before_encrypting: Callable[[], None] | None = None
        self.partner = partner
        self.contract_id = contract_id
        #: The contract version this stream relies on (amendments that grant no less replace it).
        self.version = version
        self._source = source
        self.encoder = encoder
        self._limiter = limiter
        self.records_sent = 0
        self.bytes_sent = 0
        self.kind = kind
        self.format = stream_format
        self.versions = [version.hash]
        self.started = context.clock()
        self.start_positions = dict(encoder.positions)
        #: Why the delivery ended, for the ledger (a client that leaves: "disconnected").
        self.ended_because = "disconnected" if kind == "stream" else "answered"
        self._closed = False
        #: Since when (monotonic) the ledger has not been writable, while it is not.
        self._unrecordable_since: float | None = None
        #: Names the delivery in its progress entries and its final one.
        self.delivery = uuid.uuid4().hex
        #: Records the cursor pointed at that retention had deleted (said first, and recorded).
        self.lost_to_retention: dict[int, tuple[int, int]] = {}
        #: From when (monotonic) the next batch records the delivery's progress before it leaves.
        self._progress_due = -math.inf
        #: The share of their periods its first receipt and second progress entry wait for.
        self._first_share = 1.0 - phase
        self._on_close = on_close
        #: What was sent since the last receipt.
        self.window = ReceiptWindow(start=dict(self.start_positions), share=self._first_share)
        #: Receipt events issued and not yet sent (a version changed under the stream).
        self._owed: list[bytes] = []
        #: A pull's receipt, for its answer.
        self.receipt_token: str | None = None
        #: Per partition, the log end when the stream opened (what was there is history).
        self._history = history or {}
        self._meter = self._metered(version)
        #: The registry and the span of time over which ``end_reason`` answers as it last did
        #: (from its last look: a clock set back looks again).
        self._steady: tuple[object, datetime, datetime] = (None, EPOCH, EPOCH)

    def _metered(self, version: ContractDocument) -> Meter | None:
        tracker = self._context.service_levels
        if tracker is None:
            return None
        return tracker.meter(self.contract_id, version, self._history)

    def use_before_encrypting(self, refresh: Callable[[], None]) -> None:
        """Encrypting stream: ``refresh`` runs before each batch (and once now)."""
        self._before_encrypting = refresh
        refresh()

    def _encode(self, records: Sequence[SourceRecord]) -> EncodedBatch:
        if self._before_encrypting is not None and records:
            self._before_encrypting()
        return self.encoder.encode(records)

    async def _encoded(self, records: Sequence[SourceRecord]) -> EncodedBatch:
        if len(records) <= INLINE_RECORDS and self._before_encrypting is None:
            return self._encode(records)
        return await anyio.to_thread.run_sync(self._encode, records, limiter=self._limiter)

    async def fetch(self, max_records: int, timeout: float) -> EncodedBatch:
        """The next batch, within the quotas: cut short if the day's volume runs out."""
        records = await self._source.fetch(max_records, timeout)
        if not records:  # nothing new (the cursor has not moved)
            return EncodedBatch(b"", 0, None, [], [], {})
        if self._before_encrypting is not None or not self._source.shared:
            batch = await self._encoded(records)
        else:
            cache = self._context.batches
            key = (
                self.contract_id, self.versions[0], self.format,
                tuple(self.encoder.positions.items()),
                id(records[0]), id(records[-1]), len(records),
            )  # fmt: skip
            cached = cache.get(key)
            if cached is None:
                batch = await self._encoded(records)
                cache.put(key, batch, dict(self.encoder.positions), records)
            else:
                batch, after = cached
                self.encoder.adopt(after)
        if batch.data:
            size = len(batch.data)
            granted = await self.quota.reserve(size)
            if granted < size:
                batch = self.encoder.cut(batch, records, granted)
            await self.quota.settle(granted, batch.records, len(batch.data))
            levels = self._context.service_levels
            if levels is not None and self._meter is not None and batch.marks:
                # The freshness of what is sent: the timestamps are read once per batch, which
                # the streams at the same position share (``BatchCache``).
                if batch.stamps is None:
                    batch.stamps = Stamps.of(
                        records, batch.marks, batch.first, self.encoder.positions
                    )
                levels.measure(self._meter, batch.stamps)
            self.window.add(
                batch.data,
                batch.marks,
                batch.skips,
                self.encoder.positions,
                batch.first,
                self._context.monotonic(),
            )
        self.records_sent += batch.records
        self.bytes_sent += len(batch.data)
        return batch

    async def has_unread(self) -> bool:
        positions = dict(self.encoder.positions)
        return await anyio.to_thread.run_sync(
            self._source.has_unread, positions, limiter=self._limiter
        )

    def end_reason(self) -> StreamEnds | None:
        """Why the stream must end now, or ``None`` while it may go on (under a new version
        of the contract, if one that grants no less now governs)."""
        context = self._context
        now, registry = context.clock(), context.registry()
        exhausted = self.quota.exhausted
        recordable = context.ledger.problem() is None
        if (
            recordable
            and exhausted is None
            and registry is self._steady[0]
            and self._steady[1] <= now < self._steady[2]
            and self._unrecordable_since is None
        ):
            return None  # nothing that could end the stream has changed since the last look
        if recordable:
            self._unrecordable_since = None
        elif self._unrecordable_since is None:
            self._unrecordable_since = context.monotonic()
        since = self._unrecordable_since
        decision = stream_decision(
            unrecordable_for=0.0 if since is None else context.monotonic() - since,
            now=now,
            token_expires_at=self.partner.token_expires_at,
            exhausted=None if exhausted is None else (exhausted.retry_after, exhausted.detail),
            status=registry.status(self.contract_id, now),
            version=self.version,
        )
        if decision is None:
            # The same answer until the registry is replaced (a reload), the contract's status
            # may change (a validity bound, a statement), or the token expires.
            until = registry.steady_until(self.contract_id, now)
            self._steady = (registry, now, min(until, self.partner.token_expires_at))
        else:
            self._steady = (None, now, now)
        if isinstance(decision, StreamCarriesOn):
            if self.window.records:  # what was sent under the old version has its receipt
                self._owed.append(self.receipt())
            log.info(
                "stream on %s continues under version %d",
                self.contract_id,
                decision.version.contract.version,
            )
            self.version = decision.version
            self._meter = self._metered(decision.version)
            self.quota.adopt(decision.version)
            self.versions.append(decision.version.hash)
            return None
        return decision

    async def events(self, heartbeat: float | None = None) -> AsyncGenerator[bytes]:
        """Encoded events until the client leaves, the token expires or the contract ends;
        a heartbeat after ``heartbeat`` seconds without an event (when given)."""
        limits, monotonic = self._context.limits, self._context.monotonic
        try:
            for gap in self.gaps():
                log.warning("contract %s: %s resumes past retention: %s", self.contract_id,
                            self.partner.org, gap)  # fmt: skip
                yield self.encoder.notice("gap", gap)
            written = monotonic()
            policy = self._context.receipts
            while True:
                if self._context.stopping():  # the partner resumes on another replica
                    self.ended_because = "shutdown"
                    yield self._closing(self.encoder.end("shutdown", detail=SHUTDOWN_DETAIL))
                    return
                ending = self.end_reason()
                while self._owed:
                    yield self._owed.pop(0)
                if ending is not None:
                    self.ended_because = ending.reason
                    yield self._closing(self.encoder.end(ending.reason, **ending.extra))
                    return
                if (delay := self.quota.delay()) > 0:  # within the rate quotas
                    await anyio.sleep(min(delay, limits.poll_seconds))
                    batch = None
                else:
                    # (A receipt comes after the batch that reaches its number of records:
                    # batches are not cut to it, so that streams at the same position still
                    # share one encoded batch.)
                    size = self.quota.batch_size(limits.batch_records)
                    wait = self._idle_wait()
                    if heartbeat is not None:
                        wait = max(0.0, min(wait, written + heartbeat - monotonic()))
                    if (
                        self._context.sign_receipt is not None
                        and (receipt_in := self.window.seconds_left(policy, monotonic()))
                        is not None
                    ):
                        wait = min(wait, receipt_in)
                    try:
                        batch = await self.fetch(size, wait)
                    except (BrokerUnavailable, CursorOutOfRange) as failed:
                        # The partner resumes with its cursor (and hears why if it cannot).
                        log.warning("stream on %s ends: %s", self.contract_id, failed.detail)
                        self.ended_because = failed.code
                        yield self._closing(self.encoder.end(failed.code, detail=failed.detail))
                        return
                if batch is not None and batch.data:
                    if monotonic() >= self._progress_due:
                        self._record_progress()  # before the batch leaves, covering it
                    yield batch.data
                    written = monotonic()
                elif heartbeat is not None and monotonic() - written >= heartbeat:
                    yield self.encoder.heartbeat()
                    written = monotonic()
                if self._context.sign_receipt is not None and self.window.due(policy, monotonic()):
                    yield self.receipt()
        finally:
            await self.close()

    def receipt(self) -> bytes:
        """The receipt event for what was sent since the last one (recorded in the ledger)."""
        return self.encoder.notice("receipt", {"receipt": self.issue_receipt()})

    def _closing(self, end: bytes) -> bytes:
        """``end`` after the receipt for what was sent since the last one, if anything was."""
        if self._context.sign_receipt is None or not self.window.records:
            return end
        return self.receipt() + end

    def issue_receipt(self) -> str:
        """Sign what the window holds into a receipt, record it, and start the next window."""
        sign = self._context.sign_receipt
        if sign is None:
            raise RuntimeError("receipts are not signed by this gateway")
        now = self._context.clock()
        payload = self.window.close(
            {
                "contract": self.contract_id,
                "version": self.version.hash,
                "partner": self.partner.org,
                "client": self.partner.client_id,
                "delivery": self.delivery,
                "kind": self.kind,
                "format": self.format.value if self.kind == "stream" else "application/json",
                "cursor": self.encoder.cursor(),
                "time": timestamp(now),
                "iat": int(now.timestamp()),
            }
        )
        token = sign(payload)
        self._context.ledger.record(
            timestamp(now),
            RECEIPT,
            {
                "contract": self.contract_id,
                "org": self.partner.org,
                "client": self.partner.client_id,
                "delivery": self.delivery,
                "receipt_seq": self.window.seq,
                "receipt": token,
            },
        )
        return token

    def _idle_wait(self) -> float:
        """How long the stream may wait for records before it must act by itself: its token's
        or its contract's expiry, the end of the ledger's grace. Everything else that can end a
        stream (a contract revoked, suspended, expired, amended or withdrawn; the ledger
        failing; the server shutting down) wakes it through the service's ``watch_changes``
        and ``shut_down``, so an idle stream wakes only for its heartbeat."""
        context = self._context
        deadline = min(self.version.contract.valid_until, self.partner.token_expires_at)
        wait = min(context.limits.idle_seconds, (deadline - context.clock()).total_seconds())
        if self._unrecordable_since is not None:
            grace = LEDGER_GRACE_SECONDS - (context.monotonic() - self._unrecordable_since)
            wait = min(wait, grace)
        return max(0.01, wait)

    def gaps(self) -> list[dict[str, Any]]:
        """What the partner's cursor pointed at that retention had deleted, per partition."""
        return [
            {"partition": p, "first": first, "last": last, "reason": "retention"}
            for p, (first, last) in sorted(self.lost_to_retention.items())
        ]

    def _delivery(self, now: datetime, end_reason: str) -> DeliveryEntry:
        return DeliveryEntry(
            kind=self.kind,
            contract=self.contract_id,
            versions=tuple(self.versions),
            org=self.partner.org,
            client=self.partner.client_id,
            format=self.format.value,
            start=self.start_positions,
            end=dict(self.encoder.positions),
            records=self.records_sent,
            bytes=self.bytes_sent,
            bytes_by_day=dict(self.quota.bytes_by_day),
            started=self.started,
            ended=now,
            end_reason=end_reason,
            delivery=self.delivery,
            lost_to_retention=self.lost_to_retention,
        )

    def _record_progress(self) -> None:
        """What the stream has sent, with the batch about to go: if this replica dies, the
        ledger still holds all but at most ``PROGRESS_SECONDS`` of the delivery.

        The first batch records at once, the second after the stream's first share of
        ``PROGRESS_SECONDS`` (``1 - phase``, see ``PHASE_STEP``), the rest every
        ``PROGRESS_SECONDS``."""
        first = self._progress_due == -math.inf
        share = self._first_share if first else 1.0
        self._progress_due = self._context.monotonic() + PROGRESS_SECONDS * share
        now = self._context.clock()
        progress = self._delivery(now, "in_progress")
        self._context.ledger.record(timestamp(now), PROGRESS, progress.details())
        self._context.on_delivery(progress)

    async def close(self) -> None:
        """Release the consumer; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._on_close()
        with anyio.CancelScope(shield=True):
            await self._source.close()
            await self.quota.close()
        ended = self._context.clock()
        delivery = self._delivery(ended, self.ended_because)
        self._context.ledger.record(timestamp(ended), self.kind, delivery.details())
        self._context.on_delivery(delivery)
        log.info(
            "%s closed: contract %s, org %s, %d records (%s)",
            self.kind,
            self.contract_id,
            self.partner.org,
            self.records_sent,
            self.ended_because,
        )


def _fingerprint(status: Status) -> tuple[str, str, str | None]:
    governing = status.governing
    return (status.verdict.state, status.verdict.reason, governing.hash if governing else None)


def refusal(ending: StreamEnds, exhausted: QuotaExceeded | None) -> GatewayError:
    """The error a new request would get for the reason a running pull has to end."""
    if ending.reason == "token_expired":
        return AuthenticationFailed("the access token has expired", code="token_expired")
    if ending.reason == "quota_exhausted" and exhausted is not None:
        return exhausted
    if ending.reason == "ledger_unavailable":
        return LedgerUnavailable("deliveries cannot be recorded now")
    return ContractNotActive(str(ending.extra.get("detail", ending.reason)), reason=ending.reason)


class StreamService:
    def __init__(
        self,
        *,
        registry: Callable[[], Registry],
        sources: SourceFactory,
        codec: CursorCodec,
        limits: StreamLimits,
        ledger: Ledger,
        quotas: QuotaService,
        datakeys: DataKeyService,
        pseudonym_secret: bytes,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        source_stats: Callable[[], dict[str, int]] = dict,
        wake: Callable[[], None] = lambda: None,
        on_delivery: Callable[[DeliveryEntry], None] = lambda entry: None,
        receipts: ReceiptPolicy | None = None,
        sign_receipt: Callable[[bytes], str] | None = None,
        service_levels: ServiceLevelTracker | None = None,
    ) -> None:
        #: Wakes every stream waiting for records, so that it re-checks why it might end.
        self._wake = wake
        #: What the sources share now (topic readers, catch-up readers lent), by name.
        self.source_stats = source_stats
        self.registry = registry
        self.ledger = ledger
        self.quotas = quotas
        self.datakeys = datakeys
        self._pseudonym_secret = pseudonym_secret
        self._sources = sources
        self._codec = codec
        self.limits = limits
        self.clock = clock
        self.monotonic = monotonic
        #: The server is shutting down: streams end, pulls answer what they have.
        self.stopping = False
        self._context = StreamContext(
            registry,
            ledger,
            limits,
            clock,
            monotonic,
            stopping=lambda: self.stopping,
            on_delivery=on_delivery,
            receipts=receipts or ReceiptPolicy(),
            sign_receipt=sign_receipt,
            service_levels=service_levels,
        )
        self._projections: dict[str, tuple[CompiledFields, ValueProjector]] = {}
        self._threads = anyio.CapacityLimiter(WORKER_THREADS)
        self._phases = itertools.count()
        #: Streams and pulls open now (opening included).
        self.open_streams = 0

    async def open(
        self,
        partner: Partner,
        contract_id: str,
        *,
        cursor: str | None,
        start: Start,
        stream_format: StreamFormat,
        kind: str = "stream",
    ) -> Stream:
        registry = self.registry()
        doc = registry.active_contract_for(partner.org, contract_id, self.clock())
        # An empty cursor is a malformed one, never "from the start".
        resumed = self._codec.decode(contract_id, cursor) if cursor is not None else None
        problem = self.ledger.problem()
        if problem is not None:  # fail closed: no delivery that cannot be recorded
            raise LedgerUnavailable(f"deliveries cannot be recorded now: {problem}")
        if self.open_streams >= self.limits.max_streams:
            raise Overloaded(
                f"this gateway process serves {self.limits.max_streams} streams, its most; "
                "try again (another replica may have room)"
            )
        self.open_streams += 1
        released = False

        def release() -> None:  # once, whether the stream closes or never opens
            nonlocal released
            if not released:
                released = True
                self.open_streams -= 1

        try:
            return await self._open(
                partner, contract_id, doc, resumed, start=start, stream_format=stream_format,
                kind=kind, on_close=release,
            )  # fmt: skip
        except BaseException:
            release()
            raise

    def _projection(self, doc: ContractDocument) -> tuple[CompiledFields, ValueProjector]:
        """The contract version's compiled fields and fast projection (built once: a version's
        streams share them; versions are few, and the cache forgets them all past 256)."""
        found = self._projections.get(doc.hash)
        if found is None:
            if len(self._projections) >= 256:
                self._projections.clear()
            fields = compile_fields(doc.contract.fields)
            found = self._projections[doc.hash] = (fields, ValueProjector(fields))
        return found

    async def _open(
        self,
        partner: Partner,
        contract_id: str,
        doc: ContractDocument,
        resumed: dict[int, int] | None,
        *,
        start: Start,
        stream_format: StreamFormat,
        kind: str,
        on_close: Callable[[], None],
    ) -> Stream:
        registry = self.registry()
        topic = registry.products[doc.contract.product].topic
        limiter = self._threads
        fields, projector = self._projection(doc)
        row_filter = parse_filter(doc.contract.filter) if doc.contract.filter else None
        recipient = (
            encryption_key(registry.keys.get(doc.contract.consumer), doc.contract.consumer)
            if fields.encrypted
            else None
        )
        protector = (
            ContractProtector(pseudonym_key(self._pseudonym_secret, contract_id, doc.hash), None)
            if fields.protected
            else None
        )

        made: list[RecordSource] = []

        def positioned() -> tuple[
            RecordSource, dict[int, int], dict[int, tuple[int, int]], dict[int, int]
        ]:
            if protector is not None and recipient is not None:
                protector.use(self.datakeys.current(contract_id, recipient))
            source = self._sources(topic)
            made.append(source)
            positions = self._positions(source, resumed, start, self.clock())
            # Where each partition ended now: what is before it was there while the partner
            # was away (history, for the freshness figures).
            if resumed is None and start.kind == "latest":
                bounds, history = {}, dict(positions)  # what latest gave: no second look
            else:
                bounds = source.bounds(list(positions))
                history = {p: end for p, (_, end) in bounds.items()}
            lost = self._within_log(positions, bounds) if resumed else {}
            source.assign(positions)
            return source, positions, lost, history

        # Quotas come last among refusals, and a stream that fails to start frees its slot.
        quota = await self.quotas.open(contract_id, partner.org, doc)
        try:
            source, positions, lost, history = await anyio.to_thread.run_sync(
                positioned, limiter=limiter
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                for source in made:
                    await source.close()
                await quota.close()
            raise
        encoder = RecordEncoder(
            contract_id=contract_id,
            fields=fields,
            codec=self._codec,
            positions=positions,
            stream_format=stream_format,
            row_filter=row_filter,
            protector=protector,
            projector=projector,
        )
        log.info("stream opened: contract %s, org %s", contract_id, partner.org)
        stream = Stream(
            context=self._context,
            partner=partner,
            contract_id=contract_id,
            version=doc,
            source=source,
            encoder=encoder,
            limiter=limiter,
            kind=kind,
            stream_format=stream_format,
            quota=quota,
            on_close=on_close,
            history=history,
            phase=next(self._phases) * PHASE_STEP % 1.0,
        )
        stream.lost_to_retention = lost
        if fields.encrypted:
            try:
                stream.use_before_encrypting(lambda: self.refresh_recipient(stream))
            except BaseException:
                await stream.close()
                raise
        return stream

    @staticmethod
    def _positions(
        source: RecordSource, resumed: dict[int, int] | None, start: Start, now: datetime
    ) -> dict[int, int]:
        partitions = source.partitions()
        if resumed is not None:
            # A partition the cursor does not know was added since: read it from its beginning.
            return {p: resumed.get(p, OFFSET_BEGINNING) for p in partitions}
        if start.kind == "latest" or (start.moment is not None and start.moment >= now):
            # A time to come starts at the end, whatever a broker answers for it: never history.
            return source.latest(partitions)
        if start.kind == "time" and start.moment is not None:
            return source.at_time(partitions, start.moment)
        return dict.fromkeys(partitions, OFFSET_BEGINNING)

    @staticmethod
    def _within_log(
        positions: dict[int, int], bounds: dict[int, tuple[int, int]]
    ) -> dict[int, tuple[int, int]]:
        """Check a resumed cursor against what each partition holds now.

        Before the oldest record still kept: start there instead (updating ``positions``) and
        return, per partition, the offsets lost to retention. Past the log end: the topic was
        recreated, and reading on would skip whatever is produced up to there, so refuse."""
        lost = {}
        for partition, (oldest, end) in bounds.items():
            offset = positions[partition]
            if offset > end:
                raise CursorOutOfRange(
                    f"the cursor points at offset {offset} of partition {partition}, which "
                    f"ends at {end}: the topic was recreated; start again without the cursor"
                )
            if 0 <= offset < oldest:
                lost[partition] = (offset, oldest - 1)
                positions[partition] = oldest
        return lost

    async def watch_changes(self) -> None:
        """Wake every stream when something that may end it changes: the contracts (a reload,
        or a time-bound status such as an expiry coming due) or whether the ledger takes writes.
        One task for the process, every ``poll_seconds``: the contract checks stay within a
        second without each idle stream polling on its own."""
        seen: object = None
        while True:
            registry, now = self.registry(), self.clock()
            state = (
                id(registry),
                self.ledger.problem() is None,
                tuple(_fingerprint(registry.status(c, now)) for c in sorted(registry.histories)),
            )
            if state != seen:
                if seen is not None:
                    self._wake()
                seen = state
            await anyio.sleep(self.limits.poll_seconds)

    def shut_down(self) -> None:
        """The server is stopping: every stream ends now with ``event: end`` reason
        ``shutdown`` (its delivery recorded), every long-poll answers what it has."""
        self.stopping = True
        self._wake()

    def refresh_recipient(self, stream: Stream) -> None:
        """Encrypt to the consumer's current key (a change in ``keys/`` starts a new epoch)."""
        consumer = stream.version.contract.consumer
        recipient = encryption_key(self.registry().keys.get(consumer), consumer)
        datakeys, contract_id = self.datakeys, stream.contract_id
        stream.encoder.data_keys = functools.partial(datakeys.reserve, contract_id, recipient)

    async def pull(self, stream: Stream, *, limit: int, wait: float) -> EncodedBatch:
        """Up to ``limit`` records; waits up to ``wait`` seconds while nothing is new.

        Returns early with what arrived; returns empty only when the partner is caught up (or a
        grace period after ``wait`` passed), so a fresh consumer's first fetch is not mistaken
        for an empty topic.
        """
        deadline = self.monotonic() + wait
        try:
            while True:
                # Like a stream: nothing is fetched once the token or the contract has ended.
                ending = stream.end_reason()
                if ending is not None:
                    stream.ended_because = ending.reason
                    raise refusal(ending, stream.quota.exhausted)
                await anyio.sleep(stream.quota.delay())  # within the rate quotas
                remaining = deadline - self.monotonic()
                batch = await stream.fetch(
                    stream.quota.batch_size(limit),
                    max(0.05, min(self.limits.poll_seconds, remaining)),
                )
                if batch.records or self.stopping:
                    if stream.window.records and self._context.sign_receipt is not None:
                        stream.receipt_token = stream.issue_receipt()
                    return batch
                if remaining <= 0 and (
                    remaining <= -PULL_CATCH_UP_SECONDS or not await stream.has_unread()
                ):
                    return batch
        finally:
            await stream.close()
