"""Where quota state lives: process memory, or Redis shared by all replicas.

Both stores implement ``services.quotas.QuotaStore`` with the same semantics:

- rate buckets are one GCRA number (``core/quotas.py``) that expires when the bucket is full;
- daily volume is a counter per UTC day that expires after the day;
- concurrency is a set of leases (holder → expiry): a stream renews its lease while it runs,
  so the slots of a replica that died free up by themselves after ``ttl`` seconds.

Redis state is changed only inside Lua scripts (atomic per call) and timed by the Redis server's
clock (``TIME``), so replicas with skewed clocks still share one bucket correctly.

``ResilientQuotaStore`` puts the two together: Redis while it answers; when it does not, each
replica enforces ``quota / replicas`` from memory, logs it, and sets the
``gateway_quota_store_degraded`` metric, and it tries Redis again every few seconds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from prometheus_client import Gauge
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from gateway.core.quotas import Rate, admit, throttle

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: How long a degraded replica waits before asking Redis again.
REDIS_RETRY_SECONDS = 2.0


#: Connections to Redis a process keeps at most for its quotas.
POOL_CONNECTIONS = 64
#: How long a call waits for a free connection. Longer than Redis's own timeout: a burst of
#: thousands of streams opening or closing at once queues for the pool, and only Redis not
#: answering (connect or read timeout) counts as an outage. With the wait at the 0.5 s timeout,
#: such a burst flipped the store to per-replica quotas and back every few seconds.
POOL_WAIT_SECONDS = 10.0


class MemoryQuotaStore:
    """Quota state of one process (the default, and the fallback when Redis is unreachable)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._volumes: dict[str, tuple[int, float]] = {}
        self._leases: dict[str, dict[str, float]] = {}
        #: Per lease set, how many holders it had after its last sweep of expired ones.
        self._swept: dict[str, int] = {}
        self._counted: dict[str, float] = {}  # when holders() last swept a set

    def _prune(self, now: float) -> None:
        if len(self._tats) > 4096:
            self._tats = {k: tat for k, tat in self._tats.items() if tat > now}
        if len(self._volumes) > 4096:
            self._volumes = {k: v for k, v in self._volumes.items() if v[1] > now}

    async def throttle(self, key: str, units: float, rate: Rate) -> float:
        now = self._clock()
        self._prune(now)
        self._tats[key], wait = throttle(self._tats.get(key, now), now, units, rate)
        return wait

    async def admit(self, key: str, units: float, rate: Rate) -> float:
        now = self._clock()
        self._prune(now)
        self._tats[key], retry_after = admit(self._tats.get(key, now), now, units, rate)
        return retry_after

    async def debt(self, key: str) -> float:
        now = self._clock()
        return max(0.0, self._tats.get(key, now) - now)

    async def reserve(self, key: str, amount: int, limit: int, expires_at: float) -> int:
        used = await self.volume(key)
        granted = max(0, min(amount, limit - used))
        self._volumes[key] = (used + granted, expires_at)
        return granted

    async def give_back(self, key: str, amount: int) -> None:
        used, expires_at = self._volumes.get(key, (0, 0.0))
        self._volumes[key] = (max(0, used - amount), expires_at)

    async def volume(self, key: str) -> int:
        used, expires_at = self._volumes.get(key, (0, 0.0))
        return used if expires_at > self._clock() else 0

    async def lease(self, keys: list[tuple[str, int | None]], holder: str, ttl: float) -> int:
        """A renewal touches only its own holder: expired holders are swept when a set looks
        full, or has doubled since the last sweep (a sweep on every renewal made 10,000 streams
        cost a whole core)."""
        now = self._clock()
        for index, (key, limit) in enumerate(keys):
            held = self._leases.setdefault(key, {})
            if len(held) >= 2 * self._swept.get(key, 64):
                self._sweep(key, now)
            if holder not in held and limit is not None and len(held) >= limit:
                self._sweep(key, now)
                if len(held) >= limit:
                    return index + 1
        for key, _ in keys:
            self._leases[key][holder] = now + ttl
        return 0

    def _sweep(self, key: str, now: float) -> None:
        held = self._leases[key]
        for other in [h for h, expiry in held.items() if expiry <= now]:
            del held[other]
        self._swept[key] = max(64, len(held))

    async def release(self, keys: list[str], holder: str) -> None:
        for key in keys:
            self._leases.get(key, {}).pop(holder, None)

    async def renew(self, leases: Mapping[str, Sequence[str]], ttl: float) -> None:
        expiry = self._clock() + ttl
        for holder, keys in leases.items():
            for key in keys:
                self._leases.setdefault(key, {})[holder] = expiry

    async def holders(self, key: str) -> int:
        """Expired holders are swept at most once a second per set (counting them on every
        call made opening 10,000 streams quadratic); a count may include a lease that ran
        out within the last second."""
        held = self._leases.get(key)
        if not held:
            return 0
        now = self._clock()
        if now >= self._counted.get(key, -math.inf) + 1.0:
            self._sweep(key, now)
            self._counted[key] = now
        return len(held)

    async def close(self) -> None:
        return None


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS[1] bucket; ARGV units, interval, burst, mode ("throttle" | "admit").
# Returns the wait (throttle) or the retry-after (admit; "0" = admitted) as a string, because
# Lua numbers returned to Redis are truncated to integers.
_GCRA = (
    _NOW
    + """
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[1]) * tonumber(ARGV[2])
local over = new_tat - now - tonumber(ARGV[3])
if ARGV[4] == 'admit' and over > 0.000001 then return tostring(over) end
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX',
           math.ceil((new_tat - now) * 1000) + 1000)
if over < 0 then over = 0 end
if ARGV[4] == 'admit' then return '0' end
return tostring(over)
"""
)

