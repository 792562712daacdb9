"""The stream service on in-memory fakes: ordering, resumption and ends on a clock the test
moves (no broker, no sleeping). Heartbeats are the HTTP layer's (tests/test_streaming.py)."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

from gateway.adapters.stores.quotas import MemoryQuotaStore
from gateway.core.cursor import CursorCodec
from gateway.core.lifecycle import build_history
from gateway.core.quotas import QuotaKeys
from gateway.core.receipts import ReceiptPolicy
from gateway.core.records import EncodedBatch, StreamFormat
from gateway.errors import BrokerUnavailable, CursorOutOfRange, GatewayError
from gateway.metrics import GatewayMetrics
from gateway.services.authorization import Partner
from gateway.services.datakeys import DataKeyService
from gateway.services.quotas import QuotaService
from gateway.services.registry import Registry
from gateway.services.streams import (
    PROGRESS_SECONDS,
    BatchCache,
    Start,
    Stream,
    StreamLimits,
    StreamService,
)
from gateway.settings import QuotaSettings
from tests.core.test_contracts import PRODUCTS, PUBLIC
from tests.core.test_lifecycle import contract, statement
from tests.fakes import Clocks, FakeDataKeyStore, FakeLedger, FakeRecord, FakeTopic

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Setup:
    def __init__(
        self,
        receipts: ReceiptPolicy | None = None,
        sign_receipt: Callable[[bytes], str] | None = None,
    ) -> None:
        self.clocks = Clocks()
        self.topic = FakeTopic(2, self.clocks)
        self.ledger = FakeLedger()
        doc, check = contract(1)
        self.registry = Registry(
            products=dict(PRODUCTS),
            keys=dict(PUBLIC),
            histories={"c": build_history("c", [(doc, check)], [])},
        )
        clocks = self.clocks
        self.store = MemoryQuotaStore(clock=clocks.monotonic)
        self.service = StreamService(
            registry=lambda: self.registry,
            sources=self.topic.source,
            codec=CursorCodec(b"k" * 32),
            limits=StreamLimits(),
            ledger=self.ledger,
            quotas=QuotaService(
                self.store,
                QuotaSettings(),
                GatewayMetrics(),
                clock=clocks.wall,
                monotonic=clocks.monotonic,
            ),
            datakeys=DataKeyService(FakeDataKeyStore(), max_records=10, max_age=3600),
            pseudonym_secret=b"p" * 32,
            clock=clocks.wall,
            monotonic=clocks.monotonic,
            receipts=receipts,
            sign_receipt=sign_receipt,
        )

    def partner(self, token_seconds: float = 600) -> Partner:
        expires = self.clocks.now + timedelta(seconds=token_seconds)
        return Partner(org="globex", client_id="globex", token_expires_at=expires)


def events(data: bytes) -> list[tuple[str, dict[str, Any], str | None]]:
    """``(event, data, id)`` of each SSE event in ``data``; a heartbeat is ``heartbeat``."""
    found: list[tuple[str, dict[str, Any], str | None]] = []
    for block in data.decode().split("\n\n"):
        if block.startswith(": heartbeat"):
            found.append(("heartbeat", {}, None))
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"]), fields.get("id")))
    return found


async def collect(
    setup: Setup, partner: Partner, *, cursor: str | None = None, until: Callable[..., bool]
) -> list[tuple[str, dict[str, Any], str | None]]:
    stream = await setup.service.open(
        partner, "c", cursor=cursor, start=Start("earliest"), stream_format=StreamFormat.SSE
    )
    seen: list[tuple[str, dict[str, Any], str | None]] = []
    async with contextlib.aclosing(stream.events()) as chunks:
        async for chunk in chunks:
            seen.extend(events(chunk))
            if until(seen):
                break
    return seen


def orders(*numbers: int) -> list[bytes]:
    return [json.dumps({"order_id": f"o-{n}", "amount": n}).encode() for n in numbers]


async def test_records_arrive_in_partition_order_and_a_cursor_resumes_exactly() -> None:
    setup = Setup()
    setup.topic.append(0, *orders(0, 1, 2))
    setup.topic.append(1, *orders(10, 11))
    first = await collect(setup, setup.partner(), until=lambda seen: len(seen) >= 3)
    records = [(d["partition"], d["offset"]) for e, d, _ in first if e == "record"]
    assert records[:3] == [(0, 0), (0, 1), (0, 2)]
    cursor = first[2][2]
    setup.topic.append(0, *orders(3))
    rest = await collect(setup, setup.partner(), cursor=cursor, until=lambda seen: len(seen) >= 3)
    assert [(d["partition"], d["offset"]) for _, d, _ in rest] == [(0, 3), (1, 0), (1, 1)]
    assert all(set(d["value"]) == {"order_id"} for _, d, _ in first + rest)


async def test_a_quiet_stream_sleeps_until_its_token_expires_then_ends() -> None:
    setup = Setup()
    seen = await collect(
        setup, setup.partner(token_seconds=20), until=lambda seen: seen[-1][0] == "end"
    )
    assert [e for e, _, _ in seen] == ["end"]
    assert setup.clocks.elapsed == pytest.approx(20, abs=0.5), "one wake-up: at the expiry"
    assert seen[-1][1] == {"reason": "token_expired"}
    (delivery,) = setup.ledger.of_kind("stream")
    assert delivery["end_reason"] == "token_expired"
    assert delivery["records"] == 0


async def test_a_contract_that_expires_mid_stream_ends_it_and_the_ledger_says_why() -> None:
    setup = Setup()
    setup.clocks.now = datetime.fromisoformat("2026-12-30T23:59:55+00:00")
    setup.topic.append(0, *orders(1, 2))
    seen = await collect(setup, setup.partner(), until=lambda seen: seen[-1][0] == "end")
    assert [e for e, _, _ in seen] == ["record", "record", "end"]
    assert seen[-1][1]["reason"] == "expired"
    (delivery,) = setup.ledger.of_kind("stream")
    assert (delivery["records"], delivery["end_reason"]) == (2, "expired")
    assert delivery["to"] == {"0": 2, "1": -2}  # partition 1: still at its beginning


async def test_nothing_opens_while_the_ledger_cannot_record() -> None:
    from gateway.errors import LedgerUnavailable

    setup = Setup()
    setup.ledger.broken = "the broker is down"
    with pytest.raises(LedgerUnavailable):
        await collect(setup, setup.partner(), until=lambda seen: True)
    assert setup.topic.sources == [], "no consumer was even created"


async def open_pull(setup: Setup, partner: Partner) -> Stream:
    """A pull on an empty topic: it waits, each empty fetch moving the clock by its timeout."""
    return await setup.service.open(
        partner, "c", cursor=None, start=Start("earliest"), stream_format=StreamFormat.NDJSON,
        kind="pull",
    )  # fmt: skip


async def test_a_pending_pull_ends_when_the_contract_does_and_returns_nothing_after() -> None:
    from gateway.errors import ContractNotActive

    setup = Setup()
    setup.clocks.now = datetime.fromisoformat("2026-12-30T23:59:58+00:00")
    pull = await open_pull(setup, setup.partner())
    with pytest.raises(ContractNotActive) as refused:
        await setup.service.pull(pull, limit=10, wait=30)
    assert refused.value.reason == "expired"
    assert setup.clocks.monotonic() <= 3, "noticed within a second of the contract's end"
    (delivery,) = setup.ledger.of_kind("pull")
    assert (delivery["records"], delivery["end_reason"]) == (0, "expired")


async def test_a_pending_pull_ends_when_the_token_expires() -> None:
    from gateway.errors import AuthenticationFailed

    setup = Setup()
    pull = await open_pull(setup, setup.partner(token_seconds=2))
    with pytest.raises(AuthenticationFailed) as refused:
        await setup.service.pull(pull, limit=10, wait=30)
    assert refused.value.code == "token_expired"
    assert setup.clocks.monotonic() <= 3


async def test_a_live_stream_ends_when_deliveries_cannot_be_recorded_for_the_grace() -> None:
    from gateway.core.lifecycle import LEDGER_GRACE_SECONDS

    setup = Setup()
    setup.topic.append(0, *orders(1))
    stream = await setup.service.open(
        setup.partner(), "c", cursor=None, start=Start("earliest"), stream_format=StreamFormat.SSE
    )
    seen: list[tuple[str, dict[str, Any], str | None]] = []
    async with contextlib.aclosing(stream.events()) as chunks:
        async for chunk in chunks:
            seen.extend(events(chunk))
            if seen[-1][0] == "record":
                setup.ledger.broken = "the broker is gone"
                broke_at = setup.clocks.monotonic()
            if seen[-1][0] == "end":
                break
    assert seen[-1][1]["reason"] == "ledger_unavailable"
    waited = setup.clocks.monotonic() - broke_at
    assert LEDGER_GRACE_SECONDS <= waited <= LEDGER_GRACE_SECONDS + 0.5
    (delivery,) = setup.ledger.of_kind("stream")  # queued for when the ledger is back
    assert (delivery["records"], delivery["end_reason"]) == (1, "ledger_unavailable")


async def test_a_cursor_older_than_retention_starts_at_the_oldest_and_says_what_was_lost() -> None:
    setup = Setup()
    setup.topic.append(0, *orders(*range(10)))
    first = await collect(setup, setup.partner(), until=lambda seen: len(seen) >= 2)
    cursor = first[1][2]  # after offset 1 of partition 0
    setup.topic.oldest[0] = 6  # retention deleted offsets 0..5
    seen = await collect(setup, setup.partner(), cursor=cursor, until=lambda seen: len(seen) >= 5)
    assert seen[0][0] == "gap"
    assert seen[0][1] == {"partition": 0, "first": 2, "last": 5, "reason": "retention"}
    assert [d["offset"] for e, d, _ in seen[1:] if e == "record"] == [6, 7, 8, 9]
    resumed = setup.ledger.of_kind("stream")[-1]
    assert resumed["lost_to_retention"] == {"0": [2, 5]}


async def test_a_cursor_past_the_end_of_a_partition_is_refused_with_where_it_points() -> None:
    """The topic was recreated: reading on from the log end would silently skip records."""
    setup = Setup()
    setup.topic.append(0, *orders(*range(10)))
    first = await collect(setup, setup.partner(), until=lambda seen: len(seen) >= 10)
    setup.topic.logs[0] = orders(100, 101, 102)  # recreated: 3 records, offsets 0..2
    with pytest.raises(CursorOutOfRange) as refused:
        await setup.service.open(
            setup.partner(), "c", cursor=first[-1][2], start=Start("earliest"),
            stream_format=StreamFormat.SSE,
        )  # fmt: skip
    assert refused.value.code == "cursor_out_of_range"
    assert "partition 0" in refused.value.detail
    assert "offset 10" in refused.value.detail
    assert "ends at 3" in refused.value.detail
    assert setup.topic.sources[-1].closed


@pytest.mark.parametrize(
    "failure",
    [
        BrokerUnavailable("the product's topic is gone", code="product_unavailable"),
        CursorOutOfRange("partition 0: offset 4 is no longer in the topic"),
    ],
    ids=["topic_deleted", "position_lost"],
)
async def test_a_source_that_fails_mid_stream_ends_it_with_the_reason(
    failure: GatewayError,
) -> None:
    """The partner is told why (and resumes with its cursor), and the ledger says so."""
    setup = Setup()
    setup.topic.append(0, *orders(*range(3)))

    def broken(seen: list[tuple[str, dict[str, Any], str | None]]) -> bool:
        if len(seen) == 3:
            setup.topic.failure = failure
        return seen[-1][0] == "end"

    seen = await collect(setup, setup.partner(), until=broken)
    assert seen[-1][1] == {"reason": failure.code, "detail": failure.detail}
    (delivery,) = setup.ledger.of_kind("stream")
    assert (delivery["records"], delivery["end_reason"]) == (3, failure.code)
    assert setup.topic.sources[-1].closed


async def test_streams_in_step_share_one_encoding_of_the_same_records() -> None:
    """Encode once, send many: the second stream at the same positions reading the very same
    records gets the first one's bytes, and its cursor moves as if it had encoded them."""
    setup = Setup()
    shared = orders(1, 2, 3)
    records = [FakeRecord(0, n, value) for n, value in enumerate(shared)]
    streams = [await open_pull(setup, setup.partner()) for _ in range(2)]
    for stream in streams:
        stream._source.fetch = lambda *_: _returning(records)  # type: ignore[method-assign]
    first, second = [await stream.fetch(10, 0.1) for stream in streams]
    assert second.data is first.data, "the same bytes object: encoded once"
    assert setup.service._context.batches.hits == 1
    assert streams[1].encoder.cursor() == streams[0].encoder.cursor()
    assert streams[1].encoder.positions == {0: 3, 1: -2}
    for stream in streams:
        await stream.close()


