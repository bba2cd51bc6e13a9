"""The router over mock members: strategies, fallback rules, breakers, streams, capabilities, deadlines."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from pydantic import BaseModel

from tests.backends import HANG_GUARD_SECS
from tests.router.helpers import USER, FakeClock, Gauge, PeakMock, mock, router
from zeph_providers import (
    AllProvidersFailedError,
    AuthenticationError,
    BadResponseError,
    ContextLengthError,
    InferenceError,
    InvalidRequestError,
    LlmError,
    Message,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    ToolDefinition,
    UnsupportedCapabilityError,
)
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.backends.router import RouterProvider
from zeph_providers.options import Capabilities
from zeph_providers.types import ContentChunk, EndChunk, ImagePart

TOOL = ToolDefinition(name="weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
NO_TOOLS = Capabilities(streaming=True, embeddings=True, tools=False, vision=True, structured_output=True)


def unavailable(name: str = "") -> MockReply:
    return MockReply(error=ProviderUnavailableError("HTTP 503: down", provider=name or None))


# ----- order and strategies --------------------------------------------------------------


async def test_fallback_tries_members_in_order() -> None:
    a = mock("a", MockReply(error=ProviderUnavailableError("HTTP 503")))
    b = mock("b", MockReply(error=RateLimitError("HTTP 429", retry_after=1.0)))
    c = mock("c", "from c")
    resp = await router([a, b, c]).chat(USER)
    assert resp.text == "from c"
    assert [len(m.requests) for m in (a, b, c)] == [1, 1, 1]


async def test_fallback_stops_at_the_first_success() -> None:
    a, b = mock("a"), mock("b")
    r = router([a, b])
    for _ in range(3):
        assert (await r.chat(USER)).provider == "a"
    assert len(b.requests) == 0


async def test_timeouts_and_bad_responses_fall_back() -> None:
    a = mock("a", MockReply(error=ProviderTimeoutError("slow")))
    b = mock("b", MockReply(error=BadResponseError("garbled")))
    c = mock("c", MockReply(error=InferenceError("worker died")))
    d = mock("d")
    assert (await router([a, b, c, d]).chat(USER)).provider == "d"


async def test_round_robin_rotates_evenly() -> None:
    members = [mock(n) for n in ("a", "b", "c")]
    r = router(members, strategy="round_robin")
    seen = [(await r.chat(USER)).provider for _ in range(6)]
    assert seen == ["a", "b", "c", "a", "b", "c"]
    concurrent = await asyncio.gather(*(r.chat(USER) for _ in range(30)))
    assert Counter(resp.provider for resp in concurrent) == {"a": 10, "b": 10, "c": 10}


async def test_round_robin_still_falls_back() -> None:
    a, b = mock("a", unavailable()), mock("b")
    r = router([a, b], strategy="round_robin", failure_threshold=100)
    assert [(await r.chat(USER)).provider for _ in range(4)] == ["b", "b", "b", "b"]
    assert len(a.requests) == 2  # a was first on every other request


async def test_latency_strategy_learns_a_member_got_slow() -> None:
    # "a" starts fast, then every reply takes 200 ms; "b" always takes 20 ms.
    a = mock("a", *(["from a"] * 3), MockReply(text="from a", delay_secs=0.2))
    b = mock("b", MockReply(text="from b", delay_secs=0.02))
    r = router([a, b], strategy="latency", explore_every=0)
    order = [(await r.chat(USER)).provider for _ in range(8)]
    assert order[:2] == ["a", "b"]  # each member is tried once first
    assert order[2:5] == ["a", "a", "a"]  # a was faster, then answered slowly once
    assert order[5:] == ["b", "b", "b"]  # a's latency EMA climbed past b's
    status = r.status()
    assert status["a"]["ema_latency_ms"] > status["b"]["ema_latency_ms"]


async def test_latency_strategy_learns_from_failures() -> None:
    a = mock("a", MockReply(text="from a", delay_secs=0.005), MockReply(text="from a", delay_secs=0.005), unavailable())
    b = mock("b", MockReply(text="from b", delay_secs=0.02))
    r = router([a, b], strategy="latency", explore_every=0, failure_threshold=100, window_size=0)
    for _ in range(10):
        assert (await r.chat(USER)).provider in ("a", "b")
    tried_a = len(a.requests)
    for _ in range(10):
        assert (await r.chat(USER)).provider == "b"
    # a's falling success EMA moved it behind b (timing noise may let it be tried once more).
    assert len(a.requests) - tried_a <= 1
    assert r.status()["a"]["ema_success"] < 0.5


async def test_latency_strategy_explores_the_stalest_member() -> None:
    a, b = mock("a"), mock("b", MockReply(text="from b", delay_secs=0.02))
    r = router([a, b], strategy="latency", explore_every=5)
    providers = [(await r.chat(USER)).provider for _ in range(10)]
    assert providers.count("b") >= 2  # the first try, then request 5 and 10 explore b
    assert providers[4] == "b" and providers[9] == "b"


# ----- what falls back and what does not ---------------------------------------------------


@pytest.mark.parametrize(
    "error", [InvalidRequestError("HTTP 400: bad field"), AuthenticationError("HTTP 401: check the API key")]
)
async def test_client_errors_do_not_fall_back_by_default(error: LlmError) -> None:
    a, b = mock("a", MockReply(error=error)), mock("b")
    with pytest.raises(type(error)) as caught:
        await router([a, b]).chat(USER)
    assert caught.value.provider == "a"
    assert len(b.requests) == 0


@pytest.mark.parametrize("error", [InvalidRequestError("HTTP 400"), AuthenticationError("HTTP 401")])
async def test_client_errors_fall_back_when_configured(error: LlmError) -> None:
    a, b = mock("a", MockReply(error=error)), mock("b")
    resp = await router([a, b], fallback_on_client_error=True).chat(USER)
    assert resp.provider == "b"


async def test_auth_failures_open_the_breaker_but_invalid_requests_do_not() -> None:
    a = mock("a", MockReply(error=AuthenticationError("HTTP 401")))
    r = router([a, mock("b")], failure_threshold=2)
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            await r.chat(USER)
    assert r.status()["a"]["state"] == "open"
    assert (await r.chat(USER)).provider == "b"  # the broken key is routed around

    bad = mock("a", MockReply(error=InvalidRequestError("HTTP 400")))
    r2 = router([bad, mock("b")], failure_threshold=2)
    for _ in range(3):
        with pytest.raises(InvalidRequestError):
            await r2.chat(USER)
    assert r2.status()["a"]["state"] == "closed"


async def test_context_length_moves_to_the_next_member() -> None:
    a = mock("a", MockReply(error=ContextLengthError("prompt is too long")))
    b = mock("b")
    r = router([a, b], failure_threshold=1)
    assert (await r.chat(USER)).provider == "b"
    assert r.status()["a"]["state"] == "closed"  # the request's size says nothing about a's health


async def test_unsupported_capability_from_a_member_skips_it() -> None:
    a = mock("a", MockReply(error=UnsupportedCapabilityError("thinking")))
    assert (await router([a, mock("b")], failure_threshold=1).chat(USER)).provider == "b"


# ----- breaker through the router ----------------------------------------------------------


async def test_breaker_opens_skips_probes_and_closes() -> None:
    clock = FakeClock()
    a = mock("a", unavailable(), unavailable(), unavailable(), "a is back")
    b = mock("b")
    r = router([a, b], failure_threshold=3, cooldown_secs=10, clock=clock)
    for _ in range(3):
        assert (await r.chat(USER)).provider == "b"
    status = r.status()["a"]
    assert status["state"] == "open"
    assert status["consecutive_failures"] == 3
    assert status["opened_at"] is not None

    clock.advance(5)
    assert (await r.chat(USER)).provider == "b"
    assert len(a.requests) == 3  # skipped during the cooldown

    clock.advance(5)
    assert r.status()["a"]["state"] == "half_open"
    resp = await r.chat(USER)  # the probe
    assert resp.provider == "a"
    assert resp.text == "a is back"
    assert r.status()["a"]["state"] == "closed"
    assert r.status()["a"]["consecutive_failures"] == 0


async def test_failed_probe_reopens_the_breaker() -> None:
    clock = FakeClock()
    a, b = mock("a", unavailable()), mock("b")
    r = router([a, b], failure_threshold=2, cooldown_secs=10, clock=clock)
    for _ in range(2):
        await r.chat(USER)
    clock.advance(10)
    assert (await r.chat(USER)).provider == "b"  # a was probed and failed
    assert len(a.requests) == 3
    assert r.status()["a"]["state"] == "open"
    assert r.status()["a"]["times_opened"] == 2
    assert (await r.chat(USER)).provider == "b"
    assert len(a.requests) == 3  # a new full cooldown


async def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = FakeClock()
    a = mock("a", unavailable(), MockReply(text="probe ok", delay_secs=0.05))
    b = mock("b")
    r = router([a, b], failure_threshold=1, cooldown_secs=10, clock=clock)
    await r.chat(USER)
    clock.advance(10)
    results = await asyncio.gather(*(r.chat(USER) for _ in range(5)))
    assert len(a.requests) == 2  # the first failure + one probe
    assert sorted(resp.provider for resp in results) == ["a", "b", "b", "b", "b"]
    assert r.status()["a"]["state"] == "closed"


async def test_every_member_open_fails_fast_naming_each() -> None:
    clock = FakeClock()
    a, b = mock("a", unavailable()), mock("b", unavailable())
    r = router([a, b], failure_threshold=1, cooldown_secs=60, clock=clock)
    with pytest.raises(AllProvidersFailedError):
        await r.chat(USER)
    with pytest.raises(AllProvidersFailedError, match="circuit open") as caught:
        await r.chat(USER)
    assert [e.provider for e in caught.value.errors] == ["a", "b"]
    assert len(a.requests) == len(b.requests) == 1


async def test_status_is_json_per_member() -> None:
    r = router([mock("a", unavailable()), mock("b")])
    await r.chat(USER)
    status = json.loads(json.dumps(r.status()))
    assert set(status) == {"a", "b"}
    for key in ("state", "consecutive_failures", "ema_latency_ms", "successes", "failures", "opened_at"):
        assert key in status["a"]
    assert status["a"]["failures"] == 1 and status["b"]["successes"] == 1
    assert status["a"]["ema_latency_ms"] is None and status["b"]["ema_latency_ms"] >= 0


# ----- streams -----------------------------------------------------------------------------


async def test_stream_falls_back_before_the_first_chunk() -> None:
    a, b = mock("a", unavailable()), mock("b", "streamed by b")
    async with router([a, b]).chat_stream(USER) as stream:
        chunks = [chunk async for chunk in stream]
    text = "".join(c.text for c in chunks if isinstance(c, ContentChunk))
    assert text == "streamed by b"
    assert stream.response.provider == "b"
    assert stream.response.model == "b-model"
    assert isinstance(chunks[-1], EndChunk) and chunks[-1].provider == "b"


async def test_stream_error_after_the_first_chunk_reaches_the_caller() -> None:
    failing = MockReply(text="hello world", error=ProviderUnavailableError("connection reset"), error_after_chunks=1)
    a, b = mock("a", failing), mock("b")
    r = router([a, b])
    received: list[str] = []
    with pytest.raises(ProviderUnavailableError) as caught:
        async with r.chat_stream(USER) as stream:
            async for chunk in stream:
                if isinstance(chunk, ContentChunk):
                    received.append(chunk.text)
    assert received == ["hell"]  # what was streamed stays with the caller
    assert caught.value.provider == "a"
    assert not isinstance(caught.value, AllProvidersFailedError)
    assert len(b.requests) == 0  # never repeated on another member
    assert r.status()["a"]["failures"] == 1


async def test_closing_a_stream_early_leaves_the_breaker_alone() -> None:
    clock = FakeClock()
    a = mock("a", unavailable(), MockReply(text="a long reply from a", delay_secs=0.001))
    r = router([a, mock("b")], failure_threshold=1, cooldown_secs=1, clock=clock)
    await r.chat(USER)
    clock.advance(1)
    async with r.chat_stream(USER) as stream:
        async for _ in stream:
            break  # the probe is abandoned, not failed
    assert r.status()["a"]["state"] == "half_open"
    assert (await r.chat(USER)).provider == "a"  # the next request may probe
    assert r.status()["a"]["state"] == "closed"


# ----- capabilities ------------------------------------------------------------------------


async def test_tools_go_only_to_tool_capable_members() -> None:
    a = mock("a", capabilities=NO_TOOLS)
    b = mock("b")
    r = router([a, b])
    resp = await r.chat(USER, tools=[TOOL])
    assert resp.provider == "b"
    assert len(a.requests) == 0
    assert (await r.chat(USER)).provider == "a"  # plain chat still goes first to a


async def test_vision_and_structured_output_route_by_capability() -> None:
    class Answer(BaseModel):
        value: int

    plain = Capabilities(streaming=True)
    a = mock("a", capabilities=plain)
    b = mock("b", '{"value": 7}')
    r = router([a, b])
    image = Message.user("what is this?", images=[ImagePart(data=b"\x89PNG", mime_type="image/png")])
    assert (await r.chat([image])).provider == "b"
    resp = await r.chat(USER, response_format=Answer)
    assert resp.provider == "b" and resp.parsed == Answer(value=7)
    assert len(a.requests) == 0


async def test_no_capable_member_raises_unsupported_capability() -> None:
    r = router([mock("a", capabilities=NO_TOOLS), mock("b", capabilities=NO_TOOLS)])
    with pytest.raises(UnsupportedCapabilityError, match="tools") as caught:
        await r.chat(USER, tools=[TOOL])
    assert caught.value.provider == "router"


async def test_no_single_member_with_every_needed_capability() -> None:
    a = mock("a", capabilities=Capabilities(tools=True))
    b = mock("b", capabilities=Capabilities(vision=True))
    r = router([a, b])
    assert r.capabilities.tools and r.capabilities.vision
    image = Message.user("see", images=[ImagePart(data=b"x")])
    with pytest.raises(UnsupportedCapabilityError, match="no single member"):
        await r.chat([image], tools=[TOOL])


async def test_capabilities_are_the_union_of_members() -> None:
    a = mock("a", capabilities=Capabilities(tools=True))
    b = mock("b", capabilities=Capabilities(embeddings=True, thinking=True))
    caps = router([a, b]).capabilities
    assert caps.names() == ["streaming", "embeddings", "tools", "thinking"]


async def test_embed_goes_to_embedding_members_and_falls_back() -> None:
    no_embed = Capabilities(streaming=True, embeddings=False)
    a = mock("a", capabilities=no_embed)
    b = mock("b")
    r = router([a, b])
    assert await r.embed("hi") == await b.embed("hi")
    assert await r.embed_batch([]) == []

    class Broken(type(b)):  # type: ignore[misc]
        async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
            raise ProviderUnavailableError("HTTP 503")

    broken = Broken("x")
    c = mock("c")
    r2 = router([broken, c])
    assert await r2.embed_batch(["p", "q"]) == await c.embed_batch(["p", "q"])
    assert r2.status()["x"]["failures"] == 1


class SlowEmbedder(MockProvider):
    """A member whose embeddings never come, with its own (short) timeout: a plugin that does not
    enforce it itself, as a drip-fed server would hold a call that ignores its deadline."""

    def __init__(self, name: str, *, timeout: float) -> None:
        super().__init__(name, replies=[f"from {name}"])
        self._default_timeout = timeout
        self.embed_calls = 0

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        self.embed_calls += 1
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")


async def test_member_timeout_caps_its_embeddings() -> None:
    """Issue 10 item 6: a member's own timeout caps embed/embed_batch inside a router, as it caps chat.

    The router's deadline (30 s) is far away: before the fix the call waited all of it and failed."""
    slow, fast = SlowEmbedder("slow", timeout=0.2), mock("fast")
    r = router([slow, fast], timeout_secs=30)
    assert await r.embed("hi") == await fast.embed("hi")
    assert await r.embed_batch(["p", "q"]) == await fast.embed_batch(["p", "q"])
    assert slow.embed_calls == 2
    assert r.status()["slow"]["failures"] == 2  # timed out by its own clock: charged to it

    alone = router([SlowEmbedder("slow", timeout=0.2)], timeout_secs=30)
    with pytest.raises(AllProvidersFailedError) as caught:
        await alone.embed("hi")
    (error,) = caught.value.errors
    assert isinstance(error, ProviderTimeoutError)
    assert error.provider == "slow"
    assert "0.2s" in error.message


