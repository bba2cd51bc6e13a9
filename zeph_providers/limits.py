"""Client-side rate limits: requests and tokens per minute, as token buckets (issue 14).

SEAM (lead): the public shape below is fixed; the implementation is the rate-limit helper's.

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
"""

from __future__ import annotations

from collections.abc import Mapping

from zeph_providers.state import StateStore

__all__ = ["RateLimiter", "Reservation"]


class Reservation:
    """Capacity taken for one request."""

    async def settle(self, actual_tokens: int | None) -> None:
        raise NotImplementedError

    async def cancel(self) -> None:
        raise NotImplementedError


class RateLimiter:
    def __init__(
        self,
        name: str,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        store: StateStore | None = None,
        wait: bool = True,
    ) -> None:
        self.name = name
        self.rpm = rpm
        self.tpm = tpm
        self.wait = wait
        self._store = store

    async def acquire(self, estimated_tokens: int = 0, *, deadline: float | None = None) -> Reservation:
        raise NotImplementedError

    async def has_capacity(self, estimated_tokens: int = 0) -> bool:
        raise NotImplementedError

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        raise NotImplementedError

    def observe_retry_after(self, seconds: float) -> None:
        raise NotImplementedError