async def test_a_stream_on_a_consumer_of_its_own_keeps_no_encoding_for_others() -> None:
    """A history stream (a catch-up consumer's records, read by it alone) must not fill the
    cache: it had held 330,000 records of one flood alive, and every full collection of the
    interpreter walked them (100-270 ms stalls of every stream)."""
    setup = Setup()
    setup.topic.append(0, *orders(*range(50)))
    stream = await open_pull(setup, setup.partner())
    stream._source.shared = False
    batch = await stream.fetch(10, 0.1)
    assert batch.records == 10
    assert len(setup.service._context.batches) == 0
    await stream.close()


def test_the_encoding_cache_is_bounded_in_bytes() -> None:
    cache = BatchCache(size=100, max_bytes=1000)
    for n in range(5):
        batch = EncodedBatch(b"x" * 400, 1, None, [], [], {})
        cache.put(n, batch, {}, None)
    assert len(cache) == 2, "the oldest go first, down to 1,000 bytes"
    assert cache.get(4) is not None
    assert cache.get(0) is None


async def _returning(records: list[FakeRecord]) -> list[FakeRecord]:
    return records


async def test_open_streams_keep_their_slots_by_one_renewal_for_all_and_lose_them_unrenewed() -> (
    None
):
    setup = Setup()
    quotas = setup.service.quotas
    opened = [
        await setup.service.open(
            setup.partner(), "c", cursor=None, start=Start("latest"), stream_format=StreamFormat.SSE
        )
        for _ in range(2)
    ]
    for _ in range(4):  # 80 s: far past a lease's 30 s, kept by the renewals
        setup.clocks.advance(20)
        await quotas.renew_held()
    assert await setup.store.holders("streams:c:c") == 2
    await opened[0].close()
    setup.clocks.advance(20)
    await quotas.renew_held()
    assert await setup.store.holders("streams:c:c") == 1
    # A replica that stops renewing (it died) frees its slots within the lease.
    setup.clocks.advance(31)
    assert await setup.store.holders("streams:c:c") == 0
    await opened[1].close()


