"""Where ``Idempotency-Key`` entries of the publishing API live for their window.

``MemoryIdempotencyStore`` keeps them in this process (one replica). ``RedisIdempotencyStore``
shares them between replicas, so a retry that lands on another replica is answered from the
same entry. Unlike the replay cache there is no degraded mode: when Redis does not answer, a
request carrying a key is refused (``503``) rather than risk writing its records twice.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson
from redis import Redis
from redis.exceptions import RedisError

from gateway.errors import StoreUnavailable
from gateway.services.publishing import IdempotencyEntry


class MemoryIdempotencyStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._entries: dict[str, tuple[float, IdempotencyEntry]] = {}
        self._claims: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def claim(self, key: str, ttl: float) -> bool:
        now = self._clock()
        with self._lock:
            if self._claims.get(key, 0.0) > now:
                return False
            self._claims[key] = now + ttl
            return True

    def release(self, key: str) -> None:
        with self._lock:
            self._claims.pop(key, None)

    def get(self, key: str) -> IdempotencyEntry | None:
        with self._lock:
            found = self._entries.get(key)
        return found[1] if found and found[0] > self._clock() else None

    def put(self, key: str, entry: IdempotencyEntry, ttl: float) -> None:
        now = self._clock()
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            self._entries[key] = (now + ttl, entry)

    def close(self) -> None:
        """Nothing to release."""


class RedisIdempotencyStore:
    def __init__(self, client: Redis, prefix: str = "exg:idem:") -> None:
        self._redis = client
        self._prefix = prefix
        self._holder = uuid.uuid4().hex

    @classmethod
    def from_url(cls, url: str, timeout: float) -> RedisIdempotencyStore:
        return cls(Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout))

    def _name(self, key: str) -> str:
        return self._prefix + hashlib.sha256(key.encode()).hexdigest()

    def claim(self, key: str, ttl: float) -> bool:
        with _unavailable():
            return bool(
                self._redis.set(
                    self._name(key) + ":claim", self._holder, nx=True, px=math.ceil(ttl * 1000)
                )
            )

    def release(self, key: str) -> None:
        with _unavailable():
            self._redis.delete(self._name(key) + ":claim")

    def get(self, key: str) -> IdempotencyEntry | None:
        with _unavailable():
            raw = self._redis.get(self._name(key))
        return IdempotencyEntry.from_json(orjson.loads(raw)) if raw else None

    def put(self, key: str, entry: IdempotencyEntry, ttl: float) -> None:
        with _unavailable():
            self._redis.set(
                self._name(key), orjson.dumps(entry.as_json()), px=math.ceil(ttl * 1000)
            )

    def close(self) -> None:
        self._redis.close()


@contextmanager
def _unavailable() -> Iterator[None]:
    """A Redis failure as the gateway's 503 (the request is safe to retry)."""
    try:
        yield
    except RedisError:
        raise StoreUnavailable(
            "the idempotency store (Redis) does not answer; retry with the same key"
        ) from None
