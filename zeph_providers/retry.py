"""The one retry policy every remote backend shares (the SDKs' own retries are switched off).

Retries rate limits, 408, 5xx, connection failures and bad/truncated responses with capped
exponential backoff and full jitter; honours `Retry-After` on every attempt; never retries other
4xx client errors; never sleeps past the call's deadline; and retries a stream only before its
first chunk, so nothing a caller has seen is ever repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from zeph_providers.errors import LlmError, RateLimitError
from zeph_providers.stream import AttemptClock, attempt_log
from zeph_providers.types import Attempt

__all__ = ["RetryPolicy", "retry_stream"]

log = logging.getLogger("zeph_providers.retry")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 30.0

    def should_retry(self, error: LlmError, attempt: int) -> bool:
        """`attempt` counts from 0 for the first try."""
        return error.retryable and attempt < self.max_retries

    def delay(self, error: LlmError, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter on a capped exponential; at least the server's Retry-After."""
        cap = min(self.max_delay, self.base_delay * (2**attempt))
        wait = (rng or random).uniform(0.0, cap)
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait


async def retry_stream(
    open_attempt: Callable[[], AsyncIterator[T]],
    policy: RetryPolicy,
    *,
    deadline: float | None,
    provider: str,
) -> AsyncIterator[T]:
    """Yield from `open_attempt()`, opening a fresh attempt on a retryable error before the first item.

    `deadline` is the call's `time.monotonic()` deadline (`ChatOptions.deadline`); a wait that would
    end past it is not taken and the last error is raised instead. After the first item, errors
    reach the caller unchanged. Each attempt is recorded in the call's attempt log (`attempt_log()`),
    when there is one: its outcome, the wait before it, its time to first item and its duration.
    """
    log_ = attempt_log()
    attempt = 0
    wait = 0.0
    while True:
        clock = AttemptClock(provider, wait=wait)
        source = open_attempt()
        try:
            first = await anext(source)
        except StopAsyncIteration:
            _note(log_, clock, None)
            return
        except LlmError as error:
            _note(log_, clock, error)
            await _close(source)
            if not policy.should_retry(error, attempt):
                raise
            wait = policy.delay(error, attempt)
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise
            log.info(
                "provider %r: attempt %d failed (%s); retrying in %.2fs",
                provider,
                attempt + 1,
                type(error).__name__,
                wait,
            )
            await asyncio.sleep(wait)
            attempt += 1
            continue
        except BaseException as error:
            _note(log_, clock, error)
            await _close(source)
            raise
        clock.first_chunk()
        outcome: BaseException | None = None
        try:
            yield first
            async for item in source:
                yield item
        except BaseException as error:
            outcome = error
            raise
        finally:
            _note(log_, clock, outcome)
            await _close(source)
        return


def _note(log_: list[Attempt] | None, clock: AttemptClock, error: BaseException | None) -> None:
    if log_ is not None:
        log_.append(clock.done(error))


async def _close(source: AsyncIterator[T]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        # A broken connection may fail to close; the error has already surfaced.
        with contextlib.suppress(Exception):
            await aclose()