async def test_embed_without_embedding_members_is_unsupported() -> None:
    r = router([mock("a", capabilities=Capabilities(streaming=True))])
    with pytest.raises(UnsupportedCapabilityError, match="embeddings"):
        await r.embed("hi")


# ----- deadline and the final error ----------------------------------------------------------


async def test_one_deadline_across_hanging_members() -> None:
    hang = MockReply(text="never", delay_secs=30)
    a, b = mock("a", hang), mock("b", hang)
    r = router([a, b], timeout_secs=0.3)
    with pytest.raises(ProviderTimeoutError) as caught:  # not after 2 x 30 s: one deadline for both
        async with asyncio.timeout(HANG_GUARD_SECS):
            await r.chat(USER)
    assert caught.value.provider == "router"
    assert "0.3s deadline" in str(caught.value)


async def test_per_call_timeout_overrides_the_router_timeout() -> None:
    a = mock("a", MockReply(text="never", delay_secs=30))
    r = router([a, mock("b")], timeout_secs=300)
    with pytest.raises(ProviderTimeoutError) as caught:
        async with asyncio.timeout(HANG_GUARD_SECS):
            await r.chat(USER, timeout=0.2)
    assert "a: ProviderTimeoutError" in str(caught.value)  # what each member did
    assert r.status()["a"]["failures"] == 1  # the hung member is charged for it


