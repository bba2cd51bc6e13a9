"""Fleet routing over mock members: least_busy and weighted selection, weight validation, active
health checks feeding the breakers, and members at their client-side rate limit tried last.

The real fleet (three llama.cpp server processes, one killed and restarted) is
tests/scaling/test_fleet.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.backends import HANG_GUARD_SECS
from tests.router.helpers import USER, mock, router
from zeph_providers import ConfigError, ProviderUnavailableError, Registry
from zeph_providers.backends.mock import MockProvider, MockReply, MockRequest
from zeph_providers.backends.router import RouterProvider
from zeph_providers.errors import InvalidRequestError, UnsupportedCapabilityError
from zeph_providers.limits import RateLimiter
from zeph_providers.models_info import ModelInfo
from zeph_providers.options import ChatOptions
from zeph_providers.state import MemoryStore
from zeph_providers.types import Message, StreamChunk

SECRET = "sk-live-0123456789abcdefSECRET"


class Held(MockProvider):
    """A member whose calls wait on a gate while `hold` is set (to keep calls in flight)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, f"{name}-model", replies=[f"from {name}"])
        self.hold = False
        self.gate = asyncio.Event()
        self.entered = 0

    async def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        self.entered += 1
        if self.hold:
            await self.gate.wait()
        async for chunk in super()._stream(messages, options):
            yield chunk


class Flippable(MockProvider):
    """A member the test turns healthy or failing; it lists models unless `lists_models=False`."""

    def __init__(self, name: str, *replies: MockReply | str, lists_models: bool = True) -> None:
        super().__init__(name, f"{name}-model", replies=list(replies) or [f"from {name}"])
        self.healthy = True
        self.lists_models = lists_models
        self.model_probes = 0

    def _down(self) -> ProviderUnavailableError:
        return ProviderUnavailableError(f"connection refused (key {SECRET})", provider=self.name)

    async def list_models(self, *, refresh: bool = False) -> list[ModelInfo]:
        if not self.lists_models:
            raise UnsupportedCapabilityError("list_models", provider=self.name)
        self.model_probes += 1
        if not self.healthy:
            raise self._down()
        return await super().list_models(refresh=refresh)

    async def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        if not self.healthy:
            self.requests.append(MockRequest(messages=messages, options=options))
            raise self._down()
        async for chunk in super()._stream(messages, options):
            yield chunk


class StubLimiter(RateLimiter):
    """A real limiter (generous limits on a MemoryStore: `acquire` always admits) whose answer to
    the router's `has_capacity` question the test sets: the router's skip decision, isolated."""

    def __init__(self, *, full: bool = False, broken: bool = False) -> None:
        super().__init__("stub", rpm=100_000, store=MemoryStore(), wait=False)
        self.full = full
        self.broken = broken
        self.asked: list[int] = []

    async def has_capacity(self, estimated_tokens: int = 0) -> bool:
        self.asked.append(estimated_tokens)
        if self.broken:
            raise RuntimeError("limiter store unreachable")
        return not self.full


def build(members: list[MockProvider], **options: Any) -> RouterProvider:
    by_name = {member.name: member for member in members}
    return RouterProvider("fleet", list(by_name), by_name.__getitem__, **options)


async def until(condition: Any, what: str) -> None:
    """Wait (polling, never-hang bound only) until `condition()` holds."""
    async with asyncio.timeout(HANG_GUARD_SECS):
        while not condition():  # noqa: ASYNC110 - the state belongs to the code under test
            await asyncio.sleep(0.005)


# ----- least_busy -----------------------------------------------------------------------------


async def test_least_busy_rotates_when_idle() -> None:
    r = router([mock("a"), mock("b"), mock("c")], strategy="least_busy")
    seen = [(await r.chat(USER)).provider for _ in range(6)]
    assert seen == ["a", "b", "c", "a", "b", "c"]  # ties rotate: a quiet fleet still spreads