_DEBT = (
    _NOW
    + """
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then return '0' end
return tostring(tat - now)
"""
)

# KEYS[1] day counter; ARGV amount, limit, expires_at (Unix seconds). Returns what was granted.
_RESERVE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local granted = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - used)
if granted < 0 then granted = 0 end
redis.call('INCRBY', KEYS[1], granted)
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return granted
"""

# KEYS lease sets; ARGV holder, ttl, then one limit per key (-1: none).
# Returns 0 when leased in every set, else the 1-based index of the full set.
_LEASE = (
    _NOW
    + """
local holder, ttl = ARGV[1], tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local limit = tonumber(ARGV[2 + i])
  if limit >= 0 and not redis.call('ZSCORE', key, holder)
     and redis.call('ZCARD', key) >= limit then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, holder)
  redis.call('EXPIRE', key, math.ceil(ttl) * 2)
end
return 0
"""
)

# KEYS the lease sets; ARGV ttl, then (index into KEYS, holder) pairs.
_RENEW = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[tonumber(ARGV[i])], now + ttl, ARGV[i + 1])
end
for _, key in ipairs(KEYS) do
  redis.call('EXPIRE', key, math.ceil(ttl) * 2)
end
return 0
"""
)
#: Holders renewed per script call.
RENEW_CHUNK = 1000

_HOLDERS = (
    _NOW
    + """
return redis.call('ZCOUNT', KEYS[1], now, '+inf')
"""
)


