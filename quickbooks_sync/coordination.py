"""What every worker of every process must agree on, kept in Redis: the per-company rate limiter,
the pause after a 429, and short-lived locks (one sync lane per school, one token refresh per
connection).

docs/reference/quickbooks.md §4.1: per company, 500 requests a minute, 10 a second, 10 at once, and 40 batch calls
a minute. The limiter enforces all of them *before* a request is sent, in one atomic Lua script
on Redis' own clock, so workers on different hosts agree. Without ``REDIS_URL`` (development,
inline tasks in one process) an in-process stand-in with the same rules is used.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import redis
from django.conf import settings

from quickbooks_sync.errors import QboThrottled


@dataclass(frozen=True)
class Limits:
    per_minute: int
    per_second: int
    concurrent: int
    batch_per_minute: int
    # Window lengths in milliseconds (shrunk by QBO_LIMIT_TIME_SCALE).
    minute_ms: int
    second_ms: int

    @classmethod
    def from_settings(cls) -> Limits:
        # Counts are Intuit's; each window is longer by QBO_LIMIT_MARGIN_MS (real time, not
        # scaled). Intuit counts arrivals, we count departures: a burst let through the moment
        # the previous one ages out of *our* window could, a few milliseconds of network jitter
        # later, land in the same window as it at Intuit. A margin of time absorbs that jitter;
        # a smaller count would not (the next burst would still leave exactly one window later).
        margin = settings.QBO_LIMIT_MARGIN_MS
        scale = settings.QBO_LIMIT_TIME_SCALE
        return cls(
            per_minute=max(1, settings.QBO_LIMIT_PER_MINUTE),
            per_second=max(1, settings.QBO_LIMIT_PER_SECOND),
            # A slot is held from before the request is sent until its answer is read.
            concurrent=max(1, settings.QBO_LIMIT_CONCURRENT),
            batch_per_minute=max(1, settings.QBO_LIMIT_BATCH_PER_MINUTE),
            minute_ms=max(1, round(60_000 / scale + margin)),
            second_ms=max(1, round(1000 / scale + margin)),
        )


# KEYS: requests (zset: slot -> sent at), in flight (zset: slot -> lease end), pause (ms), batch
# calls (zset). Returns 0 when the slot was taken, else how many ms to wait before asking again.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pause = tonumber(redis.call('GET', KEYS[3]) or '0')
if pause > now then return pause - now end
local per_min, per_sec, concurrent, batch_per_min = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local wmin, wsec, lease = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local slot, is_batch = ARGV[8], ARGV[9] == '1'
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - wmin)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local wait, limited = 0, false
local n = redis.call('ZCARD', KEYS[1])
if n >= per_min then
  local e = redis.call('ZRANGE', KEYS[1], n - per_min, n - per_min, 'WITHSCORES')
  wait = math.max(wait, tonumber(e[2]) + wmin - now); limited = true
end
local ns = redis.call('ZCOUNT', KEYS[1], '(' .. (now - wsec), '+inf')
if ns >= per_sec then
  local e = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - wsec), '+inf', 'WITHSCORES', 'LIMIT', ns - per_sec, 1)
  wait = math.max(wait, tonumber(e[2]) + wsec - now); limited = true
end
if redis.call('ZCARD', KEYS[2]) >= concurrent then
  wait = math.max(wait, math.max(2, math.floor(wsec / 20))); limited = true
end
if is_batch then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - wmin)
  local nb = redis.call('ZCARD', KEYS[4])
  if nb >= batch_per_min then
    local e = redis.call('ZRANGE', KEYS[4], nb - batch_per_min, nb - batch_per_min, 'WITHSCORES')
    wait = math.max(wait, tonumber(e[2]) + wmin - now); limited = true
  end
end
if limited then return math.max(wait, 1) end
redis.call('ZADD', KEYS[1], now, slot)
redis.call('PEXPIRE', KEYS[1], wmin + 1000)
redis.call('ZADD', KEYS[2], now + lease, slot)
redis.call('PEXPIRE', KEYS[2], lease + 1000)
if is_batch then
  redis.call('ZADD', KEYS[4], now, slot)
  redis.call('PEXPIRE', KEYS[4], wmin + 1000)
end
return 0
"""

_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ms > current then redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 1000) end
return until_ms
"""

_STATS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wmin = tonumber(ARGV[1])
local pause = tonumber(redis.call('GET', KEYS[3]) or '0')
return {redis.call('ZCOUNT', KEYS[1], '(' .. (now - wmin), '+inf'), redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf'), math.max(0, pause - now)}
"""

# Release a lock only if we still hold it; renew likewise.
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"
_RENEW = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end"
)


def _keys(realm: str) -> list[str]:
    return [
        f"qbo:rate:{realm}:sent",
        f"qbo:rate:{realm}:inflight",
        f"qbo:rate:{realm}:pause",
        f"qbo:rate:{realm}:batch",
    ]