async def test_all_failed_error_carries_every_member_error() -> None:
    a = mock("a", MockReply(error=ProviderUnavailableError("HTTP 503")))
    b = mock("b", MockReply(error=RateLimitError("HTTP 429", retry_after=2.0)))
    c = mock("c", MockReply(error=ContextLengthError("prompt is too long")))
    with pytest.raises(AllProvidersFailedError) as caught:
        await router([a, b, c]).chat(USER)
    err = caught.value
    assert isinstance(err, ProviderUnavailableError)
    assert [type(e) for e in err.errors] == [ProviderUnavailableError, RateLimitError, ContextLengthError]
    assert [e.provider for e in err.errors] == ["a", "b", "c"]
    assert err.exceptions == tuple(err.errors)
    assert err.provider == "router"
    assert err.retryable  # the 503 and 429 may pass
    for fragment in ("a: ProviderUnavailableError", "b: RateLimitError", "c: ContextLengthError"):
        assert fragment in str(err)
    group = err.as_exception_group()
    assert isinstance(group, ExceptionGroup) and len(group.exceptions) == 3
    assert isinstance(err.__cause__, ExceptionGroup)


async def test_all_failed_with_only_client_errors_is_not_retryable() -> None:
    a = mock("a", MockReply(error=InvalidRequestError("HTTP 400")))
    b = mock("b", MockReply(error=ContextLengthError("too long")))
    with pytest.raises(AllProvidersFailedError) as caught:
        await router([a, b], fallback_on_client_error=True).chat(USER)
    assert not caught.value.retryable