class GatedRenewals(MemoryQuotaStore):
    """A store whose renewal waits for the test: a stream closes while a round is in flight
    (a Redis script for thousands of holders takes that long)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.renewing = anyio.Event()
        self.go = anyio.Event()

    async def renew(self, leases: Mapping[str, Sequence[str]], ttl: float) -> None:
        self.renewing.set()
        await self.go.wait()
        await super().renew(leases, ttl)


async def test_a_stream_that_closes_during_a_renewal_round_does_not_keep_its_slot() -> None:
    setup = Setup()
    gated = GatedRenewals(setup.clocks.monotonic)
    quotas = setup.service.quotas
    quotas.store = gated
    opened = await setup.service.open(
        setup.partner(), "c", cursor=None, start=Start("latest"), stream_format=StreamFormat.SSE
    )
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(quotas.renew_held)
        await gated.renewing.wait()  # the round has its list of holders
        await opened.close()  # ... and this stream's slot is freed meanwhile
        gated.go.set()
    assert await gated.holders("streams:c:c") == 0, "the round must not bring the slot back"


class CountedReservations(MemoryQuotaStore):
    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.reservations = 0

    async def reserve(self, key: str, amount: int, limit: int, expires_at: float) -> int:
        self.reservations += 1
        return await super().reserve(key, amount, limit, expires_at)


async def test_without_a_daily_volume_bytes_are_counted_without_a_store_call_per_batch() -> None:
    """A thousand streams of a contract without a daily volume made a store call (a Redis
    script, with workers) for every batch; the day's count only feeds ``/v1/usage``."""
    setup = Setup()
    counted = CountedReservations(setup.clocks.monotonic)
    quotas = setup.service.quotas
    quotas.store = counted
    setup.topic.append(0, *orders(*range(6)))
    stream = await setup.service.open(
        setup.partner(), "c", cursor=None, start=Start("earliest"), stream_format=StreamFormat.SSE
    )
    sent = 0
    for _ in range(3):
        batch = await stream.fetch(2, 0.0)
        sent += len(batch.data)
    assert counted.reservations == 0, "counted in the process, not per batch"
    doc, _ = contract(1)
    usage = await quotas.usage("globex", [doc])
    assert usage.contracts[0].bytes_today == sent, "this replica's own bytes count at once"
    setup.clocks.advance(1.0)
    setup.topic.append(0, *orders(6))
    sent += len((await stream.fetch(2, 0.0)).data)
    assert counted.reservations == 1, "handed to the store once a second, all together"
    await stream.close()
    assert await counted.volume(QuotaKeys.volume("c", "2026-11-21")) == sent