async def test_least_busy_avoids_the_member_with_calls_in_flight() -> None:
    a, b, c = Held("a"), Held("b"), Held("c")
    a.hold = True
    r = build([a, b, c], strategy="least_busy")
    held = asyncio.create_task(r.chat(USER))
    await until(lambda: a.entered == 1, "a's call to start")
    assert r.status()["a"]["in_flight"] == 1
    # round_robin would give a the 4th request; least_busy never while its call is in flight
    seen = [(await r.chat(USER)).provider for _ in range(6)]
    assert "a" not in seen and set(seen) == {"b", "c"}
    a.gate.set()
    assert (await held).provider == "a"
    assert r.status()["a"]["in_flight"] == 0
    assert "a" in [(await r.chat(USER)).provider for _ in range(3)]


async def test_least_busy_spreads_concurrent_calls() -> None:
    members = [Held(n) for n in ("a", "b", "c")]
    for member in members:
        member.hold = True
    r = build(list(members), strategy="least_busy")
    calls = [asyncio.create_task(r.chat(USER)) for _ in range(9)]
    await until(lambda: sum(m.entered for m in members) == 9, "every call to reach a member")
    assert {name: s["in_flight"] for name, s in r.status().items()} == {"a": 3, "b": 3, "c": 3}
    for member in members:
        member.gate.set()
    assert Counter(resp.provider for resp in await asyncio.gather(*calls)) == {"a": 3, "b": 3, "c": 3}
    assert all(s["in_flight"] == 0 for s in r.status().values())


async def test_least_busy_still_falls_back() -> None:
    a = mock("a", MockReply(error=ProviderUnavailableError("HTTP 503")))
    r = router([a, mock("b")], strategy="least_busy")
    resp = await r.chat(USER)
    assert resp.provider == "b" and len(a.requests) == 1
    assert all(s["in_flight"] == 0 for s in r.status().values())


# ----- weighted -------------------------------------------------------------------------------


async def test_weighted_is_smooth_and_exact_over_a_cycle() -> None:
    r = router([mock("a"), mock("b"), mock("c")], strategy="weighted", weights={"a": 3, "b": 1, "c": 2})
    seen = [(await r.chat(USER)).provider for _ in range(12)]
    assert seen[:6] == ["a", "c", "a", "b", "c", "a"]  # interleaved, not a run of a's
    assert seen[6:] == seen[:6]
    concurrent = await asyncio.gather(*(r.chat(USER) for _ in range(60)))
    assert Counter(resp.provider for resp in concurrent) == {"a": 30, "b": 10, "c": 20}


async def test_weighted_members_left_out_weigh_one() -> None:
    r = router([mock("a"), mock("b")], strategy="weighted", weights={"a": 2})
    assert r.status()["b"]["weight"] == 1 and r.status()["a"]["weight"] == 2
    assert Counter([(await r.chat(USER)).provider for _ in range(9)]) == {"a": 6, "b": 3}


async def test_weighted_still_falls_back() -> None:
    a = mock("a", MockReply(error=ProviderUnavailableError("HTTP 503")))
    r = router([a, mock("b"), mock("c")], strategy="weighted", weights={"a": 5, "b": 1, "c": 3})
    resp = await r.chat(USER)
    assert resp.provider == "c"  # after the leader, the rest by weight
    assert [attempt.provider for attempt in resp.attempts] == ["a", "c"]


def test_weight_mistakes_are_one_config_error_listing_them() -> None:
    data = {
        "llm": {
            "providers": [
                {"name": "a", "type": "mock"},
                {"name": "b", "type": "mock"},
                {
                    "name": "r",
                    "type": "router",
                    "providers": ["a", "b"],
                    "strategy": "weighted",
                    "weights": {"a": 0, "ghost": 2, "b": -1},
                },
            ]
        }
    }
    with pytest.raises(ConfigError) as caught:
        Registry.from_dict(data)
    text = str(caught.value)
    assert "'ghost'" in text and "unknown members" in text
    assert "'a' = 0" in text and "'b' = -1" in text and "positive integers" in text


def test_weights_without_the_weighted_strategy_are_refused() -> None:
    data = {
        "llm": {
            "providers": [
                {"name": "a", "type": "mock"},
                {"name": "r", "type": "router", "providers": ["a"], "weights": {"a": 2}},
            ]
        }
    }
    with pytest.raises(ConfigError, match='only with strategy = "weighted"'):
        Registry.from_dict(data)


