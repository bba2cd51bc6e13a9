"""The shared retry policy (`zeph_providers.retry`) on its own, the layer under each remote member."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest

from zeph_providers.errors import (
    AuthenticationError,
    BadResponseError,
    InvalidRequestError,
    LlmError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from zeph_providers.retry import RetryPolicy, retry_stream

FAST = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.002)


def script(*outcomes: LlmError | list[str]) -> tuple[Callable[[], AsyncIterator[str]], list[int]]:
    """An `open_attempt` whose n-th attempt raises or yields the n-th outcome (the last repeats)."""
    opened: list[int] = []

    def open_attempt() -> AsyncIterator[str]:
        index = min(len(opened), len(outcomes) - 1)
        opened.append(index)
        outcome = outcomes[index]

        async def attempt() -> AsyncIterator[str]:
            if isinstance(outcome, LlmError):
                raise outcome
            for item in outcome:
                if isinstance(item, str) and item.startswith("!"):
                    raise ProviderUnavailableError("connection reset mid-stream")
                yield item

        return attempt()

    return open_attempt, opened


async def collect(source: AsyncIterator[str]) -> list[str]:
    return [item async for item in source]


@pytest.mark.parametrize(
    "error",
    [
        RateLimitError("HTTP 429"),
        ProviderUnavailableError("HTTP 503"),
        ProviderTimeoutError("HTTP 408"),
        BadResponseError("truncated"),
    ],
)
async def test_transient_errors_are_retried(error: LlmError) -> None:
    open_attempt, opened = script(error, ["ok"])
    assert await collect(retry_stream(open_attempt, FAST, deadline=None, provider="p")) == ["ok"]
    assert len(opened) == 2


@pytest.mark.parametrize("error", [InvalidRequestError("HTTP 400"), AuthenticationError("HTTP 401")])
async def test_client_errors_are_not_retried(error: LlmError) -> None:
    open_attempt, opened = script(error, ["ok"])
    with pytest.raises(type(error)):
        await collect(retry_stream(open_attempt, FAST, deadline=None, provider="p"))
    assert len(opened) == 1


async def test_retries_are_bounded() -> None:
    open_attempt, opened = script(ProviderUnavailableError("HTTP 503"))
    with pytest.raises(ProviderUnavailableError):
        await collect(retry_stream(open_attempt, FAST, deadline=None, provider="p"))
    assert len(opened) == FAST.max_retries + 1


async def test_no_retry_after_the_first_item() -> None:
    open_attempt, opened = script(["a", "b", "!reset"], ["never"])
    received: list[str] = []
    with pytest.raises(ProviderUnavailableError):
        async for item in retry_stream(open_attempt, FAST, deadline=None, provider="p"):
            received.append(item)
    assert received == ["a", "b"]
    assert len(opened) == 1


async def test_never_sleeps_past_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = RetryPolicy(max_retries=5, base_delay=10.0, max_delay=10.0)
    open_attempt, opened = script(RateLimitError("HTTP 429", retry_after=5.0), ["ok"])
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", record)  # what retry.py sleeps with
    with pytest.raises(RateLimitError):
        await collect(retry_stream(open_attempt, slow, deadline=time.monotonic() + 1.0, provider="p"))
    assert slept == []  # gave up at once instead of sleeping 5 s
    assert len(opened) == 1


def test_delay_honours_retry_after_and_caps_backoff() -> None:
    policy = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=4.0)
    rng = random.Random(7)
    for attempt in range(8):
        assert 0.0 <= policy.delay(ProviderUnavailableError("x"), attempt, rng) <= min(4.0, 0.5 * 2**attempt)
    assert policy.delay(RateLimitError("x", retry_after=9.0), 0, rng) >= 9.0
