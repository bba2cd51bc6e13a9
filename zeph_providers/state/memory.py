"""The in-process `StateStore`: the default, and the fallback of a shared store that is away."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from zeph_providers.state._types import BreakerAdmission, Bucket

__all__ = ["MemoryStore"]


class _Breaker:
    """One breaker's shared facts (see `zeph_providers.state`): tripped, open until, probe until, streak."""

    __slots__ = ("failures", "open_until", "probe_until", "tripped")

    def __init__(self) -> None:
        self.tripped = False
        self.open_until = 0.0
        self.probe_until = 0.0
        self.failures = 0


class MemoryStore:
    """State in this process only. Thread-safe (one lock); time from an injectable monotonic clock.

    `shared=True` says several registries of this process were handed the same store on purpose
    (`Registry(config, state=store)`): routers then give their members shared breakers, exactly
    as on Redis. The default store of a registry is not shared.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 10_000, shared: bool = False
    ) -> None:
        self.shared = shared
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        """key -> (level, when it was last refilled)."""
        self._blocks: dict[str, float] = {}
        self._breakers: dict[str, _Breaker] = {}
        self._lock = threading.Lock()
        self._max_entries = max_entries
        self._values: dict[str, tuple[float, bytes]] = {}
        self._indexes: dict[str, dict[str, tuple[float, list[float]]]] = {}

    # ----- response cache ----------------------------------------------------------------

    async def cache_get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._values.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires <= self._clock():
                del self._values[key]
                return None
            return value

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        with self._lock:
            now = self._clock()
            self._values.pop(key, None)
            if len(self._values) >= self._max_entries:
                self._evict(self._values, now)
            self._values[key] = (now + ttl_s, value)

    async def index_add(self, namespace: str, key: str, vector: list[float], ttl_s: float) -> None:
        with self._lock:
            now = self._clock()
            index = self._indexes.setdefault(namespace, {})
            index.pop(key, None)
            if len(index) >= self._max_entries:
                self._evict(index, now)
            index[key] = (now + ttl_s, list(vector))

    async def index_items(self, namespace: str) -> list[tuple[str, list[float]]]:
        with self._lock:
            now = self._clock()
            index = self._indexes.get(namespace, {})
            for key in [k for k, (expires, _) in index.items() if expires <= now]:
                del index[key]
            return [(key, vector) for key, (_, vector) in index.items()]

    @staticmethod
    def _evict(entries: dict[str, Any], now: float) -> None:
        """Drop expired entries, then the oldest inserted (dicts keep insertion order) if still full."""
        for key in [k for k, (expires, _) in entries.items() if expires <= now]:
            del entries[key]
        if entries:
            del entries[next(iter(entries))]

    # ----- rate limits ---------------------------------------------------------------------

    def _level(self, bucket: Bucket, now: float) -> float:
        level, at = self._buckets.get(bucket.key, (bucket.capacity, now))
        return min(bucket.capacity, level + max(0.0, now - at) * bucket.per_second)

    async def bucket_take(self, takes: Sequence[tuple[Bucket, float]], *, block_key: str) -> float:
        with self._lock:
            now = self._clock()
            blocked = self._blocks.get(block_key, 0.0) - now
            if blocked > 0:
                return blocked
            levels = [(bucket, amount, self._level(bucket, now)) for bucket, amount in takes]
            wait = max(
                ((amount - level) / bucket.per_second for bucket, amount, level in levels if level < amount),
                default=0.0,
            )
            if wait > 0:
                return wait
            for bucket, amount, level in levels:
                self._buckets[bucket.key] = (level - amount, now)
            return 0.0

    async def bucket_adjust(self, bucket: Bucket, delta: float) -> None:
        with self._lock:
            now = self._clock()
            self._buckets[bucket.key] = (min(bucket.capacity, self._level(bucket, now) + delta), now)

    async def bucket_cap(self, bucket: Bucket, level: float) -> None:
        with self._lock:
            now = self._clock()
            self._buckets[bucket.key] = (min(self._level(bucket, now), level), now)

    async def block(self, key: str, seconds: float) -> None:
        with self._lock:
            until = self._clock() + seconds
            if until > self._blocks.get(key, 0.0):
                self._blocks[key] = until

    # ----- circuit breakers --------------------------------------------------------------

    def _breaker(self, key: str) -> _Breaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = _Breaker()
        return breaker

    async def breaker_admit(self, key: str, probe_ttl_s: float) -> BreakerAdmission:
        with self._lock:
            now = self._clock()
            breaker = self._breaker(key)
            if not breaker.tripped:
                return BreakerAdmission("normal", failures=breaker.failures)
            if breaker.open_until > now:
                return BreakerAdmission("open", breaker.open_until - now, breaker.failures)
            if breaker.probe_until > now:
                return BreakerAdmission("open", 0.0, breaker.failures)
            breaker.probe_until = now + probe_ttl_s
            return BreakerAdmission("probe", failures=breaker.failures)

    async def breaker_failure(self, key: str, threshold: int, cooldown_s: float) -> bool:
        with self._lock:
            breaker = self._breaker(key)
            if breaker.tripped:
                return False
            breaker.failures += 1
            if breaker.failures < threshold:
                return False
            self._trip(breaker, cooldown_s)
            return True

    async def breaker_success(self, key: str) -> None:
        with self._lock:
            self._breaker(key).failures = 0

    async def breaker_open(self, key: str, cooldown_s: float) -> None:
        with self._lock:
            self._trip(self._breaker(key), cooldown_s)

    def _trip(self, breaker: _Breaker, cooldown_s: float) -> None:
        breaker.tripped = True
        breaker.open_until = self._clock() + cooldown_s
        breaker.probe_until = 0.0
        breaker.failures = 0

    async def breaker_close(self, key: str) -> None:
        with self._lock:
            self._breakers.pop(key, None)

    async def breaker_release(self, key: str) -> None:
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is not None:
                breaker.probe_until = 0.0

    async def aclose(self) -> None:
        with self._lock:
            self._values.clear()
            self._indexes.clear()
            self._buckets.clear()
            self._blocks.clear()
            self._breakers.clear()