async def test_a_stream_that_carries_on_still_sees_a_revocation_a_reload_or_a_moment_brings() -> (
    None
):
    """Between changes a stream does not re-check its contract on every wake-up; a reload
    (a new registry), a statement that takes effect at a later moment, or the token's expiry
    each still ends it before another record goes out."""
    setup = Setup()
    doc, check = contract(1)
    revoke_at = setup.clocks.now + timedelta(seconds=30)
    scheduled = statement("suspend", doc.hash, when=revoke_at)
    setup.topic.append(0, *orders(1))
    stream = await setup.service.open(
        setup.partner(), "c", cursor=None, start=Start("earliest"), stream_format=StreamFormat.SSE
    )
    async with contextlib.aclosing(stream.events()) as chunks:
        assert [e for e, _, _ in events(await anext(chunks))] == ["record"]
        # A reload: a new registry, with a statement issued 30 s on (a moment the stream then
        # remembers as the end of its answer).
        setup.registry = Registry(
            products=dict(PRODUCTS), keys=dict(PUBLIC),
            histories={"c": build_history("c", [(doc, check)], [scheduled])},
        )  # fmt: skip
        setup.topic.append(0, *orders(2))
        assert [e for e, _, _ in events(await anext(chunks))] == ["record"]
        setup.clocks.advance(31)
        setup.topic.append(0, *orders(3))
        ended = events(await anext(chunks))
    assert [(e, d.get("reason")) for e, d, _ in ended] == [("end", "suspended")]
    (delivery,) = setup.ledger.of_kind("stream")
    assert (delivery["records"], delivery["end_reason"]) == (2, "suspended")


