"""Where client assertion ids are remembered until they expire (RFC 7523 §3 item 7).

``MemoryReplayCache`` remembers them in this process. ``SharedReplayCache`` shares them between
replicas through Redis, so an assertion used at one replica is refused at every other; each id
is kept in this process as well. If Redis does not answer, the local cache still refuses
replays at this replica, and the gateway logs that replays across replicas are not caught
meanwhile. This is the same stance as the quotas: degraded, said aloud, never silently open.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class MemoryReplayCache:
    """Client assertion ids seen by this process until they expire."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def first_use(self, key: str, expires_at: float) -> bool:
        now = self._clock()
        with self._lock:
            if len(self._seen) > 1024:
                self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
            if key in self._seen and self._seen[key] > now:
                return False
            self._seen[key] = expires_at
            return True

    def close(self) -> None:
        """Nothing to release."""


class SharedReplayCache:
    def __init__(self, client: Redis, prefix: str = "exg:jti:") -> None:
        self._redis = client
        self._prefix = prefix
        self._local = MemoryReplayCache()
        self._degraded = False

    @classmethod
    def from_url(cls, url: str, timeout: float) -> SharedReplayCache:
        return cls(Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout))

    def first_use(self, key: str, expires_at: float) -> bool:
        local = self._local.first_use(key, expires_at)
        name = self._prefix + hashlib.sha256(key.encode()).hexdigest()
        try:
            shared = self._redis.set(name, 1, nx=True, exat=math.ceil(expires_at))
        except RedisError as exc:
            if not self._degraded:
                log.warning(
                    "replay cache: Redis unreachable (%s); assertions replayed at another "
                    "replica are not caught until it answers",
                    type(exc).__name__,
                )
                self._degraded = True
            return local
        if self._degraded:
            log.warning("replay cache: Redis answers again")
            self._degraded = False
        return local and bool(shared)

    def close(self) -> None:
        self._redis.close()
