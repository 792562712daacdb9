"""Client assertion ids shared by replicas through Redis, so an assertion used at one replica
is refused at every other (RFC 7523 §3 item 7).

Each id is kept in this process as well. If Redis does not answer, the local cache still refuses
replays at this replica, and the gateway logs that replays across replicas are not caught
meanwhile. This is the same stance as the quotas: degraded, said aloud, never silently open.
"""

from __future__ import annotations

import hashlib
import logging
import math

from redis import Redis
from redis.exceptions import RedisError

from gateway.services.authorization import ReplayCache

log = logging.getLogger(__name__)


class SharedReplayCache:
    def __init__(self, client: Redis, prefix: str = "exg:jti:") -> None:
        self._redis = client
        self._prefix = prefix
        self._local = ReplayCache()
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
