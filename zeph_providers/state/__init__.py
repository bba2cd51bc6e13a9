"""Shared state for rate limits, circuit breakers and the response cache (issue 14).

Everything is in-process by default (`MemoryStore`). `[llm.state] backend = "redis"` shares the
same state across processes through Redis or Valkey (`zeph_providers.state.redis`, the optional
`redis` extra): buckets are taken atomically by server-side scripts, breaker state is shared, and
the cache is one keyspace. A shared store never becomes a single point of failure: when it cannot
be reached, each operation falls back to a local `MemoryStore` (with one logged warning) and the
shared store is used again when it answers.

The `StateStore` protocol is the one seam: `zeph_providers.limits`, `zeph_providers.breaker` and
`zeph_providers.cache` talk to it and never to Redis directly.

Decisions:

- Buckets are continuous-refill token buckets: `capacity` units, refilled at `per_second`, a new
  bucket starts full. `bucket_take` takes from several buckets at once, all or nothing (a request
  needs its rpm unit *and* its tpm tokens: taking one without the other would waste capacity),
  and answers how long to wait instead of waiting: the caller owns the deadline.
- Time is the store's: the Redis store uses the server's `TIME` (one clock for every replica),
  the memory store its injectable monotonic clock (tests never sleep).
- Breaker state is four facts per breaker: *tripped* (open or half-open until a probe succeeds),
  *open* (the cooldown, a key with a time to live), *probe* (the one half-open probe in flight,
  taken with SET NX PX, so one replica probes) and the shared consecutive-failure count.
- `shared` says whether state is seen by other registries (Redis: yes). A router gives its members
  shared breakers only on a shared store; on the default store it keeps its in-process breakers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from zeph_providers.state._types import BreakerAdmission, BreakerVerdict, Bucket
from zeph_providers.state.memory import MemoryStore

__all__ = ["BreakerAdmission", "BreakerVerdict", "Bucket", "MemoryStore", "StateStore", "build_store"]


@runtime_checkable
class StateStore(Protocol):
    """Where shared state lives. Keys are namespaced by the caller (e.g. `limit:<provider>:rpm`);
    a store may add its own prefix (`[llm.state] key_prefix`)."""

    shared: bool
    """Whether other registries (processes) see this state."""

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

    # ----- rate limits: token buckets -----------------------------------------------------

    async def bucket_take(self, takes: Sequence[tuple[Bucket, float]], *, block_key: str) -> float:
        """Take `amount` from every bucket, all or nothing. 0.0: taken. Otherwise nothing was taken
        and the answer is the seconds until all would fit (or until `block_key`'s block ends)."""
        ...

    async def bucket_adjust(self, bucket: Bucket, delta: float) -> None:
        """Add `delta` (negative: take more, the level may go below zero) without waiting; the
        level never exceeds the capacity."""
        ...

    async def bucket_cap(self, bucket: Bucket, level: float) -> None:
        """Lower the bucket's level to at most `level` (a server said that much is left)."""
        ...

    async def block(self, key: str, seconds: float) -> None:
        """Nothing is taken under `key` (a `block_key`) for `seconds`; the longer block wins."""
        ...

    # ----- circuit breakers -----------------------------------------------------------------

    async def breaker_admit(self, key: str, probe_ttl_s: float) -> BreakerAdmission:
        """Closed: normal. Tripped and cooling down: open. Tripped, cooled down: the probe, to the
        first caller only (the probe expires after `probe_ttl_s` if its replica vanished)."""
        ...

    async def breaker_failure(self, key: str, threshold: int, cooldown_s: float) -> bool:
        """One more consecutive failure; at `threshold` the breaker trips (open for `cooldown_s`).
        True when this failure tripped it."""
        ...

    async def breaker_success(self, key: str) -> None:
        """A normal call succeeded: the consecutive-failure count restarts."""
        ...

    async def breaker_open(self, key: str, cooldown_s: float) -> None:
        """Trip the breaker now (a probe failed, or a replica's failure rate tripped): open for
        `cooldown_s`, the probe slot freed, the count restarted."""
        ...

    async def breaker_close(self, key: str) -> None:
        """Close the breaker (the probe succeeded, or a reset)."""
        ...

    async def breaker_release(self, key: str) -> None:
        """Free the probe slot without a verdict (the probe was cancelled)."""
        ...

    async def aclose(self) -> None:
        """Release connections. Safe to call twice."""
        ...


def build_store(config: object) -> StateStore:
    """The store an `[llm.state]` table asks for (`StateConfig`); Redis is imported only here."""
    backend = getattr(config, "backend", "memory")
    if backend == "redis":
        from zeph_providers.state.redis import RedisStore

        return RedisStore.from_config(config)
    return MemoryStore()