async def test_a_clock_set_back_before_the_contract_began_ends_the_stream() -> None:
    """The remembered answer holds from the stream's last look on: a wall clock stepped back
    past the contract's start is looked at again, not trusted."""
    setup = Setup()
    setup.topic.append(0, *orders(1))
    stream = await setup.service.open(
        setup.partner(), "c", cursor=None, start=Start("earliest"), stream_format=StreamFormat.SSE
    )
    async with contextlib.aclosing(stream.events()) as chunks:
        assert [e for e, _, _ in events(await anext(chunks))] == ["record"]
        setup.clocks.now = datetime.fromisoformat("2025-12-31T00:00:00+00:00")
        setup.topic.append(0, *orders(2))
        ended = events(await anext(chunks))
    assert [e for e, _, _ in ended] == ["end"]


async def test_streams_opened_together_record_progress_and_sign_receipts_in_different_rounds() -> (
    None
):
    """Streams opened together had recorded their progress in the same round of wake-ups every
    second, and signed their receipts in the same round (a thousand ledger entries or signatures
    in one round doubled it). Each still records within ``PROGRESS_SECONDS``: a replica that
    dies loses at most that much of any delivery."""
    policy = ReceiptPolicy(records=8, seconds=3600.0)
    setup = Setup(receipts=policy, sign_receipt=lambda payload: "signed")
    streams = [
        await setup.service.open(
            setup.partner(), "c", cursor=None, start=Start("earliest"),
            stream_format=StreamFormat.SSE,
        )
        for _ in range(10)  # the contract's concurrency quota
    ]  # fmt: skip
    outputs = [stream.events() for stream in streams]
    step, rounds = 0.125, 25  # (a step that adds up exactly)
    progress: list[list[str]] = []  # per round, the deliveries that recorded progress in it
    receipts: list[list[str]] = []  # per round, the deliveries that signed a receipt in it
    for number in range(rounds):
        setup.topic.append(0, *orders(number))  # one record a round for every stream
        before = len(setup.ledger.entries)
        for output in outputs:
            while b"event: record" not in await anext(output):
                pass  # (the receipt for the batch before)
        entries = setup.ledger.entries[before:]
        progress.append([d["delivery"] for _, k, d in entries if k == "progress"])
        receipts.append([d["delivery"] for _, k, d in entries if k == "receipt"])
        setup.clocks.advance(step)
    for output in outputs:
        await output.aclose()
    assert len(progress[0]) == len(streams), "each delivery is recorded with its first batch"
    assert max(len(r) for r in progress[1:]) <= 3, [len(r) for r in progress]
    first_receipts = [next(n for n, r in enumerate(receipts) if s.delivery in r) for s in streams]
    assert len(set(first_receipts)) >= 7, first_receipts  # in one round, all 10, before
    for stream in streams:
        at = [n for n, deliveries in enumerate(progress) if stream.delivery in deliveries]
        assert max(b - a for a, b in itertools.pairwise(at)) * step <= PROGRESS_SECONDS, at
        assert rounds - 1 - at[-1] < PROGRESS_SECONDS / step, at
        signed = [n for n, deliveries in enumerate(receipts) if stream.delivery in deliveries]
        assert all(b - a == policy.records for a, b in itertools.pairwise(signed)), signed


async def test_a_stream_that_signs_no_receipts_never_waits_for_one() -> None:
    """Without a signer, a stream's wait had come down to a receipt's time and then to zero:
    it spun without end."""
    setup = Setup()  # the default receipt policy, no signer
    setup.topic.append(0, *orders(1))
    stream = await setup.service.open(
        setup.partner(), "c", cursor=None, start=Start("earliest"), stream_format=StreamFormat.SSE
    )
    async with contextlib.aclosing(stream.events(heartbeat=15.0)) as output:
        assert b"event: record" in await anext(output)
        assert await anext(output) == b": heartbeat\n\n"
    assert setup.clocks.elapsed == 15.0
