"""The memory and Redis quota stores keep the same semantics (one test, both stores), and the
resilient store falls back to a per-replica share when Redis does not answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import anyio
import pytest

from gateway.adapters.stores.quotas import MemoryQuotaStore, RedisQuotaStore, ResilientQuotaStore
from gateway.core.quotas import Rate
from gateway.services.quotas import QuotaStore
from tests.redis_server import RedisServer
from tests.tcp_proxy import TcpProxy

StoreFactory = Callable[[], QuotaStore]


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
    if request.param == "memory":
        yield MemoryQuotaStore
        return
    server = RedisServer()
    server.start()
    yield lambda: RedisQuotaStore.from_url(server.url, timeout=1.0)
    server.stop()


def run(factory: StoreFactory, scenario: Callable[[QuotaStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = factory()
        try:
            await scenario(store)
        finally:
            await store.close()

    anyio.run(main)


def test_daily_volume_is_reserved_atomically_and_never_beyond_the_limit(
    make_store: StoreFactory,
) -> None:
    async def scenario(store: QuotaStore) -> None:
        far = 4_000_000_000.0
        assert await store.reserve("day:c", 600, 1000, far) == 600
        assert await store.reserve("day:c", 600, 1000, far) == 400  # only what is left
        assert await store.reserve("day:c", 1, 1000, far) == 0
        await store.give_back("day:c", 150)
        assert await store.volume("day:c") == 850
        assert await store.volume("day:other") == 0

    run(make_store, scenario)


def test_leases_count_per_key_and_free_on_release(make_store: StoreFactory) -> None:
    async def scenario(store: QuotaStore) -> None:
        keys: list[tuple[str, int | None]] = [("streams:c:x", 2), ("streams:o:org", 3)]
        assert await store.lease(keys, "one", 30) == 0
        assert await store.lease(keys, "two", 30) == 0
        assert await store.lease(keys, "three", 30) == 1  # the contract's set is full
        assert await store.lease(keys, "one", 30) == 0  # a renewal is never refused
        other: list[tuple[str, int | None]] = [("streams:c:y", 5), ("streams:o:org", 3)]
        assert await store.lease(other, "four", 30) == 0
        assert await store.lease(other, "five", 30) == 2  # the organisation's set is full
        await store.release(["streams:c:x", "streams:o:org"], "one")
        assert await store.holders("streams:c:x") == 1
        assert await store.lease(keys, "three", 30) == 0

    run(make_store, scenario)


def test_admission_allows_the_burst_then_refuses_with_the_wait(make_store: StoreFactory) -> None:
    async def scenario(store: QuotaStore) -> None:
        rate = Rate(1.0, burst=3.0)
        waits = [await store.admit("token:c", 1, rate) for _ in range(4)]
        assert waits[:3] == [0.0, 0.0, 0.0]
        assert 0.9 < waits[3] <= 1.0
        assert await store.admit("token:other", 1, rate) == 0.0
        # Throttling charges what was sent and says how long to wait.
        throttle_rate = Rate(100.0)
        assert await store.throttle("rec:c", 10, throttle_rate) == 0.0
        assert 0.09 < await store.throttle("rec:c", 10, throttle_rate) <= 0.1
        assert 0.1 < await store.debt("rec:c") <= 0.2

    run(make_store, scenario)


def test_without_redis_each_replica_enforces_its_share() -> None:
    server = RedisServer()  # never started: nothing listens on its port

    async def scenario() -> None:
        store = ResilientQuotaStore(RedisQuotaStore.from_url(server.url, timeout=0.2), 2)
        far = 4_000_000_000.0
        assert await store.reserve("day:c", 800, 1000, far) == 500  # 1000 / 2 replicas
        assert store.degraded
        keys: list[tuple[str, int | None]] = [("streams:c:x", 3), ("streams:o:org", None)]
        assert await store.lease(keys, "one", 30) == 0
        assert await store.lease(keys, "two", 30) == 1  # 3 // 2 = 1 stream per replica
        # 10 records/s shared by 2 replicas: 5 per second here.
        assert 1.9 < await store.throttle("rec:c", 10 + 0.5, Rate(10.0)) <= 2.0
        await store.close()

    anyio.run(scenario)


def test_many_requests_at_once_when_redis_comes_back_hand_over_exactly_once() -> None:
    """The day's volume delivered while Redis was away is handed over when it answers again.
    1,000 streams reserving at that moment each used to replay it (a KeyError in all but one,
    a 500 to their partners, and the volume counted several times)."""
    server = RedisServer()
    now = [0.0]

    async def scenario() -> None:
        store = ResilientQuotaStore(
            RedisQuotaStore.from_url(server.url, timeout=0.2), 1, clock=lambda: now[0]
        )
        far = 4_000_000_000.0
        assert await store.reserve("day:c", 100, 10_000, far) == 100  # Redis away: locally
        assert store.degraded
        server.start()
        now[0] += 60  # past the retry time
        async with anyio.create_task_group() as tasks:
            for _ in range(50):
                tasks.start_soon(store.reserve, "day:c", 10, 10_000, far)
        assert not store.degraded
        assert await store.volume("day:c") == 100 + 50 * 10, "handed over once, nothing lost"
        await store.close()

    try:
        anyio.run(scenario)
    finally:
        server.stop()


def test_renewal_extends_each_holders_leases_in_one_call(make_store: StoreFactory) -> None:
    async def scenario(store: QuotaStore) -> None:
        keys: list[tuple[str, int | None]] = [("streams:c:x", 5), ("streams:o:org", 5)]
        # Leases that have already run out (ttl -1): as if their replica stopped renewing.
        for holder in ("one", "two", "three"):
            assert await store.lease(keys, holder, -1) == 0
        assert await store.holders("streams:c:x") == 0
        names = [key for key, _ in keys]
        await store.renew({"one": names, "two": names[1:]}, 30)
        assert await store.holders("streams:c:x") == 1
        assert await store.holders("streams:o:org") == 2

    run(make_store, scenario)


def test_a_release_redis_did_not_hear_is_made_when_it_answers_again() -> None:
    """A stream that closes while Redis is away (or its connection pool is exhausted) must not
    hold its slot until the lease expires: the release is kept and made at the next chance."""
    server = RedisServer()
    server.start()
    proxy = TcpProxy(server.port)
    now = [0.0]

    async def scenario() -> None:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        store = ResilientQuotaStore(
            RedisQuotaStore.from_url(url, timeout=0.2), 1, clock=lambda: now[0]
        )
        direct = RedisQuotaStore.from_url(server.url, timeout=1.0)
        try:
            assert await store.lease([("streams:c:x", 5)], "one", 30) == 0
            proxy.cut()
            await store.release(["streams:c:x"], "one")  # Redis does not hear it
            assert store.degraded
            assert await direct.holders("streams:c:x") == 1
            proxy.restore()
            now[0] += 60  # past the retry time
            await store.renew({}, 30)  # the process's next renewal round, with no stream left
            assert await direct.holders("streams:c:x") == 0
        finally:
            await store.close()
            await direct.close()

    try:
        anyio.run(scenario)
    finally:
        proxy.close()
        server.stop()
