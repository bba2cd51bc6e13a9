"""Shared state for rate limits, circuit breakers and the response cache (issue 14).

Everything is in-process by default (`MemoryStore`). `[llm.state] backend = "redis"` shares the
same state across processes through Redis or Valkey (`zeph_providers.state.redis`, the optional
`redis` extra): buckets are taken atomically by server-side scripts, breaker state is shared, and
the cache is one keyspace. A shared store never becomes a single point of failure: when it cannot
be reached, each operation falls back to a local `MemoryStore` (with one logged warning) and the
shared store is used again when it answers.

The `StateStore` protocol is the one seam: `zeph_providers.limits`, `zeph_providers.breaker` and
`zeph_providers.cache` talk to it and never to Redis directly.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from zeph_providers.state.memory import MemoryStore

__all__ = ["MemoryStore", "StateStore"]


@runtime_checkable
class StateStore(Protocol):
    """Where shared state lives. Keys are namespaced by the caller (e.g. `limit:rpm:<provider>`)."""

    # ----- response cache: opaque bytes with a time to live -----------------------------

    async def cache_get(self, key: str) -> bytes | None:
        """The value stored under `key`, or None when absent or expired."""
        ...

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store `value` under `key` for `ttl_s` seconds (replacing what was there)."""
        ...

    async def index_add(self, namespace: str, key: str, vector: list[float], ttl_s: float) -> None:
        """Add `key` with its embedding `vector` to a namespace's similarity index (semantic cache)."""
        ...

    async def index_items(self, namespace: str) -> list[tuple[str, list[float]]]:
        """Every unexpired `(key, vector)` of a namespace's similarity index."""
        ...

    async def aclose(self) -> None:
        """Release connections. Safe to call twice."""
        ...