def test_a_router_built_in_code_checks_weights_too() -> None:
    with pytest.raises(ConfigError, match="unknown members 'x'") as caught:
        router([mock("a")], strategy="weighted", weights={"x": 1})
    assert caught.value.provider == "router"
    with pytest.raises(ConfigError, match="least_busy"):
        router([mock("a")], strategy="busiest")


def test_fleet_settings_read_from_config() -> None:
    data = {
        "llm": {
            "providers": [
                {"name": "a", "type": "mock"},
                {"name": "b", "type": "mock"},
                {
                    "name": "r",
                    "type": "router",
                    "providers": ["a", "b"],
                    "strategy": "weighted",
                    "weights": {"a": 4},
                    "health_check_interval_secs": 2.5,
                    "health_check_timeout_secs": 0.5,
                },
            ]
        }
    }
    r = Registry.from_dict(data).get("r")
    assert isinstance(r, RouterProvider)
    assert r.weights == {"a": 4, "b": 1}
    assert r.health is not None and (r.health.interval, r.health.timeout) == (2.5, 0.5)
    assert router([mock("a")]).health is None  # off by default


# ----- health checks --------------------------------------------------------------------------


async def test_a_failed_probe_moves_the_member_behind_the_others() -> None:
    a, b = Flippable("a"), Flippable("b")
    r = build([a, b], health_check_interval_secs=60)
    assert r.health is not None
    a.healthy = False
    await r.health.probe_all()
    status = r.status()["a"]
    assert status["last_probe"]["ok"] is False and status["last_probe"]["error"] == "ProviderUnavailableError"
    assert status["consecutive_failures"] == 1  # counted like a failed call
    a.healthy = True  # the probe said down: a is skipped until the next probe, however it is now
    assert [(await r.chat(USER)).provider for _ in range(3)] == ["b", "b", "b"]
    assert a.requests == []
    await r.health.probe_all()
    assert (await r.chat(USER)).provider == "a"
    await r.aclose()


async def test_a_demoted_member_is_still_tried_when_no_other_answers() -> None:
    a = Flippable("a")
    b = mock("b", MockReply(error=ProviderUnavailableError("HTTP 503")))
    r = build([a, b], health_check_interval_secs=60)
    assert r.health is not None
    a.healthy = False
    await r.health.probe_all()
    a.healthy = True
    resp = await r.chat(USER)
    assert resp.provider == "a"
    assert [attempt.provider for attempt in resp.attempts] == ["b", "a"]


async def test_failed_probes_open_the_breaker_and_a_passing_one_closes_it() -> None:
    a, b = Flippable("a"), Flippable("b")
    r = build([a, b], health_check_interval_secs=60, failure_threshold=3, cooldown_secs=300)
    assert r.health is not None
    a.healthy = False
    for _ in range(3):
        await r.health.probe_all()
    assert r.status()["a"]["state"] == "open"
    assert r.status()["b"]["state"] == "closed" and r.status()["b"]["last_probe"]["ok"] is True
    a.healthy = True
    await r.health.probe_all()  # long before the 300 s cooldown ends
    assert r.status()["a"]["state"] == "closed"
    assert r.status()["a"]["last_probe"]["ok"] is True
    assert (await r.chat(USER)).provider == "a"


async def test_a_failed_probe_reopens_a_half_open_breaker() -> None:
    from tests.router.helpers import FakeClock

    clock = FakeClock()
    a, b = Flippable("a"), Flippable("b")
    r = build([a, b], health_check_interval_secs=60, failure_threshold=1, cooldown_secs=10, clock=clock)
    assert r.health is not None
    a.healthy = False
    await r.health.probe_all()
    assert r.status()["a"]["state"] == "open"
    clock.advance(11)
    assert r.status()["a"]["state"] == "half_open"
    await r.health.probe_all()  # the probe takes the half-open slot and fails it
    assert r.status()["a"]["state"] == "open" and r.status()["a"]["times_opened"] == 2


async def test_probe_successes_do_not_mask_failing_calls() -> None:
    a = Flippable("a", MockReply(error=ProviderUnavailableError("HTTP 500")))
    r = build([a, mock("b")], health_check_interval_secs=60, failure_threshold=2)
    assert r.health is not None
    await r.chat(USER)
    await r.health.probe_all()  # the models list works; the chat did not
    await r.chat(USER)
    assert r.status()["a"]["state"] == "open"