# ----- who answered, concurrency -------------------------------------------------------------


async def test_response_names_the_member_that_answered() -> None:
    a, b = mock("a", unavailable()), mock("b")
    resp = await router([a, b]).chat(USER)
    assert resp.provider == "b"
    assert resp.model == "b-model"
    assert resp.text == "from b"


async def test_nested_router_names_the_leaf_member() -> None:
    inner = router([mock("a", unavailable()), mock("b")])
    outer_members = {"inner": inner}
    from zeph_providers.backends.router import RouterProvider

    outer = RouterProvider("outer", ["inner"], outer_members.__getitem__)
    assert (await outer.chat(USER)).provider == "b"


async def test_member_max_concurrent_holds_through_the_router() -> None:
    member = PeakMock("a", max_concurrent=2)
    r = router([member])
    await asyncio.gather(*(r.chat(USER) for _ in range(10)))
    assert member.gauge.peak == 2


async def test_router_max_concurrent_bounds_all_members() -> None:
    gauge = Gauge()
    a, b = PeakMock("a", gauge=gauge), PeakMock("b", gauge=gauge)
    r = router([a, b], strategy="round_robin", max_concurrent=3)
    results = await asyncio.gather(*(r.chat(USER) for _ in range(12)))
    assert Counter(resp.provider for resp in results) == {"a": 6, "b": 6}
    assert gauge.peak == 3
    assert gauge.in_flight == 0


