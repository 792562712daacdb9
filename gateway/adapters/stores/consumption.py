"""Where consumption figures live (``services/consumption.py``): in this process, or in Redis
when replicas share them. A Redis failure is ``StoreUnavailable``: the tracker keeps what it
counted for the next flush, and the team's view answers 503."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import StoreUnavailable


class MemoryConsumptionStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._hashes: dict[str, tuple[float, dict[str, str]]] = {}
        self._clock = clock

    async def add(
        self, key: str, counts: Mapping[str, int], values: Mapping[str, str], ttl: float
    ) -> None:
        now = self._clock()
        expires, fields = self._hashes.get(key, (0.0, {}))
        if expires <= now:
            fields = {}
        for name, count in counts.items():
            fields[name] = str(int(fields.get(name, "0")) + count)
        fields.update(values)
        self._hashes[key] = (now + ttl, fields)
        if len(self._hashes) > 100_000:
            self._hashes = {k: v for k, v in self._hashes.items() if v[0] > now}

    async def claim(self, key: str, ttl: float) -> bool:
        now = self._clock()
        expires, _ = self._hashes.get(key, (0.0, {}))
        if expires > now:
            return False
        self._hashes[key] = (now + ttl, {})
        return True

    async def read(self, keys: Sequence[str]) -> list[dict[str, str]]:
        now = self._clock()
        found = (self._hashes.get(key, (0.0, {})) for key in keys)
        return [dict(fields) if expires > now else {} for expires, fields in found]

    async def close(self) -> None:
        """Nothing to release."""


class RedisConsumptionStore:
    def __init__(self, client: Redis, prefix: str = "exg:") -> None:
        self._redis = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, timeout: float) -> RedisConsumptionStore:
        return cls(Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout))

    async def add(
        self, key: str, counts: Mapping[str, int], values: Mapping[str, str], ttl: float
    ) -> None:
        name = self._prefix + key
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for field, count in counts.items():
                    pipe.hincrby(name, field, count)
                if values:
                    mapping: dict[str | bytes, str | bytes] = {k: v for k, v in values.items()}
                    pipe.hset(name, mapping=mapping)  # type: ignore[arg-type]
                pipe.expire(name, math.ceil(ttl))
                await pipe.execute()
        except RedisError:
            raise StoreUnavailable("Redis does not answer (consumption figures)") from None

    async def claim(self, key: str, ttl: float) -> bool:
        try:
            return bool(await self._redis.set(self._prefix + key, b"1", nx=True, ex=math.ceil(ttl)))
        except RedisError:
            raise StoreUnavailable("Redis does not answer (consumption figures)") from None

    async def read(self, keys: Sequence[str]) -> list[dict[str, str]]:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(self._prefix + key)
                found = await pipe.execute()
        except RedisError:
            raise StoreUnavailable("Redis does not answer (consumption figures)") from None
        return [{k.decode(): v.decode() for k, v in h.items()} for h in found]

    async def close(self) -> None:
        await self._redis.aclose()
