"""The router built from config through the registry: validation, lazy members, and a bounded load test."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

import zeph_providers.backends.mock as mock_backend
from zeph_providers import (
    AllProvidersFailedError,
    ChatResponse,
    ConfigError,
    LlmError,
    Message,
    ProviderUnavailableError,
    RateLimitError,
    Registry,
)
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.backends.router import RouterProvider
from zeph_providers.config import MockConfig
from zeph_providers.errors import BadResponseError, ProviderTimeoutError
from zeph_providers.options import ChatOptions
from zeph_providers.types import ContentChunk, EndChunk, StreamChunk, Usage, UsageChunk

USER = [Message.user("hello")]


def config(*providers: dict[str, Any]) -> dict[str, Any]:
    return {"llm": {"providers": list(providers)}}


def members(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "type": "mock", "responses": []} for n in names]


# ----- config ------------------------------------------------------------------------------


def test_router_naming_an_unknown_provider_is_a_config_error() -> None:
    data = config(*members("a"), {"name": "r", "type": "router", "providers": ["a", "ghost"]})
    with pytest.raises(ConfigError, match="ghost") as caught:
        Registry.from_dict(data)
    assert any(p.provider == "r" and p.field == "providers" for p in caught.value.problems)


def test_router_containing_itself_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot contain itself"):
        Registry.from_dict(config(*members("a"), {"name": "r", "type": "router", "providers": ["a", "r"]}))


def test_bad_strategy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="strategy"):
        Registry.from_dict(config(*members("a"), {"name": "r", "type": "router", "providers": ["a"], "strategy": "x"}))


async def test_routers_in_a_cycle_are_refused_when_built() -> None:
    data = config(
        *members("a"),
        {"name": "r1", "type": "router", "providers": ["a", "r2"]},
        {"name": "r2", "type": "router", "providers": ["r1"]},
    )
    # Found by config loading now (so `check` reports it offline), before anything is built.
    with pytest.raises(ConfigError, match="cycle"):
        Registry.from_dict(data)


# ----- building through the registry ---------------------------------------------------------


async def test_registry_router_builds_members_lazily_and_falls_back() -> None:
    data = config(
        *members("a", "b"),
        {
            "name": "r",
            "type": "router",
            "providers": ["a", "b"],
            "failure_threshold": 2,
            "cooldown_secs": 60,
            "timeout_secs": 5,
        },
    )
    async with Registry.from_dict(data) as registry:
        r = registry.get("r")
        assert isinstance(r, RouterProvider)
        assert set(registry.built()) == {"r"}  # building the router built no member
        assert r.model == "router(a,b)"

        a, b = registry.get("a"), registry.get("b")
        assert isinstance(a, MockProvider) and isinstance(b, MockProvider)
        a.push(MockReply(error=ProviderUnavailableError("HTTP 503", provider="a")))
        b.push(MockReply(text="b answers"))

        resp = await r.chat(USER)
        assert (resp.text, resp.provider, resp.model) == ("b answers", "b", "mock-1")
        await r.chat(USER)
        status = getattr(r, "status", None)
        assert status is not None
        report = json.loads(json.dumps(status()))
        assert report["a"]["state"] == "open" and report["b"]["successes"] == 2
    assert a.closed and b.closed  # the registry, not the router, closed the members


async def test_registry_router_capabilities_resolve_members() -> None:
    data = config(*members("a"), {"name": "r", "type": "router", "providers": ["a"]})
    async with Registry.from_dict(data) as registry:
        r = registry.get("r")
        assert "a" not in registry.built()
        assert r.capabilities.embeddings  # reading capabilities builds the members
        assert "a" in registry.built()
        assert len(await r.embed("x")) == 8


# ----- a bounded load test -------------------------------------------------------------------


class EchoMember(MockProvider):
    """Answers "<member>:<user text>", failing at random (seeded), sometimes mid-stream."""

    def __init__(self, name: str, rng: random.Random, fail_rate: float) -> None:
        super().__init__(name)
        self._rng = rng
        self._fail_rate = fail_rate
        self.answered: list[str] = []

    async def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        request_id = messages[-1].text
        roll = self._rng.random()
        await asyncio.sleep(self._rng.random() * 0.002)
        if roll < self._fail_rate * 0.4:
            raise ProviderUnavailableError("HTTP 503", provider=self.name)
        if roll < self._fail_rate * 0.6:
            raise RateLimitError("HTTP 429", provider=self.name, retry_after=0.0)
        if roll < self._fail_rate * 0.8:
            raise BadResponseError("truncated JSON", provider=self.name)
        yield ContentChunk(text=f"{self.name}:")
        if roll < self._fail_rate:
            raise ProviderTimeoutError("stalled mid-stream", provider=self.name)
        await asyncio.sleep(0)
        yield ContentChunk(text=request_id)
        yield UsageChunk(usage=Usage(input_tokens=1, output_tokens=1))
        yield EndChunk(finish_reason="stop", model=self.model)
        self.answered.append(request_id)


async def test_load_every_request_gets_its_own_answer_or_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(1234)
    built: dict[str, EchoMember] = {}

    def build_echo(cfg: MockConfig, registry: Registry) -> EchoMember:
        member = EchoMember(cfg.name, rng, fail_rate=0.3)
        built[cfg.name] = member
        return member

    monkeypatch.setattr(mock_backend, "build", build_echo)
    threads_before = threading.active_count()
    data = config(
        *members("m1", "m2", "m3"),
        {
            "name": "r",
            "type": "router",
            "providers": ["m1", "m2", "m3"],
            "strategy": "round_robin",
            # Fast failures return before slow successes, so under 200-way concurrency failure
            # streaks come sooner than the 30% rate suggests; a low threshold would mostly test
            # fail-fast (see docs/reliability.md).
            "failure_threshold": 20,
            "cooldown_secs": 0.01,
            "timeout_secs": 10,
            "max_concurrent": 150,
        },
    )
    total, concurrency = 2000, 200
    registry = Registry.from_dict(data)
    router = registry.get("r")
    results: list[ChatResponse | LlmError | None] = [None] * total
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                results[i] = await router.chat([Message.user(f"req-{i}")])
            except LlmError as exc:
                results[i] = exc

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=25)
    status = router.status()  # type: ignore[attr-defined]
    await registry.aclose()

    ok = [i for i, r in enumerate(results) if isinstance(r, ChatResponse)]
    failed = [r for r in results if isinstance(r, LlmError)]
    assert len(ok) + len(failed) == total  # nobody lost
    for i in ok:
        resp = results[i]
        assert isinstance(resp, ChatResponse)
        assert resp.text == f"{resp.provider}:req-{i}"  # its own answer, from the member it names
    answered = Counter(rid for member in built.values() for rid in member.answered)
    assert all(count == 1 for count in answered.values())  # nothing answered twice
    assert set(answered) == {f"req-{i}" for i in ok}
    assert {type(e) for e in failed} <= {AllProvidersFailedError, ProviderTimeoutError}
    assert len(ok) > total * 0.6  # fallback recovers most of a 30% failure rate
    assert sum(entry["successes"] for entry in status.values()) == len(ok)
    assert threading.active_count() == threads_before
