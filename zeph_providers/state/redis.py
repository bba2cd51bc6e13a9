"""The Redis (or Valkey) `StateStore`: rate limits, breakers and the cache shared across processes.

Decisions:

- The official `redis` package's asyncio client, imported when the first operation runs (the
  `redis` extra). One client per event loop (an asyncio connection belongs to the loop that made
  it), created lazily: building a registry never connects.
- Every read-modify-write is one Lua script (`register_script`: EVALSHA, and SCRIPT LOAD again
  when the server answers NOSCRIPT, e.g. after a restart), so replicas never race. Time inside
  the scripts is the server's `TIME`: every replica refills buckets on one clock. Cooldowns and
  probes are keys with a time to live (PX), so a vanished replica cannot leave a probe taken.
- Never a single point of failure: each operation is bounded by `timeout_secs` (socket timeouts
  plus an outer `asyncio.timeout`); a failure (refused, timed out, any Redis error) switches the
  store to a local `MemoryStore` for `retry_secs`, with ONE warning per outage, after which the
  next operation tries Redis again; success logs the recovery. A caller never sees a Redis error.
  While Redis is away each replica limits on its own (its own full buckets): the limits are per
  process until Redis is back.
- The URL's password is registered as a secret; `repr` shows the host, port and db only, and
  what is logged is the error's type and redacted text.
- Cache values are plain keys (`SET PX`); a similarity index is a hash (member -> JSON vector) with a
  sorted set of expiry times beside it (members expire individually; both keys expire with the
  newest entry).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from zeph_providers._secrets import redact, register_secret
from zeph_providers.state._types import BreakerAdmission, Bucket
from zeph_providers.state.memory import MemoryStore

__all__ = ["RedisStore"]

log = logging.getLogger("zeph_providers.state")

T = TypeVar("T")

MAX_CONNECTIONS = 1024
"""Connections per event loop at most (one per operation in flight; Redis' default limit is 10 000).
Beyond it an operation uses local state, like any other Redis failure."""

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local blocked = redis.call('PTTL', KEYS[1])
if blocked > 0 then return tostring(blocked / 1000) end
local wait = 0
local levels = {}
for i = 2, #KEYS do
  local base = (i - 2) * 3
  local cap, rate, amount = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local v = redis.call('HMGET', KEYS[i], 'l', 't')
  local level, at = tonumber(v[1]), tonumber(v[2])
  if level == nil then level = cap; at = now end
  level = math.min(cap, level + math.max(0, now - at) * rate)
  levels[i] = level
  if level < amount then wait = math.max(wait, (amount - level) / rate) end
end
if wait > 0 then return tostring(wait) end
for i = 2, #KEYS do
  local base = (i - 2) * 3
  local cap, rate, amount = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local level = levels[i] - amount
  redis.call('HSET', KEYS[i], 'l', tostring(level), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap - level) / rate * 1000) + 1000)
end
return '0'
"""

# ARGV: capacity, rate, mode ('add' | 'cap'), value
_ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap, rate, value = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local v = redis.call('HMGET', KEYS[1], 'l', 't')
local level, at = tonumber(v[1]), tonumber(v[2])
if level == nil then level = cap; at = now end
level = math.min(cap, level + math.max(0, now - at) * rate)
if ARGV[3] == 'add' then level = math.min(cap, level + value) else level = math.min(level, value) end
redis.call('HSET', KEYS[1], 'l', tostring(level), 't', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((cap - level) / rate * 1000) + 1000)
return 1
"""

_BLOCK = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then redis.call('SET', KEYS[1], '1', 'PX', ms) end
return 1
"""

# KEYS: tripped, open, probe, fails
_ADMIT = """
local fails = tonumber(redis.call('GET', KEYS[4]) or '0')
if redis.call('EXISTS', KEYS[1]) == 0 then return {'normal', '0', fails} end
local pttl = redis.call('PTTL', KEYS[2])
if pttl > 0 then return {'open', tostring(pttl / 1000), fails} end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then return {'probe', '0', fails} end
return {'open', '0', fails}
"""

# KEYS: tripped, open, probe, fails; ARGV: threshold, cooldown ms
_FAILURE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fails = redis.call('INCR', KEYS[4])
redis.call('PEXPIRE', KEYS[4], 86400000)
if fails < tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], '1')
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) else redis.call('DEL', KEYS[2]) end
redis.call('DEL', KEYS[3], KEYS[4])
return 1
"""

_OPEN = """
redis.call('SET', KEYS[1], '1')
if tonumber(ARGV[1]) > 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[1]) else redis.call('DEL', KEYS[2]) end
redis.call('DEL', KEYS[3], KEYS[4])
return 1
"""

# Lua's unpack() takes a few thousand values at most: every bulk HDEL/ZREM/HMGET goes in batches.
_BATCHED = """
local function each_batch(list, fn)
  for i = 1, #list, 500 do fn({unpack(list, i, math.min(i + 499, #list))}) end