async def test_a_member_that_cannot_be_built_is_skipped_and_reported() -> None:
    from zeph_providers import ConfigError
    from zeph_providers.backends.router import RouterProvider

    b = mock("b")

    def resolve(name: str) -> MockProvider:
        if name == "a":
            raise ConfigError("no API key: set OPENAI_API_KEY", provider="a")
        return b

    r = RouterProvider("router", ["a", "b"], resolve)
    assert (await r.chat(USER)).provider == "b"
    assert r.status()["a"]["built"] is False

    def nothing(name: str) -> MockProvider:
        raise ConfigError("no API key", provider=name)

    with pytest.raises(AllProvidersFailedError, match="no member could be built") as caught:
        await RouterProvider("router", ["a", "b"], nothing).chat(USER)
    assert [type(e) for e in caught.value.errors] == [ConfigError, ConfigError]


# ----- attempts: every try on every member, on the reply and on the error ---------------------


async def test_fallback_records_each_members_attempt_in_order() -> None:
    a = mock("a", MockReply(error=ProviderUnavailableError("HTTP 503")))
    b = mock("b", "from b")
    r = router([a, b])
    resp = await r.chat(USER)
    assert resp.provider == "b"
    assert [(x.provider, x.outcome) for x in resp.attempts] == [("a", "ProviderUnavailableError"), ("b", "ok")]
    assert resp.attempts[0].error is not None and "503" in resp.attempts[0].error
    stream = r.chat_stream(USER)
    await stream.collect()
    assert [(x.provider, x.outcome) for x in stream.response.attempts] == [
        ("a", "ProviderUnavailableError"),
        ("b", "ok"),
    ]


