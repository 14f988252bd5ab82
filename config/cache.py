"""The rate limiters' cache: Redis, shared by every replica, or this process's memory while Redis
cannot be reached.

A limiter must neither fail a parent's page when Redis is down nor make each request wait for
Redis's timeout: after a connection error this process counts in its own memory for
``RETRY_REDIS_AFTER_SECONDS`` (limits per replica instead of shared: still a limit), then tries
Redis again. Without REDIS_URL (``make run``) settings use a local-memory cache directly.
"""

from __future__ import annotations

import logging
import threading
import time

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

RETRY_REDIS_AFTER_SECONDS = 10.0


class RedisWithLocalFallbackCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._local = LocMemCache(f"fallback:{server}", {"OPTIONS": {"MAX_ENTRIES": 10_000}})
        self._redis_down_until = 0.0
        self._lock = threading.Lock()

    def _call(self, name: str, *args, **kwargs):
        if time.monotonic() >= self._redis_down_until:
            try:
                return getattr(super(), name)(*args, **kwargs)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                with self._lock:
                    self._redis_down_until = time.monotonic() + RETRY_REDIS_AFTER_SECONDS
                logger.warning(
                    "rate limits: Redis unreachable (%s); counting in this process for %.0f s",
                    type(exc).__name__,
                    RETRY_REDIS_AFTER_SECONDS,
                )
        return getattr(self._local, name)(*args, **kwargs)

    def add(self, *args, **kwargs):
        return self._call("add", *args, **kwargs)

    def get(self, *args, **kwargs):
        return self._call("get", *args, **kwargs)

    def set(self, *args, **kwargs):
        return self._call("set", *args, **kwargs)

    def incr(self, *args, **kwargs):
        return self._call("incr", *args, **kwargs)

    def delete(self, *args, **kwargs):
        return self._call("delete", *args, **kwargs)

    def clear(self):
        self._local.clear()
        return self._call("clear")