end
local function forget(members)
  each_batch(members, function(b) redis.call('HDEL', KEYS[1], unpack(b)); redis.call('ZREM', KEYS[2], unpack(b)) end)
end
"""

# KEYS: hash, expiries; ARGV: member, vector json, ttl ms, most entries kept
_INDEX_ADD = _BATCHED + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], expires, ARGV[1])
forget(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now))
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then forget(redis.call('ZRANGE', KEYS[2], 0, over - 1)) end
local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local keep = tonumber(newest[2]) - now + 1000
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
return 1
"""

_INDEX_ITEMS = _BATCHED + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')
local out = {}
each_batch(live, function(b)
  local vectors = redis.call('HMGET', KEYS[1], unpack(b))
  for i = 1, #b do
    if vectors[i] then table.insert(out, b[i]); table.insert(out, vectors[i]) end
  end
end)
return out
"""

INDEX_LIMIT = 2000
"""Most entries one similarity index keeps in Redis (the soonest to expire go first): a semantic
lookup reads the whole index, so it must stay small enough to read within the store's timeout."""

_SCRIPTS = {
    "take": _TAKE,
    "adjust": _ADJUST,
    "block": _BLOCK,
    "admit": _ADMIT,
    "failure": _FAILURE,
    "open": _OPEN,
    "index_add": _INDEX_ADD,
    "index_items": _INDEX_ITEMS,
}


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStore:
    """`StateStore` on Redis, falling back to local state while Redis is away (see the module doc)."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "zeph:",
        timeout_secs: float = 0.25,
        retry_secs: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(url)
        register_secret(parts.password)
        self._url = url
        self._where = f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "") + parts.path
        self.key_prefix = key_prefix
        self.timeout_secs = timeout_secs
        self.retry_secs = retry_secs
        self._clock = clock
        self.local = MemoryStore(clock=clock, shared=True)
        """The fallback while Redis is away (this process only)."""
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, dict[str, Any]]] = (
            weakref.WeakKeyDictionary()
        )
        self._down_until = 0.0
        self._outage = False
        self.fallbacks = 0
        """Operations answered by the local fallback so far (for tests and status pages)."""
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(cls, config: Any) -> RedisStore:
        """From a `StateConfig` (`[llm.state]`)."""
        return cls(
            config.url.get_secret_value(),
            key_prefix=config.key_prefix,
            timeout_secs=config.timeout_secs,
            retry_secs=config.retry_secs,
        )

    def __repr__(self) -> str:
        state = "local fallback" if self._outage else "connected"
        return f"<RedisStore {self._where!r} prefix={self.key_prefix!r} {state}>"

    __str__ = __repr__

    @property
    def available(self) -> bool:
        """False while operations go to the local fallback."""
        return not self._outage

    # ----- plumbing ----------------------------------------------------------------------

    def _client(self) -> tuple[Any, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            pool = aioredis.ConnectionPool.from_url(
                self._url,
                max_connections=MAX_CONNECTIONS,
                socket_timeout=self.timeout_secs,
                socket_connect_timeout=self.timeout_secs,
                retry=Retry(NoBackoff(), 0),
            )
            client = aioredis.Redis(connection_pool=pool)
            scripts = {name: client.register_script(source) for name, source in _SCRIPTS.items()}
            entry = self._clients[loop] = (client, scripts)
        return entry

    def _k(self, key: str) -> str:
        return self.key_prefix + key

    async def _run(
        self,
        shared: Callable[[Any, dict[str, Any]], Awaitable[T]],
        local: Callable[[MemoryStore], Awaitable[T]],
    ) -> T:
        """`shared(client, scripts)` on Redis, or `local(fallback)` while Redis is away or failing."""
        if self._closed or self._clock() < self._down_until:
            self.fallbacks += 1
            return await local(self.local)
        try:
            client, scripts = self._client()
            async with asyncio.timeout(self.timeout_secs * 2):
                result = await shared(client, scripts)
        except Exception as exc:  # any Redis failure: the call goes on with local state
            self._went_away(exc)
            self.fallbacks += 1
            return await local(self.local)
        if self._outage:
            self._outage = False
            log.warning("shared state store %s is reachable again; using it", self._where)
        return result

    def _went_away(self, exc: BaseException) -> None:
        self._down_until = self._clock() + self.retry_secs
        detail = redact(f"{type(exc).__name__}: {exc}")
        if not self._outage:
            self._outage = True
            log.warning(
                "shared state store %s unreachable (%s); using local state (limits and breakers per "
                "process) and retrying every %gs",
                self._where,
                detail,
                self.retry_secs,
            )
        else:
            log.debug("shared state store %s still unreachable (%s)", self._where, detail)
        for loop, (client, _) in list(self._clients.items()):  # reconnect from scratch next time
            if loop is asyncio.get_running_loop():
                del self._clients[loop]
                task = loop.create_task(self._close_client(client))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_client(client: Any) -> None:
        with contextlib.suppress(Exception):  # a broken connection may fail to close
            await client.aclose(close_connection_pool=True)

    # ----- response cache ----------------------------------------------------------------

    async def cache_get(self, key: str) -> bytes | None:
        async def shared(client: Any, _: dict[str, Any]) -> bytes | None:
            value = await client.get(self._k("cache:" + key))
            return bytes(value) if value is not None else None

        return await self._run(shared, lambda local: local.cache_get(key))

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        async def shared(client: Any, _: dict[str, Any]) -> None:
            await client.set(self._k("cache:" + key), value, px=_ms(ttl_s))

        await self._run(shared, lambda local: local.cache_put(key, value, ttl_s))

    async def index_add(self, namespace: str, key: str, vector: list[float], ttl_s: float) -> None:
        keys = [self._k(f"index:{namespace}:vectors"), self._k(f"index:{namespace}:expiry")]

        async def shared(_: Any, scripts: dict[str, Any]) -> None:
            await scripts["index_add"](keys=keys, args=[key, json.dumps(vector), _ms(ttl_s), INDEX_LIMIT])

        await self._run(shared, lambda local: local.index_add(namespace, key, vector, ttl_s))

    async def index_items(self, namespace: str) -> list[tuple[str, list[float]]]:
        keys = [self._k(f"index:{namespace}:vectors"), self._k(f"index:{namespace}:expiry")]

        async def shared(_: Any, scripts: dict[str, Any]) -> list[tuple[str, list[float]]]:
            flat = await scripts["index_items"](keys=keys, args=[])
            return [(_text(flat[i]), [float(x) for x in json.loads(flat[i + 1])]) for i in range(0, len(flat), 2)]

        return await self._run(shared, lambda local: local.index_items(namespace))

    # ----- rate limits -------------------------------------------------------------------

    async def bucket_take(self, takes: Sequence[tuple[Bucket, float]], *, block_key: str) -> float:
        keys = [self._k(block_key), *(self._k(bucket.key) for bucket, _ in takes)]
        args: list[float] = []
        for bucket, amount in takes:
            args.extend((bucket.capacity, bucket.per_second, amount))

        async def shared(_: Any, scripts: dict[str, Any]) -> float:
            return float(_text(await scripts["take"](keys=keys, args=args)))

        return await self._run(shared, lambda local: local.bucket_take(takes, block_key=block_key))

    async def _adjust(
        self, bucket: Bucket, mode: str, value: float, local: Callable[[MemoryStore], Awaitable[None]]
    ) -> None:
        async def shared(_: Any, scripts: dict[str, Any]) -> None:
            await scripts["adjust"](keys=[self._k(bucket.key)], args=[bucket.capacity, bucket.per_second, mode, value])

        await self._run(shared, local)

    async def bucket_adjust(self, bucket: Bucket, delta: float) -> None:
        await self._adjust(bucket, "add", delta, lambda local: local.bucket_adjust(bucket, delta))

    async def bucket_cap(self, bucket: Bucket, level: float) -> None:
        await self._adjust(bucket, "cap", level, lambda local: local.bucket_cap(bucket, level))

    async def block(self, key: str, seconds: float) -> None:
        async def shared(_: Any, scripts: dict[str, Any]) -> None:
            await scripts["block"](keys=[self._k(key)], args=[_ms(seconds)])

        await self._run(shared, lambda local: local.block(key, seconds))

    # ----- circuit breakers --------------------------------------------------------------

    def _breaker_keys(self, key: str) -> list[str]:
        base = self._k("breaker:" + key)
        return [base + ":tripped", base + ":open", base + ":probe", base + ":fails"]

    async def breaker_admit(self, key: str, probe_ttl_s: float) -> BreakerAdmission:
        async def shared(_: Any, scripts: dict[str, Any]) -> BreakerAdmission:
            verdict, retry_in, failures = await scripts["admit"](keys=self._breaker_keys(key), args=[_ms(probe_ttl_s)])
            text = _text(verdict)
            assert text in ("normal", "probe", "open")
            return BreakerAdmission(text, float(_text(retry_in)), int(failures))  # type: ignore[arg-type]

        return await self._run(shared, lambda local: local.breaker_admit(key, probe_ttl_s))

    async def breaker_failure(self, key: str, threshold: int, cooldown_s: float) -> bool:
        async def shared(_: Any, scripts: dict[str, Any]) -> bool:
            cooldown = round(cooldown_s * 1000)
            return bool(await scripts["failure"](keys=self._breaker_keys(key), args=[threshold, cooldown]))

        return await self._run(shared, lambda local: local.breaker_failure(key, threshold, cooldown_s))

    async def breaker_success(self, key: str) -> None:
        async def shared(client: Any, _: dict[str, Any]) -> None:
            await client.delete(self._breaker_keys(key)[3])

        await self._run(shared, lambda local: local.breaker_success(key))

    async def breaker_open(self, key: str, cooldown_s: float) -> None:
        async def shared(_: Any, scripts: dict[str, Any]) -> None:
            await scripts["open"](keys=self._breaker_keys(key), args=[round(cooldown_s * 1000)])

        await self._run(shared, lambda local: local.breaker_open(key, cooldown_s))

    async def breaker_close(self, key: str) -> None:
        async def shared(client: Any, _: dict[str, Any]) -> None:
            await client.delete(*self._breaker_keys(key))

        await self._run(shared, lambda local: local.breaker_close(key))

    async def breaker_release(self, key: str) -> None:
        async def shared(client: Any, _: dict[str, Any]) -> None:
            await client.delete(self._breaker_keys(key)[2])

        await self._run(shared, lambda local: local.breaker_release(key))

    # ----- lifetime ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close this loop's client (others close with their loops); later operations use local state."""
        self._closed = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - aclose is awaited
            return
        entry = self._clients.pop(loop, None)
        if entry is not None:
            await self._close_client(entry[0])
        await self.local.aclose()