async def test_all_failed_error_carries_every_attempt() -> None:
    a = mock("a", MockReply(error=ProviderUnavailableError("HTTP 503")))
    b = mock("b", MockReply(error=RateLimitError("HTTP 429", retry_after=1.0)))
    with pytest.raises(AllProvidersFailedError) as caught:
        await router([a, b]).chat(USER)
    assert [(x.provider, x.outcome) for x in caught.value.attempts] == [
        ("a", "ProviderUnavailableError"),
        ("b", "RateLimitError"),
    ]


async def test_a_member_cut_off_by_its_own_timeout_is_a_timed_out_attempt() -> None:
    a = mock("a", MockReply(text="never", delay_secs=30))
    a._default_timeout = 0.1  # the member's own timeout, shorter than the router's
    b = mock("b", "from b")
    resp = await router([a, b], timeout_secs=60).chat(USER)
    assert resp.provider == "b"
    assert [(x.provider, x.outcome) for x in resp.attempts] == [("a", "ProviderTimeoutError"), ("b", "ok")]
    assert resp.attempts[0].timed_out


async def test_nested_routers_list_the_leaf_attempts() -> None:
    a = mock("a", MockReply(error=ProviderUnavailableError("HTTP 503")))
    b = mock("b", "from b")
    inner = router([a, b])
    outer = RouterProvider("outer", ["inner"], {"inner": inner}.__getitem__)
    resp = await outer.chat(USER)
    assert [(x.provider, x.outcome) for x in resp.attempts] == [("a", "ProviderUnavailableError"), ("b", "ok")]