async def test_members_without_a_model_list_get_a_one_token_chat() -> None:
    a = Flippable("a", lists_models=False)
    r = build([a], health_check_interval_secs=60)
    assert r.health is not None
    await r.health.probe_all()
    await r.health.probe_all()
    assert r.status()["a"]["last_probe"]["kind"] == "chat"
    assert [request.options.max_tokens for request in a.requests] == [1, 1]
    m = Flippable("m")
    r2 = build([m], health_check_interval_secs=60)
    assert r2.health is not None
    await r2.health.probe_all()
    assert r2.status()["m"]["last_probe"]["kind"] == "models" and m.model_probes == 1 and m.requests == []


class Broken(MockProvider):
    async def list_models(self, *, refresh: bool = False) -> list[ModelInfo]:
        raise RuntimeError("plugin bug")


class Hanging(MockProvider):
    async def list_models(self, *, refresh: bool = False) -> list[ModelInfo]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_probes_never_raise_and_give_up_at_their_timeout() -> None:
    broken, hanging = Broken("broken"), Hanging("hanging")
    r = build([broken, hanging], health_check_interval_secs=60, health_check_timeout_secs=0.05)
    assert r.health is not None
    async with asyncio.timeout(HANG_GUARD_SECS):
        await r.health.probe_all()
    status = r.status()
    assert status["broken"]["last_probe"]["error"] == "RuntimeError"
    assert status["hanging"]["last_probe"]["error"] == "ProviderTimeoutError"


async def test_probes_log_at_debug_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    a = Flippable("a")
    a.healthy = False
    r = build([a], health_check_interval_secs=60)
    assert r.health is not None
    with caplog.at_level(logging.DEBUG, logger="zeph_providers.router"):
        await r.health.probe_all()
    probe_lines = [rec for rec in caplog.records if "health probe" in rec.getMessage()]
    assert probe_lines and all(rec.levelno == logging.DEBUG for rec in probe_lines)
    assert "'a'" in probe_lines[0].getMessage() and "ProviderUnavailableError" in probe_lines[0].getMessage()
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps(r.status())


async def test_the_probe_task_starts_on_first_use_and_stops_on_aclose() -> None:
    a, b = Flippable("a"), Flippable("b")
    r = build([a, b], health_check_interval_secs=0.01)
    health = r.health
    assert health is not None
    assert not health.running and health.rounds == 0  # building starts nothing
    await r.chat(USER)
    assert health.running
    await until(lambda: health.rounds >= 3, "three probe rounds")
    a.healthy = False
    await until(lambda: "a" in health.down(), "the probe to notice a")
    assert (await r.chat(USER)).provider == "b"
    a.healthy = True
    await until(lambda: not health.down(), "a to pass its probe again")
    await r.aclose()
    assert not health.running
    probes = a.model_probes
    await asyncio.sleep(0.05)
    assert a.model_probes == probes  # nothing probes after aclose


async def test_a_probe_task_left_in_a_closed_loop_is_replaced() -> None:
    a = Flippable("a")
    r = build([a], health_check_interval_secs=0.01)
    health = r.health
    assert health is not None

    def in_another_loop() -> None:
        async def use() -> None:
            await r.chat(USER)
            await until(lambda: health.rounds >= 1, "a probe round")

        asyncio.run(use())

    await asyncio.to_thread(in_another_loop)
    rounds = health.rounds
    await r.chat(USER)  # this loop: the old task's loop is gone, a new task starts here
    await until(lambda: health.rounds > rounds, "a probe round in this loop")
    await r.aclose()
    assert not health.running


# ----- client-side rate limits ----------------------------------------------------------------


async def test_a_member_at_its_rate_limit_is_skipped() -> None:
    a, b = mock("a"), mock("b")
    limiter = StubLimiter(full=True)
    a.rate_limiter = limiter
    r = router([a, b])
    resp = await r.chat(USER, max_tokens=50)
    assert resp.provider == "b" and a.requests == []
    assert limiter.asked and limiter.asked[0] > 50  # the estimate covers the prompt and the reply
    limiter.full = False
    assert (await r.chat(USER)).provider == "a"


