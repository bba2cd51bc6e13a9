"""Client-side rate limits: requests and tokens per minute, as token buckets (issue 14).

    limiter = RateLimiter("gpt", rpm=60, tpm=40_000, store=MemoryStore(), wait=True)
    reservation = await limiter.acquire(estimated_tokens=120, deadline=options.deadline)
    ...  # the request
    await reservation.settle(actual_tokens=usage.total_tokens)   # corrects the token bucket
    # or: await reservation.cancel()  (the request was never sent)

`acquire` waits for capacity within the deadline (`wait=True`) or raises `RateLimitError` with
`retry_after` at once (`wait=False`, or when the wait would pass the deadline). `has_capacity()`
is the non-blocking check a router uses to skip a member at its limit. `observe_headers()` and
`observe_retry_after()` feed the buckets from a server's `x-ratelimit-*` /
`anthropic-ratelimit-*` headers and a 429's `Retry-After`.

Decisions:

- Buckets: capacity = the per-minute amount, refilled continuously (rpm/60 a second), a new bucket
  full. So `rpm = 60` lets a burst of 60 through, then one a second. The buckets live in the
  registry's `StateStore`: in-process by default, shared by every replica on Redis.
- A request takes 1 from the rpm bucket and its *estimated* tokens from the tpm bucket, both at
  once or neither (`StateStore.bucket_take`). The estimate (`estimate_tokens`) is cheap and
  deliberately pessimistic, like the providers' own limiters: the message text's characters / 4,
  plus the reply budget (`max_tokens`) when one is set. The reply's usage corrects it (`settle`:
  the difference is given back, or taken on top). An estimate above `tpm` is cut to `tpm` (it
  waits for a full bucket instead of waiting forever).
- A wait polls: the store answers how long until the amount fits, the caller sleeps that long (at
  least 1 ms) and asks again, so a waiter never holds capacity it cannot use yet.
- Server feedback is applied without blocking the response path: `observe_*` are plain methods
  (called from an HTTP response hook), which update this process at once and the shared store in
  a background task. Headers only ever *lower* what we think is left: remaining counts cap the
  buckets; a remaining count of 0 with a reset time, or a 429's `Retry-After`, blocks the limiter
  (every replica, on a shared store) until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from typing import Any

from zeph_providers.errors import RateLimitError
from zeph_providers.state import Bucket, MemoryStore, StateStore

__all__ = ["RateLimiter", "Reservation", "chat_estimate", "estimate_tokens", "parse_reset"]

log = logging.getLogger("zeph_providers.limits")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

CHARS_PER_TOKEN = 4
"""The estimate's exchange rate: English text averages about four characters a token."""


def estimate_tokens(texts: Sequence[str], max_tokens: int | None) -> int:
    """The tokens a request is assumed to use before its usage is known: characters / 4, rounded
    up, plus the reply budget (`max_tokens`, when set)."""
    chars = sum(len(text) for text in texts)
    return math.ceil(chars / CHARS_PER_TOKEN) + max(0, max_tokens or 0)


def chat_estimate(messages: Sequence[Any], max_tokens: int | None, config: object = None) -> int:
    """`estimate_tokens` for a chat call: the messages' text, and the call's `max_tokens` (else the
    provider config's, when it has one)."""
    if max_tokens is None:
        configured = getattr(config, "max_tokens", None)
        max_tokens = configured if isinstance(configured, int) and not isinstance(configured, bool) else None
    return estimate_tokens([str(getattr(message, "text", "")) for message in messages], max_tokens)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_reset(value: str | None) -> float | None:
    """Seconds until a rate-limit window resets: OpenAI's durations (`1s`, `6m0s`, `20ms`, `1.5s`),
    plain seconds, or Anthropic's RFC 3339 timestamps. None when unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if parts and "".join(number + unit for number, unit in parts) == text:
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(number) * scale[unit] for number, unit in parts)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _number(headers: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value)
        except ValueError:
            continue
    return None


class Reservation:
    """Capacity taken for one request: `settle` it with the reply's usage, or `cancel` it."""

    def __init__(self, limiter: RateLimiter | None = None, tokens: float = 0.0) -> None:
        self._limiter = limiter
        self.tokens = tokens
        """The tokens taken from the tpm bucket (the estimate, cut to the capacity)."""
        self._done = limiter is None

    async def settle(self, actual_tokens: int | None) -> None:
        """The request was sent: correct the tpm bucket by what it really used (None: keep the
        estimate). Only the first settle or cancel counts."""
        if self._done:
            return
        self._done = True
        limiter = self._limiter
        assert limiter is not None
        if actual_tokens is None or limiter.tpm_bucket is None:
            return
        delta = self.tokens - max(0, actual_tokens)
        if delta:
            await limiter.store.bucket_adjust(limiter.tpm_bucket, delta)

    async def cancel(self) -> None:
        """The request was never sent: give its request and tokens back."""
        if self._done:
            return
        self._done = True
        limiter = self._limiter
        assert limiter is not None
        if limiter.rpm_bucket is not None:
            await limiter.store.bucket_adjust(limiter.rpm_bucket, 1.0)
        if limiter.tpm_bucket is not None and self.tokens:
            await limiter.store.bucket_adjust(limiter.tpm_bucket, self.tokens)


