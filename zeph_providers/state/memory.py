"""The in-process `StateStore`: the default, and the fallback of a shared store that is away."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["MemoryStore"]


class MemoryStore:
    """State in this process only. Thread-safe (one lock); time from an injectable monotonic clock."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 10_000) -> None:
        self._clock = clock
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

    async def aclose(self) -> None:
        with self._lock:
            self._values.clear()
            self._indexes.clear()