class RedisQuotaStore:
    """Quota state shared by every replica through one Redis (keys under ``prefix``)."""

    def __init__(self, client: Redis, prefix: str = "exg:") -> None:
        self._redis = client
        self._prefix = prefix
        self._gcra = client.register_script(_GCRA)
        self._debt = client.register_script(_DEBT)
        self._reserve = client.register_script(_RESERVE)
        self._lease = client.register_script(_LEASE)
        self._holders = client.register_script(_HOLDERS)
        self._renew = client.register_script(_RENEW)

    @classmethod
    def from_url(cls, url: str, timeout: float) -> RedisQuotaStore:
        # A blocking pool: a burst of streams opening at once waits for a connection instead of
        # failing with MaxConnectionsError (which read as an outage).
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_CONNECTIONS,
            timeout=POOL_WAIT_SECONDS,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )
        return cls(Redis.from_pool(pool))  # the client owns the pool: closing it closes both

    async def throttle(self, key: str, units: float, rate: Rate) -> float:
        args: list[str | float] = [units, rate.interval, rate.burst, "throttle"]
        return float(await self._gcra(keys=[self._prefix + key], args=args))

    async def admit(self, key: str, units: float, rate: Rate) -> float:
        args: list[str | float] = [units, rate.interval, rate.burst, "admit"]
        return float(await self._gcra(keys=[self._prefix + key], args=args))

    async def debt(self, key: str) -> float:
        return float(await self._debt(keys=[self._prefix + key]))

    async def reserve(self, key: str, amount: int, limit: int, expires_at: float) -> int:
        args = [amount, limit, math.ceil(expires_at)]
        return int(await self._reserve(keys=[self._prefix + key], args=args))

    async def give_back(self, key: str, amount: int) -> None:
        if amount > 0:
            await self._redis.decrby(self._prefix + key, amount)

    async def volume(self, key: str) -> int:
        value = await self._redis.get(self._prefix + key)
        return int(value) if value is not None else 0

    async def lease(self, keys: list[tuple[str, int | None]], holder: str, ttl: float) -> int:
        names = [self._prefix + key for key, _ in keys]
        limits = [-1 if limit is None else limit for _, limit in keys]
        return int(await self._lease(keys=names, args=[holder, ttl, *limits]))

    async def release(self, keys: list[str], holder: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrem(self._prefix + key, holder)
            await pipe.execute()

    async def renew(self, leases: Mapping[str, Sequence[str]], ttl: float) -> None:
        """One script per ``RENEW_CHUNK`` holders (Redis runs a script alone: keep each short)."""
        holders = list(leases.items())
        for at in range(0, len(holders), RENEW_CHUNK):
            names: dict[str, int] = {}
            args: list[str | float] = [ttl]
            for holder, keys in holders[at : at + RENEW_CHUNK]:
                for key in keys:
                    index = names.setdefault(self._prefix + key, len(names) + 1)
                    args += [index, holder]
            await self._renew(keys=list(names), args=args)

    async def holders(self, key: str) -> int:
        return int(await self._holders(keys=[self._prefix + key]))

    async def close(self) -> None:
        await self._redis.aclose()


class ResilientQuotaStore:
    """Redis while it answers; per-replica limits (``quota / replicas``) from memory when not.

    Volume delivered while degraded is added to the Redis counters when Redis is back, so the
    day's total stays right.
    """

    def __init__(
        self,
        primary: RedisQuotaStore,
        replicas: int,
        degraded: Gauge | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: ``gateway_quota_store_degraded``: 1 while this replica enforces quotas on its own.
        self._degraded = degraded or Gauge("unregistered", "", registry=None)
        self._primary = primary
        self._fallback = MemoryQuotaStore()
        self._replicas = max(1, replicas)
        self._clock = clock
        self._retry_at: float | None = None  # set while degraded
        self._unsynced: dict[str, tuple[int, float]] = {}
        #: Releases Redis has not heard yet, by holder.
        self._unreleased: dict[str, list[str]] = {}
        self._recovering = False
        self._degraded.set(0)

    @property
    def degraded(self) -> bool:
        return self._retry_at is not None

    def _failed(self, exc: RedisError) -> None:
        if self._retry_at is None:
            log.warning(
                "quota store: Redis unreachable (%s); enforcing quota/%d per replica until it "
                "answers again",
                type(exc).__name__,
                self._replicas,
            )
            self._degraded.set(1)
        self._retry_at = self._clock() + REDIS_RETRY_SECONDS

    async def _use_primary(self) -> bool:
        if self._retry_at is None:
            return True
        if self._clock() < self._retry_at or self._recovering:
            return False  # one request tries Redis again; the others go on locally meanwhile
        self._recovering = True
        # Hand over what was delivered meanwhile, once: taken out before the first await, so
        # that nothing recorded locally during the hand-over is lost or handed over twice.
        handing, self._unsynced = self._unsynced, {}
        try:
            while handing:
                key, (amount, expires_at) = next(iter(handing.items()))
                await self._primary.reserve(key, amount, 2**62, expires_at)
                del handing[key]
                if not handing:  # what other requests recorded locally meanwhile
                    handing, self._unsynced = self._unsynced, {}
        except RedisError as exc:
            for key, (amount, expires_at) in handing.items():  # back, with what came since
                pending, _ = self._unsynced.get(key, (0, expires_at))
                self._unsynced[key] = (pending + amount, expires_at)
            self._failed(exc)
            return False
        finally:
            self._recovering = False
        log.warning("quota store: Redis answers again; quotas are shared across replicas")
        self._degraded.set(0)
        self._retry_at = None
        return True

    def _share(self, rate: Rate) -> Rate:
        return replace(rate, per_second=rate.per_second / self._replicas)

    def _limit(self, limit: int) -> int:
        return max(1, limit // self._replicas)

    async def _either(
        self, primary: Callable[[], Awaitable[_T]], fallback: Callable[[], Awaitable[_T]]
    ) -> _T:
        if await self._use_primary():
            try:
                return await primary()
            except RedisError as exc:
                self._failed(exc)
        return await fallback()

    async def throttle(self, key: str, units: float, rate: Rate) -> float:
        return await self._either(
            lambda: self._primary.throttle(key, units, rate),
            lambda: self._fallback.throttle(key, units, self._share(rate)),
        )

    async def admit(self, key: str, units: float, rate: Rate) -> float:
        return await self._either(
            lambda: self._primary.admit(key, units, rate),
            lambda: self._fallback.admit(key, units, self._share(rate)),
        )

    async def debt(self, key: str) -> float:
        return await self._either(lambda: self._primary.debt(key), lambda: self._fallback.debt(key))

    async def reserve(self, key: str, amount: int, limit: int, expires_at: float) -> int:
        async def locally() -> int:
            granted = await self._fallback.reserve(key, amount, self._limit(limit), expires_at)
            pending, _ = self._unsynced.get(key, (0, expires_at))
            self._unsynced[key] = (pending + granted, expires_at)
            return granted

        return await self._either(
            lambda: self._primary.reserve(key, amount, limit, expires_at), locally
        )

    async def give_back(self, key: str, amount: int) -> None:
        async def locally() -> None:
            await self._fallback.give_back(key, amount)
            if key in self._unsynced:
                pending, expires_at = self._unsynced[key]
                self._unsynced[key] = (max(0, pending - amount), expires_at)

        await self._either(lambda: self._primary.give_back(key, amount), locally)

    async def volume(self, key: str) -> int:
        return await self._either(
            lambda: self._primary.volume(key), lambda: self._fallback.volume(key)
        )

    async def lease(self, keys: list[tuple[str, int | None]], holder: str, ttl: float) -> int:
        async def shared() -> int:
            full = await self._primary.lease(keys, holder, ttl)
            if not full:  # mirrored, so a degraded replica knows the streams it runs
                await self._fallback.lease([(key, None) for key, _ in keys], holder, ttl)
            return full

        own = [(key, None if limit is None else self._limit(limit)) for key, limit in keys]
        return await self._either(shared, lambda: self._fallback.lease(own, holder, ttl))

    async def release(self, keys: list[str], holder: str) -> None:
        await self._fallback.release(keys, holder)
        self._unreleased[holder] = keys  # until Redis has heard it

        async def shared() -> None:
            await self._primary.release(keys, holder)
            self._unreleased.pop(holder, None)

        await self._either(shared, _nothing)

    async def _release_in_redis(self) -> None:
        """Make the releases Redis did not hear (a lease left there would hold its slot until
        it expires: 30 s of refusals after thousands of streams closed at once). Once per
        renewal round, not per release: a burst of closes would each repeat all the others'."""
        if not self._unreleased:
            return

        async def shared() -> None:
            for holder, keys in list(self._unreleased.items()):
                await self._primary.release(keys, holder)
                self._unreleased.pop(holder, None)

        await self._either(shared, _nothing)

    async def renew(self, leases: Mapping[str, Sequence[str]], ttl: float) -> None:
        await self._fallback.renew(leases, ttl)  # mirrored, as leases are
        await self._release_in_redis()  # every round: a missed release waits 10 s at most
        await self._either(lambda: self._primary.renew(leases, ttl), _nothing)

    async def holders(self, key: str) -> int:
        return await self._either(
            lambda: self._primary.holders(key), lambda: self._fallback.holders(key)
        )

    async def close(self) -> None:
        await self._primary.close()


async def _nothing() -> None:
    return None