class Lock:
    """A held lock; ``renew`` extends it, ``release`` lets go (only if still ours)."""

    def __init__(self, coordinator: Coordinator, name: str, token: str, ttl: float) -> None:
        self.coordinator, self.name, self.token, self.ttl = coordinator, name, token, ttl

    def renew(self) -> bool:
        return self.coordinator._renew(self.name, self.token, self.ttl)

    def release(self) -> None:
        self.coordinator._release(self.name, self.token)


class Coordinator:
    """The interface; ``RedisCoordinator`` in production, ``LocalCoordinator`` without Redis."""

    lease_seconds = 150.0  # a crashed holder's concurrency slot frees itself after this

    # Rate limiting ------------------------------------------------------------------------------
    def _try_acquire(self, realm: str, slot: str, limits: Limits, *, batch: bool) -> int:
        raise NotImplementedError

    def release_slot(self, realm: str, slot: str) -> None:
        raise NotImplementedError

    def pause(self, realm: str, seconds: float) -> None:
        """Stop every request to this company for ``seconds`` (after a 429)."""
        raise NotImplementedError

    def stats(self, realm: str) -> dict:
        """Requests sent in the last minute, requests in flight, seconds of pause left."""
        raise NotImplementedError

    def acquire_slot(self, realm: str, *, batch: bool = False, max_wait: float | None = None) -> str:
        """Wait until a request to ``realm`` is within every limit, then take a slot for it.
        Raises ``QboThrottled(sent=False)`` when that would take longer than ``max_wait``."""
        limits = Limits.from_settings()
        max_wait = settings.QBO_LIMIT_MAX_WAIT_SECONDS if max_wait is None else max_wait
        deadline = time.monotonic() + max_wait
        slot = uuid.uuid4().hex
        while True:
            wait_ms = self._try_acquire(realm, slot, limits, batch=batch)
            if wait_ms <= 0:
                return slot
            wait = wait_ms / 1000
            if time.monotonic() + wait > deadline:
                raise QboThrottled(
                    f"QuickBooks limit for company {realm} reached; retry in {wait:.1f} s", retry_after=wait, sent=False
                )
            # A little jitter so waiting workers do not all ask again in the same millisecond.
            time.sleep(wait * random.uniform(1.0, 1.1))

    @contextmanager
    def slot(self, realm: str, *, batch: bool = False):
        slot = self.acquire_slot(realm, batch=batch)
        try:
            yield slot
        finally:
            self.release_slot(realm, slot)

    # Locks and flags ------------------------------------------------------------------------------
    def try_lock(self, name: str, ttl: float) -> Lock | None:
        raise NotImplementedError

    def lock(self, name: str, *, ttl: float, wait: float) -> Lock | None:
        """Block up to ``wait`` seconds for the lock; None if it stayed taken."""
        deadline = time.monotonic() + wait
        delay = 0.005
        while True:
            held = self.try_lock(name, ttl)
            if held is not None or time.monotonic() >= deadline:
                return held
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _renew(self, name: str, token: str, ttl: float) -> bool:
        raise NotImplementedError

    def _release(self, name: str, token: str) -> None:
        raise NotImplementedError

    def flag_set(self, name: str, ttl: float = 3600) -> None:
        raise NotImplementedError

    def flag_take(self, name: str) -> bool:
        """Clear the flag; True if it was set."""
        raise NotImplementedError

    def flag_set_new(self, name: str, ttl: float) -> bool:
        """Set the flag unless it is set; True if this call set it."""
        raise NotImplementedError


class RedisCoordinator(Coordinator):
    def __init__(self, url: str) -> None:
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._pause = self.redis.register_script(_PAUSE)
        self._stats = self.redis.register_script(_STATS)
        self._release_script = self.redis.register_script(_RELEASE)
        self._renew_script = self.redis.register_script(_RENEW)

    def _try_acquire(self, realm: str, slot: str, limits: Limits, *, batch: bool) -> int:
        args = [
            limits.per_minute,
            limits.per_second,
            limits.concurrent,
            limits.batch_per_minute,
            limits.minute_ms,
            limits.second_ms,
            int(self.lease_seconds * 1000),
            slot,
            "1" if batch else "0",
        ]
        return int(self._acquire(keys=_keys(realm), args=args))

    def release_slot(self, realm: str, slot: str) -> None:
        self.redis.zrem(_keys(realm)[1], slot)

    def pause(self, realm: str, seconds: float) -> None:
        self._pause(keys=[_keys(realm)[2]], args=[max(1, int(seconds * 1000))])

    def stats(self, realm: str) -> dict:
        sent, in_flight, pause_ms = self._stats(keys=_keys(realm), args=[Limits.from_settings().minute_ms])
        return {"last_minute": int(sent), "in_flight": int(in_flight), "paused_for": int(pause_ms) / 1000}

    def try_lock(self, name: str, ttl: float) -> Lock | None:
        token = uuid.uuid4().hex
        if self.redis.set(f"qbo:lock:{name}", token, nx=True, px=int(ttl * 1000)):
            return Lock(self, name, token, ttl)
        return None

    def _renew(self, name: str, token: str, ttl: float) -> bool:
        return bool(self._renew_script(keys=[f"qbo:lock:{name}"], args=[token, int(ttl * 1000)]))

    def _release(self, name: str, token: str) -> None:
        self._release_script(keys=[f"qbo:lock:{name}"], args=[token])

    def flag_set(self, name: str, ttl: float = 3600) -> None:
        self.redis.set(f"qbo:flag:{name}", "1", px=int(ttl * 1000))

    def flag_take(self, name: str) -> bool:
        return bool(self.redis.delete(f"qbo:flag:{name}"))

    def flag_set_new(self, name: str, ttl: float) -> bool:
        return bool(self.redis.set(f"qbo:flag:{name}", "1", nx=True, px=int(ttl * 1000)))


