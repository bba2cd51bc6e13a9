"""The call hooks: fired from the shared seam for chat, streams, errors, retries, routers, embeddings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from zeph_providers import BaseProvider, Message, RateLimitError
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.backends.router import RouterProvider
from zeph_providers.errors import InvalidRequestError, LlmError
from zeph_providers.hooks import Call, Hook, add_hook, remove_hook
from zeph_providers.options import Capabilities, ChatOptions
from zeph_providers.retry import RetryPolicy, retry_stream
from zeph_providers.types import Attempt, ContentChunk, EndChunk, StreamChunk, Usage, UsageChunk

HELLO = [Message.user("hello there")]


class Recorder(Hook):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.calls: list[Call] = []

    def before_request(self, call: Call) -> None:
        self.calls.append(call)
        self.events.append(("before", call.provider, call.operation))

    def after_attempt(self, call: Call, attempt: Attempt) -> None:
        self.events.append(("attempt", call.provider, attempt.outcome))

    def after_call(self, call: Call) -> None:
        self.events.append(("after", call.provider, type(call.error).__name__ if call.error else "ok"))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    hook = Recorder()
    add_hook(hook)
    yield hook
    remove_hook(hook)


async def test_chat_fires_before_attempt_after_in_order(recorder: Recorder) -> None:
    mock = MockProvider(replies=["Hi there friend"])
    resp = await mock.chat(HELLO, temperature=0.2)
    assert recorder.events == [("before", "mock", "chat"), ("attempt", "mock", "ok"), ("after", "mock", "ok")]
    call = recorder.calls[0]
    assert call.response is resp and call.error is None
    assert call.attempts == resp.attempts and len(call.own_attempts) == 1
    assert call.options is not None and call.options.temperature == 0.2 and not call.streaming
    assert call.messages == HELLO and call.backend == "mock" and call.model == "mock-1"
    assert call.duration is not None and call.duration >= 0


async def test_stream_reports_time_to_first_chunk_and_nothing_before_iteration(recorder: Recorder) -> None:
    mock = MockProvider(replies=["abcdefgh"], chunk_size=2)
    stream = mock.chat_stream(HELLO)
    assert recorder.events == []  # nothing is sent (or reported) until the stream is read
    async with stream:
        chunks = [c async for c in stream]
    assert len(chunks) > 2
    call = recorder.calls[0]
    assert call.streaming and call.time_to_first_chunk is not None
    assert call.response is stream.response
    assert [e[0] for e in recorder.events] == ["before", "attempt", "after"]


async def test_error_reaches_after_call_with_the_typed_error(recorder: Recorder) -> None:
    mock = MockProvider(replies=[MockReply(error=RateLimitError("slow down"))])
    with pytest.raises(RateLimitError):
        await mock.chat(HELLO)
    assert recorder.events[-2:] == [("attempt", "mock", "RateLimitError"), ("after", "mock", "RateLimitError")]
    assert recorder.calls[0].response is None


async def test_stream_closed_early_ends_the_call_cancelled(recorder: Recorder) -> None:
    mock = MockProvider(replies=["a long reply in many chunks"], chunk_size=2)
    async with mock.chat_stream(HELLO) as stream:
        async for _ in stream:
            break
    assert recorder.events[-2:] == [("attempt", "mock", "cancelled"), ("after", "mock", "CancelledError")]


class Flaky(BaseProvider):
    """A backend that uses the shared retry loop: one 429 with Retry-After, then an answer."""

    backend = "flaky"

    def __init__(self) -> None:
        super().__init__("flaky", "flaky-1", capabilities=Capabilities())
        self.tries = 0

    def stream_chunks(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        return retry_stream(
            self._once, RetryPolicy(max_retries=2, base_delay=0.0), deadline=options.deadline, provider=self.name
        )

    async def _once(self) -> AsyncIterator[StreamChunk]:
        self.tries += 1
        if self.tries == 1:
            raise RateLimitError("busy", provider=self.name, retry_after=0.01)
        yield ContentChunk(text="ok")
        yield UsageChunk(usage=Usage(input_tokens=2, output_tokens=1))
        yield EndChunk(model="flaky-1")


async def test_retry_reports_each_try_as_it_ends(recorder: Recorder) -> None:
    resp = await Flaky().chat(HELLO)
    assert recorder.events == [
        ("before", "flaky", "chat"),
        ("attempt", "flaky", "RateLimitError"),
        ("attempt", "flaky", "ok"),
        ("after", "flaky", "ok"),
    ]
    call = recorder.calls[0]
    assert call.own_attempts == resp.attempts
    assert resp.attempts[1].wait >= 0.01  # Retry-After honoured and recorded


async def test_router_members_are_child_calls(recorder: Recorder) -> None:
    a = MockProvider("a", replies=[MockReply(error=RateLimitError("busy"))])
    b = MockProvider("b", replies=["from b"])
    members = {"a": a, "b": b}
    router = RouterProvider("smart", ["a", "b"], members.__getitem__)
    resp = await router.chat(HELLO)
    assert resp.provider == "b"
    assert [e for e in recorder.events if e[0] != "attempt"] == [
        ("before", "smart", "chat"),
        ("before", "a", "chat"),
        ("after", "a", "RateLimitError"),
        ("before", "b", "chat"),
        ("after", "b", "ok"),
        ("after", "smart", "ok"),
    ]
    by_name = {c.provider: c for c in recorder.calls}
    assert by_name["a"].parent is by_name["smart"] and by_name["b"].parent is by_name["smart"]
    assert by_name["smart"].parent is None and by_name["smart"].children == 2
    assert by_name["smart"].own_attempts == []  # its tries are its members' calls
    assert [a.provider for a in by_name["smart"].attempts] == ["a", "b"]


async def test_a_hook_may_refuse_the_call_before_anything_is_sent() -> None:
    class Gate(Hook):
        def __init__(self) -> None:
            self.ended: list[Call] = []

        def before_request(self, call: Call) -> None:
            raise InvalidRequestError("not today", provider=call.provider)

        def after_call(self, call: Call) -> None:
            self.ended.append(call)

    mock = MockProvider()
    gate = mock.hooks.add(Gate())
    with pytest.raises(InvalidRequestError) as info:
        await mock.chat(HELLO)
    assert mock.requests == [] and info.value.attempts == []
    assert isinstance(gate, Gate) and len(gate.ended) == 1 and isinstance(gate.ended[0].error, InvalidRequestError)


async def test_a_broken_hook_never_breaks_a_call(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Hook):
        def before_request(self, call: Call) -> None:
            raise RuntimeError("bug in a subscriber")

        def after_call(self, call: Call) -> None:
            raise RuntimeError("bug in a subscriber")

    mock = MockProvider(replies=["fine"])
    mock.hooks.add(Broken())
    assert (await mock.chat(HELLO)).text == "fine"
    assert "failed in before_request" in caplog.text and "failed in after_call" in caplog.text


async def test_embeddings_are_calls_too(recorder: Recorder) -> None:
    mock = MockProvider()
    vectors = await mock.embed_batch(["one", "two"])
    assert len(vectors) == 2
    assert recorder.events == [
        ("before", "mock", "embeddings"),
        ("attempt", "mock", "ok"),
        ("after", "mock", "ok"),
    ]
    assert recorder.calls[0].texts == ["one", "two"]


async def test_router_embeddings_nest_member_calls(recorder: Recorder) -> None:
    a = MockProvider("a")
    router = RouterProvider("smart", ["a"], {"a": a}.__getitem__)
    await router.embed("x")
    smart, member = recorder.calls
    assert (smart.provider, member.provider) == ("smart", "a") and member.parent is smart


async def test_provider_hooks_layer_over_registry_and_global(recorder: Recorder) -> None:
    from zeph_providers import Registry

    registry = Registry.from_dict({"llm": {"telemetry": False, "providers": [{"name": "m", "type": "mock"}]}})
    mine = registry.hooks.add(Recorder())
    provider = registry.get("m")
    await provider.chat(HELLO)
    assert isinstance(mine, Recorder) and [e[0] for e in mine.events] == ["before", "attempt", "after"]
    assert [e[0] for e in recorder.events] == ["before", "attempt", "after"]  # the global one too
    await registry.aclose()


async def test_no_subscribers_means_no_call_record() -> None:
    mock = MockProvider()
    assert mock.new_call("chat") is None
    mock.hooks.add(Hook())
    assert isinstance(mock.new_call("chat"), Call)


async def test_concurrent_calls_keep_their_own_parents(recorder: Recorder) -> None:
    members = {name: MockProvider(name, replies=[f"from {name}"], delay_secs=0.001) for name in ("a", "b")}
    routers = [RouterProvider(f"r{i}", ["a", "b"], members.__getitem__) for i in range(5)]
    await asyncio.gather(*(r.chat(HELLO) for r in routers for _ in range(4)))
    for call in recorder.calls:
        if call.provider in ("a", "b"):
            assert call.parent is not None and call.parent.provider.startswith("r")
    assert all(c.ended for c in recorder.calls)
    assert not any(isinstance(c.error, LlmError) for c in recorder.calls)