async def test_a_member_whose_real_rpm_is_spent_is_skipped() -> None:
    a, b = mock("a"), mock("b")
    a.rate_limiter = RateLimiter("a", rpm=1, store=MemoryStore(), wait=False)
    r = router([a, b])
    assert (await r.chat(USER)).provider == "a"  # a's one request this minute
    assert (await r.chat(USER)).provider == "b"  # a has no capacity left: tried after b
    assert len(a.requests) == 1


async def test_when_every_member_is_at_its_limit_the_first_one_gets_the_call() -> None:
    members = [mock(n) for n in ("a", "b", "c")]
    for member in members:
        member.rate_limiter = StubLimiter(full=True)
    r = router(members, strategy="round_robin")
    assert [(await r.chat(USER)).provider for _ in range(3)] == ["a", "b", "c"]  # the strategy's first


async def test_a_limiter_that_fails_to_answer_does_not_fail_the_call() -> None:
    a = mock("a")
    a.rate_limiter = StubLimiter(broken=True)
    assert (await router([a, mock("b")]).chat(USER)).provider == "a"


async def test_embeddings_skip_a_member_at_its_limit() -> None:
    a, b = mock("a"), mock("b")
    a.rate_limiter = StubLimiter(full=True)
    r = router([a, b])
    assert await r.embed("hello") == await b.embed("hello")
    assert r.status()["a"]["attempts"] == 0 and r.status()["b"]["attempts"] == 1


# ----- status ---------------------------------------------------------------------------------


async def test_status_shows_in_flight_weights_and_probes_as_json() -> None:
    a, b = Flippable("a"), Flippable("b")
    r = build([a, b], strategy="weighted", weights={"a": 2}, health_check_interval_secs=60)
    assert r.health is not None
    assert r.status()["a"]["last_probe"] is None  # not probed yet
    await r.health.probe_all()
    status = json.loads(json.dumps(r.status()))
    assert status["a"]["weight"] == 2 and status["b"]["weight"] == 1
    assert status["a"]["in_flight"] == 0
    probe = status["a"]["last_probe"]
    assert probe["ok"] is True and probe["kind"] == "models" and probe["error"] is None
    assert probe["latency_ms"] >= 0 and probe["at"] > 0
    assert router([mock("x")]).status()["x"]["weight"] is None


async def test_our_own_rate_limit_never_trips_the_members_breaker() -> None:
    """The router thinks `a` has room (its estimate is optimistic), `a`'s own limiter refuses:
    that refusal says nothing about `a`'s health, so `a`'s breaker stays closed."""
    a, b = mock("a"), mock("b")
    a.rate_limiter = Optimistic("a", rpm=1, store=MemoryStore(), wait=False)  # admits 1 request a minute
    r = router([a, b], failure_threshold=1)
    providers = [(await r.chat(USER)).provider for _ in range(4)]
    assert providers == ["a", "b", "b", "b"]
    assert r.breaker("a").state.value == "closed"


class Optimistic(RateLimiter):
    """A real limiter that always tells the router it has room (as an estimate too small may)."""

    async def has_capacity(self, estimated_tokens: int = 0) -> bool:
        return True


class ModelListForbidden(Flippable):
    """Chat works; the model list answers 403/404 (some compatible servers do)."""

    async def list_models(self, *, refresh: bool = False) -> list[ModelInfo]:
        self.model_probes += 1
        raise InvalidRequestError("404 on /v1/models", provider=self.name)


async def test_a_probe_refused_by_the_server_moves_the_member_behind_but_never_opens_its_breaker() -> None:
    a, b = ModelListForbidden("a"), Flippable("b")
    r = build([a, b], failure_threshold=1, health_check_interval_secs=60)
    assert r.health is not None
    for _ in range(3):
        await r.health.probe_all()
    assert r.breaker("a").state.value == "closed"
    assert (await r.chat(USER)).provider == "b"  # behind the healthy one
    b.healthy = False
    assert (await r.chat(USER)).provider == "a"  # still tried: its chat works