class LocalCoordinator(Coordinator):
    """The same rules inside one process (development without Redis)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: dict[str, deque] = {}
        self._batch: dict[str, deque] = {}
        self._in_flight: dict[str, dict[str, float]] = {}
        self._paused: dict[str, float] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._flags: set[str] = set()

    @staticmethod
    def _now_ms() -> float:
        return time.monotonic() * 1000

    def _try_acquire(self, realm: str, slot: str, limits: Limits, *, batch: bool) -> int:
        now = self._now_ms()
        with self._lock:
            if self._paused.get(realm, 0) > now:
                return int(self._paused[realm] - now) + 1
            sent = self._sent.setdefault(realm, deque())
            batches = self._batch.setdefault(realm, deque())
            in_flight = self._in_flight.setdefault(realm, {})
            for queue in (sent, batches):
                while queue and queue[0] <= now - limits.minute_ms:
                    queue.popleft()
            for key in [key for key, lease in in_flight.items() if lease <= now]:
                del in_flight[key]
            wait = 0.0
            if len(sent) >= limits.per_minute:
                wait = max(wait, sent[len(sent) - limits.per_minute] + limits.minute_ms - now)
            recent = [stamp for stamp in sent if stamp > now - limits.second_ms]
            if len(recent) >= limits.per_second:
                wait = max(wait, recent[len(recent) - limits.per_second] + limits.second_ms - now)
            if len(in_flight) >= limits.concurrent:
                wait = max(wait, max(2, limits.second_ms // 20))
            if batch and len(batches) >= limits.batch_per_minute:
                wait = max(wait, batches[len(batches) - limits.batch_per_minute] + limits.minute_ms - now)
            if wait > 0:
                return max(1, int(wait) + 1)
            sent.append(now)
            if batch:
                batches.append(now)
            in_flight[slot] = now + self.lease_seconds * 1000
            return 0

    def release_slot(self, realm: str, slot: str) -> None:
        with self._lock:
            self._in_flight.get(realm, {}).pop(slot, None)

    def pause(self, realm: str, seconds: float) -> None:
        with self._lock:
            self._paused[realm] = max(self._paused.get(realm, 0), self._now_ms() + seconds * 1000)

    def stats(self, realm: str) -> dict:
        now = self._now_ms()
        minute = Limits.from_settings().minute_ms
        with self._lock:
            return {
                "last_minute": sum(1 for stamp in self._sent.get(realm, ()) if stamp > now - minute),
                "in_flight": len(self._in_flight.get(realm, {})),
                "paused_for": max(0.0, self._paused.get(realm, 0) - now) / 1000,
            }

    def try_lock(self, name: str, ttl: float) -> Lock | None:
        now = time.monotonic()
        with self._lock:
            held = self._locks.get(name)
            if held is not None and held[1] > now:
                return None
            token = uuid.uuid4().hex
            self._locks[name] = (token, now + ttl)
            return Lock(self, name, token, ttl)

    def _renew(self, name: str, token: str, ttl: float) -> bool:
        with self._lock:
            if self._locks.get(name, ("",))[0] != token:
                return False
            self._locks[name] = (token, time.monotonic() + ttl)
            return True

    def _release(self, name: str, token: str) -> None:
        with self._lock:
            if self._locks.get(name, ("",))[0] == token:
                del self._locks[name]

    def flag_set(self, name: str, ttl: float = 3600) -> None:
        with self._lock:
            self._flags.add(name)

    def flag_take(self, name: str) -> bool:
        with self._lock:
            if name in self._flags:
                self._flags.discard(name)
                return True
            return False

    def flag_set_new(self, name: str, ttl: float) -> bool:
        with self._lock:
            if name in self._flags:
                return False
            self._flags.add(name)
            return True


@lru_cache(maxsize=4)
def _coordinator_for(url: str | None) -> Coordinator:
    return RedisCoordinator(url) if url else LocalCoordinator()


def coordinator() -> Coordinator:
    """The process's coordinator: Redis when ``REDIS_URL`` is set."""
    return _coordinator_for(settings.REDIS_URL or None)