class RateLimiter:
    """One provider's rpm/tpm limits (see the module doc); `wait=False` fails fast."""

    def __init__(
        self,
        name: str,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        store: StateStore | None = None,
        wait: bool = True,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        for label, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{label} must be a positive integer, not {value!r}")
        self.name = name
        self.rpm = rpm
        self.tpm = tpm
        self.wait = wait
        self.store: StateStore = store if store is not None else MemoryStore()
        self._clock = clock
        self._sleep = sleep
        self.rpm_bucket = Bucket(f"limit:{name}:rpm", rpm, rpm / 60.0) if rpm else None
        self.tpm_bucket = Bucket(f"limit:{name}:tpm", tpm, tpm / 60.0) if tpm else None
        self.block_key = f"limit:{name}:block"
        self._blocked_until = 0.0
        """This process's view of the longest block seen (a clock() value): honoured before asking the store."""
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        mode = "wait" if self.wait else "fail"
        return f"<RateLimiter {self.name!r} rpm={self.rpm} tpm={self.tpm} {mode}>"

    # ----- taking capacity ----------------------------------------------------------------

    def _takes(self, estimated_tokens: int) -> tuple[list[tuple[Bucket, float]], float]:
        takes: list[tuple[Bucket, float]] = []
        if self.rpm_bucket is not None:
            takes.append((self.rpm_bucket, 1.0))
        tokens = 0.0
        if self.tpm_bucket is not None:
            tokens = float(min(max(0, estimated_tokens), self.tpm_bucket.capacity))
            if tokens:
                takes.append((self.tpm_bucket, tokens))
        return takes, tokens

    async def _try(self, takes: list[tuple[Bucket, float]]) -> float:
        """0.0 when taken, else the seconds to wait (this process's block first, then the store)."""
        blocked = self._blocked_until - self._clock()
        if blocked > 0:
            return blocked
        return await self.store.bucket_take(takes, block_key=self.block_key)

    async def acquire(self, estimated_tokens: int = 0, *, deadline: float | None = None) -> Reservation:
        """Take one request and `estimated_tokens` (waiting up to `deadline`, a `clock()` value,
        when `wait`); `RateLimitError` naming the provider when there is no capacity in time."""
        takes, tokens = self._takes(estimated_tokens)
        while True:
            wait = await self._try(takes)
            if wait <= 0:
                return Reservation(self, tokens)
            if not self.wait:
                raise self._error(wait, "")
            if deadline is not None and self._clock() + wait > deadline:
                raise self._error(wait, " (more than the call's deadline allows)")
            await self._sleep(max(wait, 0.001))

    async def has_capacity(self, estimated_tokens: int = 0) -> bool:
        """Whether a request of this size would be let through now (takes nothing)."""
        if self._blocked_until > self._clock():
            return False
        takes, _ = self._takes(estimated_tokens)
        if not takes:
            return True
        # Take and give back at once: the stores answer "how long to wait" only by trying.
        wait = await self.store.bucket_take(takes, block_key=self.block_key)
        if wait > 0:
            return False
        for bucket, amount in takes:
            await self.store.bucket_adjust(bucket, amount)
        return True

    def _error(self, wait: float, why: str) -> RateLimitError:
        limits = ", ".join(f"{label}={value}" for label, value in (("rpm", self.rpm), ("tpm", self.tpm)) if value)
        return RateLimitError(
            f"client-side rate limit reached ({limits or 'server-imposed'}): capacity again in {wait:.2f}s{why}; "
            'raise rpm/tpm, spread the calls, or set rate_limit = "wait" with a longer timeout',
            provider=self.name,
            retry_after=round(wait, 3),
            client_side=True,
        )

    # ----- feedback from the server ---------------------------------------------------------

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Lower the buckets to what the server says is left; block until its reset when nothing is."""
        lowered = {str(k).lower(): str(v) for k, v in headers.items()}
        for kind, bucket in (("requests", self.rpm_bucket), ("tokens", self.tpm_bucket)):
            remaining = _number(lowered, f"x-ratelimit-remaining-{kind}", f"anthropic-ratelimit-{kind}-remaining")
            if remaining is None:
                continue
            if bucket is not None:
                self._spawn(self.store.bucket_cap(bucket, remaining))
            if remaining <= 0:
                reset = parse_reset(
                    lowered.get(f"x-ratelimit-reset-{kind}") or lowered.get(f"anthropic-ratelimit-{kind}-reset")
                )
                if reset:
                    self.observe_retry_after(reset)

    def observe_retry_after(self, seconds: float | None) -> None:
        """A 429 said to wait `seconds`: nothing goes through this limiter (any replica) until then."""
        if seconds is None or seconds <= 0 or not math.isfinite(seconds):
            return
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)
        self._spawn(self.store.block(self.block_key, seconds))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a store update in the background (the caller is a sync response hook)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            work.close()  # no loop: this process's view (`_blocked_until`) is all we can update
            return
        task = loop.create_task(self._quietly(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception as exc:  # a store never fails a call; the Redis store already falls back
            log.debug("rate limiter %r: store update failed (%s)", self.name, type(exc).__name__)

    async def drain(self) -> None:
        """Wait for the background store updates (tests; a clean shutdown)."""
        while self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.gather(*list(self._tasks))
