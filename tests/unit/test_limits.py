"""Rate limits and shared breakers on the in-process store, with an injected clock (no sleeping)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from zeph_providers import Registry
from zeph_providers.breaker import Admission, BreakerState, SharedCircuitBreaker
from zeph_providers.config import loads_config
from zeph_providers.errors import ConfigError, RateLimitError
from zeph_providers.limits import RateLimiter, estimate_tokens, parse_reset
from zeph_providers.state import Bucket, MemoryStore
from zeph_providers.types import Message


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def limiter(clock: Clock, **kwargs: object) -> RateLimiter:
    store = MemoryStore(clock=clock)
    return RateLimiter("gpt", store=store, clock=clock, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


# ----- buckets ------------------------------------------------------------------------------


async def test_bucket_starts_full_and_refills_continuously() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    bucket = Bucket("b", 60, 1.0)
    assert [await store.bucket_take([(bucket, 1)], block_key="x") for _ in range(60)] == [0.0] * 60
    assert await store.bucket_take([(bucket, 1)], block_key="x") == pytest.approx(1.0)
    clock.now += 0.5
    assert await store.bucket_take([(bucket, 1)], block_key="x") == pytest.approx(0.5)
    clock.now += 0.5
    assert await store.bucket_take([(bucket, 1)], block_key="x") == 0.0
    clock.now += 1000  # never above the capacity
    assert [await store.bucket_take([(bucket, 1)], block_key="x") for _ in range(61)].count(0.0) == 60


async def test_take_is_all_or_nothing() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    requests, tokens = Bucket("r", 10, 1.0), Bucket("t", 100, 10.0)
    assert await store.bucket_take([(requests, 1), (tokens, 100)], block_key="x") == 0.0
    wait = await store.bucket_take([(requests, 1), (tokens, 50)], block_key="x")
    assert wait == pytest.approx(5.0)
    # the refused take left the request bucket alone: 9 requests are still there
    assert [await store.bucket_take([(requests, 1)], block_key="x") for _ in range(10)].count(0.0) == 9


async def test_block_wins_over_capacity() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    await store.block("x", 3.0)
    await store.block("x", 1.0)  # a shorter block does not shorten it
    assert await store.bucket_take([(Bucket("b", 5, 1.0), 1)], block_key="x") == pytest.approx(3.0)
    clock.now += 3.0
    assert await store.bucket_take([(Bucket("b", 5, 1.0), 1)], block_key="x") == 0.0


# ----- the limiter ----------------------------------------------------------------------------


async def test_fail_mode_raises_typed_error_naming_the_provider() -> None:
    clock = Clock()
    limit = limiter(clock, rpm=2, wait=False)
    await limit.acquire()
    await limit.acquire()
    with pytest.raises(RateLimitError) as caught:
        await limit.acquire()
    assert caught.value.provider == "gpt"
    assert caught.value.retry_after == pytest.approx(30.0)  # rpm=2: one request every 30 s
    assert "rpm=2" in str(caught.value)
    assert clock.slept == []


async def test_wait_mode_waits_for_the_refill_within_the_deadline() -> None:
    clock = Clock()
    limit = limiter(clock, rpm=60)
    for _ in range(60):
        await limit.acquire(deadline=clock.now + 10)
    await limit.acquire(deadline=clock.now + 10)
    assert sum(clock.slept) == pytest.approx(1.0)


async def test_wait_mode_refuses_at_once_when_the_wait_passes_the_deadline() -> None:
    clock = Clock()
    limit = limiter(clock, rpm=1)
    await limit.acquire()
    with pytest.raises(RateLimitError, match="deadline") as caught:
        await limit.acquire(deadline=clock.now + 5)
    assert caught.value.retry_after == pytest.approx(60.0)
    assert clock.slept == []


async def test_settle_corrects_the_token_bucket_and_cancel_gives_back() -> None:
    clock = Clock()
    limit = limiter(clock, rpm=10, tpm=1000, wait=False)
    reservation = await limit.acquire(600)
    await reservation.settle(100)  # 500 of the estimate given back: 900 left
    await reservation.settle(0)  # only the first settle counts
    big = await limit.acquire(900)
    with pytest.raises(RateLimitError):
        await limit.acquire(1)
    await big.cancel()
    assert await limit.has_capacity(900)
    # a reply that used more than estimated takes the rest on top (a debt)
    over = await limit.acquire(100)
    await over.settle(1900)
    assert not await limit.has_capacity(1)


async def test_an_estimate_above_tpm_waits_for_a_full_bucket() -> None:
    clock = Clock()
    limit = limiter(clock, tpm=100)
    reservation = await limit.acquire(10_000)
    assert reservation.tokens == 100
    await limit.acquire(10_000, deadline=clock.now + 120)
    assert sum(clock.slept) == pytest.approx(60.0)


async def test_headers_lower_the_buckets_and_block_until_reset() -> None:
    clock = Clock()
    limit = limiter(clock, rpm=100, tpm=10_000, wait=False)
    limit.observe_headers({"X-RateLimit-Remaining-Requests": "3", "x-ratelimit-remaining-tokens": "500"})
    await limit.drain()
    assert not await limit.has_capacity(600)
    for _ in range(3):
        await limit.acquire()
    with pytest.raises(RateLimitError):
        await limit.acquire()
    limit.observe_headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"})
    await limit.drain()
    clock.now += 200  # refilled, but the server said nothing until its reset
    with pytest.raises(RateLimitError) as caught:
        await limit.acquire()
    assert caught.value.retry_after == pytest.approx(160.0)


async def test_anthropic_headers_and_retry_after_block() -> None:
    clock = Clock()
    limit = limiter(clock, rpm=100, wait=False)
    reset = (datetime.now(UTC) + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    limit.observe_headers({"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": reset})
    await limit.drain()
    with pytest.raises(RateLimitError) as caught:
        await limit.acquire()
    assert 20 < (caught.value.retry_after or 0) <= 30
    other = limiter(clock, rpm=100, wait=False)
    other.observe_retry_after(2.5)
    await other.drain()
    assert not await other.has_capacity()
    clock.now += 2.5
    assert await other.has_capacity()


async def test_a_block_reaches_another_limiter_on_the_same_store() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    first = RateLimiter("gpt", rpm=100, store=store, clock=clock, wait=False)
    second = RateLimiter("gpt", rpm=100, store=store, clock=clock, wait=False)
    first.observe_retry_after(5)
    await first.drain()
    with pytest.raises(RateLimitError):
        await second.acquire()


def test_parse_reset_and_estimate() -> None:
    assert parse_reset("1s") == 1.0
    assert parse_reset("6m0s") == 360.0
    assert parse_reset("20ms") == pytest.approx(0.02)
    assert parse_reset("1.5") == 1.5
    assert parse_reset("soon") is None
    assert parse_reset(None) is None
    assert estimate_tokens(["abcd" * 10, "xy"], 100) == 11 + 100
    assert estimate_tokens([], None) == 0


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="rpm"):
        RateLimiter("x", rpm=0)
    text = '[[llm.providers]]\nname = "m"\ntype = "mock"\nrpm = 0\n'
    with pytest.raises(ConfigError, match="rpm"):
        Registry.from_toml_string(text)
    with pytest.raises(ConfigError, match="needs a url"):
        Registry.from_toml_string('[llm.state]\nbackend = "redis"\n' + text.replace("rpm = 0\n", ""))


# ----- through a provider ---------------------------------------------------------------------


async def test_registry_attaches_the_limiter_and_calls_honour_it() -> None:
    text = '[[llm.providers]]\nname = "m"\ntype = "mock"\nrpm = 3\nrate_limit = "fail"\n'
    async with Registry.from_toml_string(text) as registry:
        provider = registry.get("m")
        assert provider.rate_limiter is not None  # type: ignore[attr-defined]
        answers = [await provider.chat([Message.user("hi")]) for _ in range(3)]
        assert all(answer.text for answer in answers)
        with pytest.raises(RateLimitError) as caught:
            await provider.chat([Message.user("hi")])
        assert caught.value.provider == "m"


async def test_two_registries_sharing_a_store_share_the_limit() -> None:
    store = MemoryStore(shared=True)
    text = '[[llm.providers]]\nname = "m"\ntype = "mock"\nrpm = 4\nrate_limit = "fail"\n'
    one, two = Registry(loads_config(text), state=store), Registry(loads_config(text), state=store)
    results = await asyncio.gather(
        *(registry.get("m").chat([Message.user("hi")]) for registry in (one, two) for _ in range(4)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 4
    assert all(isinstance(r, RateLimitError) for r in results if isinstance(r, BaseException))
    await one.aclose()
    await two.aclose()


async def test_a_request_cancelled_after_it_started_keeps_its_count() -> None:
    """A started request may be billed by the server even if nobody waits for its reply: the
    limiter never hands its capacity back (the next call is refused, not sent)."""
    text = '[[llm.providers]]\nname = "m"\ntype = "mock"\nrpm = 1\nrate_limit = "fail"\ndelay_secs = 60\n'
    async with Registry.from_toml_string(text) as registry:
        provider = registry.get("m")
        limiter = provider.rate_limiter  # type: ignore[attr-defined]
        task = asyncio.ensure_future(provider.chat([Message.user("hi")]))
        async with asyncio.timeout(120):  # a never-hang bound: the call takes its slot at once
            while await limiter.has_capacity():  # noqa: ASYNC110 (polling the limiter is the point)
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not await limiter.has_capacity()
        with pytest.raises(RateLimitError) as caught:
            await provider.chat([Message.user("again")])
        assert caught.value.client_side


# ----- shared breakers on the in-process store ---------------------------------------------------


async def test_shared_breakers_open_together_and_probe_once() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock, shared=True)
    a = SharedCircuitBreaker(store, "r:m", 2, 10.0, clock=clock)
    b = SharedCircuitBreaker(store, "r:m", 2, 10.0, clock=clock)
    for _ in range(2):
        admission = await a.admit()
        assert admission is Admission.NORMAL
        await a.report(admission, False)
    assert await b.admit() is None  # opened by a's failures
    assert b.state is BreakerState.OPEN
    assert b.retry_in() == pytest.approx(10.0)
    clock.now += 10
    probes = [await a.admit(), await b.admit()]
    assert probes.count(Admission.PROBE) == 1 and probes.count(None) == 1
    prober = a if probes[0] is Admission.PROBE else b
    await prober.report(Admission.PROBE, None)  # no verdict: the slot is free again
    probe = await b.admit()
    assert probe is Admission.PROBE
    await b.report(probe, True)
    assert await a.admit() is Admission.NORMAL
    assert a.state is BreakerState.CLOSED


async def test_a_success_anywhere_restarts_the_shared_streak() -> None:
    store = MemoryStore(shared=True)
    a = SharedCircuitBreaker(store, "r:m", 2, 10.0)
    b = SharedCircuitBreaker(store, "r:m", 2, 10.0)
    await a.report(await a.admit() or Admission.NORMAL, False)
    await b.report(await b.admit() or Admission.NORMAL, True)
    await a.report(await a.admit() or Admission.NORMAL, False)
    assert await b.admit() is Admission.NORMAL  # 1 failure since the success: still closed


async def test_embeddings_take_from_the_same_limit() -> None:
    text = '[[llm.providers]]\nname = "m"\ntype = "mock"\nrpm = 2\nrate_limit = "fail"\n'
    async with Registry.from_toml_string(text) as registry:
        provider = registry.get("m")
        assert len(await provider.embed("one")) == 8
        await provider.chat([Message.user("hi")])
        with pytest.raises(RateLimitError) as caught:
            await provider.embed("two")
        assert caught.value.provider == "m"


async def test_a_router_tries_a_member_at_its_limit_last() -> None:
    text = """
[[llm.providers]]
name = "first"
type = "mock"
responses = ["from first"]
rpm = 1
rate_limit = "fail"

[[llm.providers]]
name = "second"
type = "mock"
responses = ["from second"]

[[llm.providers]]
name = "r"
type = "router"
providers = ["first", "second"]
"""
    async with Registry.from_toml_string(text) as registry:
        router = registry.get("r")
        texts = [(await router.chat([Message.user("hi")])).text for _ in range(3)]
        assert texts == ["from first", "from second", "from second"]
        assert router.status()["first"]["failures"] == 0  # type: ignore[attr-defined]  # skipped, not failed


async def test_reset_closes_the_shared_breaker() -> None:
    store = MemoryStore(shared=True)
    a = SharedCircuitBreaker(store, "r:m", 1, 600.0)
    b = SharedCircuitBreaker(store, "r:m", 1, 600.0)
    await a.report(await a.admit() or Admission.NORMAL, False)
    assert await b.admit() is None
    await a.areset()
    assert await b.admit() is Admission.NORMAL
