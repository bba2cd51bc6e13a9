"""The stream layer: the assembler's folding rules, attempts, abandoned streams, the request contract."""

from __future__ import annotations

import asyncio
import gc
import importlib
import warnings
from collections.abc import AsyncIterator

import pytest

from zeph_providers import (
    BaseProvider,
    Capabilities,
    ChatOptions,
    ContentChunk,
    EndChunk,
    Message,
    ProviderTimeoutError,
    ProviderUnavailableError,
    ToolCall,
    ToolUseChunk,
    Usage,
    UsageChunk,
)
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.stream import ResponseAssembler
from zeph_providers.types import StreamChunk

HANG_GUARD = 30.0
USER = [Message.user("hi")]


# ----- ResponseAssembler --------------------------------------------------------------------


def test_usage_chunks_are_summed_not_replaced() -> None:
    assembler = ResponseAssembler(provider="p", model="m")
    assembler.add(UsageChunk(usage=Usage(input_tokens=10, output_tokens=1, cache_read_tokens=3)))
    assembler.add(ContentChunk(text="hi"))
    assembler.add(UsageChunk(usage=Usage(input_tokens=0, output_tokens=5, cache_write_tokens=2)))
    usage = assembler.response().usage
    assert (usage.input_tokens, usage.output_tokens) == (10, 6)
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (3, 2)


def test_tool_calls_promote_a_stop_finish_to_tool_use() -> None:
    assembler = ResponseAssembler(provider="p", model="m")
    assembler.add(ToolUseChunk(tool_call=ToolCall(id="c1", name="f", arguments={})))
    assembler.add(EndChunk(finish_reason="stop"))
    assert assembler.response().finish_reason == "tool_use"


def test_tool_calls_promote_a_missing_finish_but_not_length() -> None:
    promoted = ResponseAssembler(provider="p", model="m")
    promoted.add(ToolUseChunk(tool_call=ToolCall(id="c1", name="f")))
    assert promoted.response().finish_reason == "tool_use"
    cut = ResponseAssembler(provider="p", model="m")
    cut.add(ToolUseChunk(tool_call=ToolCall(id="c1", name="f")))
    cut.add(EndChunk(finish_reason="length"))
    assert cut.response().finish_reason == "length"
    plain = ResponseAssembler(provider="p", model="m")
    plain.add(EndChunk(finish_reason="stop"))
    assert plain.response().finish_reason == "stop"


async def test_a_provider_saying_stop_with_tool_calls_reports_tool_use() -> None:
    call = ToolCall(id="c1", name="get_weather", arguments={"city": "Paris"})
    mock = MockProvider(replies=[MockReply(tool_calls=[call], finish_reason="stop")] * 2)
    resp = await mock.chat(USER)
    stream = mock.chat_stream(USER)
    await stream.collect()
    assert resp.finish_reason == stream.response.finish_reason == "tool_use"


# ----- attempts -----------------------------------------------------------------------------


async def test_a_reply_records_its_one_attempt() -> None:
    mock = MockProvider(replies=["hello there"])
    resp = await mock.chat(USER)
    assert [(a.provider, a.outcome) for a in resp.attempts] == [("mock", "ok")]
    attempt = resp.attempts[0]
    assert attempt.ok and not attempt.timed_out
    assert attempt.time_to_first_chunk is not None
    assert 0 <= attempt.time_to_first_chunk <= attempt.duration
    async with mock.chat_stream(USER) as stream:
        await stream.collect()
    assert [a.outcome for a in stream.response.attempts] == ["ok"]
    assert stream.response == resp  # attempts never take part in equality


async def test_a_failed_call_carries_its_attempts_on_the_error() -> None:
    mock = MockProvider(replies=[MockReply(error=ProviderUnavailableError("HTTP 503", provider="mock"))])
    with pytest.raises(ProviderUnavailableError) as info:
        await mock.chat(USER)
    assert [(a.provider, a.outcome) for a in info.value.attempts] == [("mock", "ProviderUnavailableError")]
    assert info.value.attempts[0].error == "HTTP 503"


async def test_a_deadline_is_recorded_as_a_timed_out_attempt() -> None:
    mock = MockProvider(replies=[MockReply(text="slow words here", delay_secs=5.0)], chunk_size=2)
    with pytest.raises(ProviderTimeoutError) as info:
        await asyncio.wait_for(mock.chat(USER, timeout=0.1), HANG_GUARD)
    attempts = list(info.value.attempts)
    assert [a.outcome for a in attempts] == ["ProviderTimeoutError"]
    assert attempts[0].timed_out


# ----- abandoned streams (issue 10, item 8) -------------------------------------------------


class _Held(BaseProvider):
    """Streams one chunk, then waits forever; records when its request is released."""

    def __init__(self) -> None:
        super().__init__("held", "held-1", capabilities=Capabilities(), max_concurrent=1, default_timeout=3600)
        self.released = asyncio.Event()
        self.opened = 0

    async def stream_chunks(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        self.opened += 1
        try:
            yield ContentChunk(text="first")
            await asyncio.Event().wait()
        finally:
            self.released.set()


async def test_breaking_out_of_an_unmanaged_stream_releases_the_request_and_its_slot() -> None:
    provider = _Held()
    async for _chunk in provider.chat_stream(USER):  # no `async with`, no aclose()
        break
    gc.collect()  # not needed on CPython (refcounting), but keeps the test honest elsewhere
    # Released long before the 3600 s deadline: the request ended and the only slot is free again.
    await asyncio.wait_for(provider.released.wait(), HANG_GUARD)
    provider.released.clear()
    async for _chunk in provider.chat_stream(USER):
        break
    await asyncio.wait_for(provider.released.wait(), HANG_GUARD)
    assert provider.opened == 2


async def test_the_public_extension_points_and_the_private_aliases_both_work() -> None:
    class Public(BaseProvider):
        async def stream_chunks(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
            yield ContentChunk(text="public")

        async def embed_texts(self, texts: list[str]) -> list[list[float]]:
            return [[1.0] for _ in texts]

    class Private(BaseProvider):
        async def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
            yield ContentChunk(text="private")

        async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
            return [[2.0] for _ in texts]

    caps = Capabilities(embeddings=True)
    assert (await Public("a", "m", capabilities=caps).chat(USER)).text == "public"
    assert (await Private("b", "m", capabilities=caps).chat(USER)).text == "private"
    assert await Public("a", "m", capabilities=caps).embed("x") == [1.0]
    assert await Private("b", "m", capabilities=caps).embed("x") == [2.0]


# ----- the request contract and the deadline ------------------------------------------------


def test_options_from_kwargs_normalise_and_refuse_unknown_keywords() -> None:
    options = ChatOptions.from_kwargs({"stop": "END", "tools": None, "timeout": 5}, stream=False)
    assert options.stop == ("END",) and options.tools == () and not options.stream
    assert ChatOptions.from_kwargs(options.to_kwargs()) == ChatOptions.from_kwargs({"stop": ["END"], "timeout": 5})
    with pytest.raises(TypeError, match="max_token"):
        ChatOptions.from_kwargs({"max_token": 3})  # type: ignore[typeddict-unknown-key]


def test_the_deadline_is_fixed_once_and_only_ever_tightened() -> None:
    started = ChatOptions().started(10.0, now=100.0)
    assert (started.timeout, started.deadline) == (10.0, 110.0)
    assert started.started(99.0).deadline == 110.0  # a set deadline is kept (a router's, for its member)
    assert ChatOptions(timeout=2.0).started(10.0, now=0.0).deadline == 2.0  # the call's timeout wins
    assert ChatOptions().started(None).deadline is None
    assert started.within(None) is started
    assert started.within(10_000.0).deadline == 110.0  # a member's own timeout never extends it


async def test_a_router_member_reads_the_routers_deadline() -> None:
    from zeph_providers.backends.router import RouterProvider

    member = MockProvider("a")
    router = RouterProvider("r", ["a"], lambda _name: member, timeout_secs=50.0)
    stream = router.chat_stream(USER)
    await stream.collect()
    seen = member.requests[0].options
    assert stream.options.deadline is not None
    assert seen.deadline == stream.options.deadline  # the same monotonic value, not recomputed


def test_moved_names_still_import_from_protocol_with_a_deprecation_warning() -> None:
    protocol = importlib.import_module("zeph_providers.protocol")
    import zeph_providers

    for name in ("BaseProvider", "ChatStream", "ResponseAssembler", "ChatOptions", "Capabilities"):
        with pytest.warns(DeprecationWarning, match=name):
            moved = getattr(protocol, name)
        assert moved is getattr(zeph_providers, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert protocol.LlmProvider is zeph_providers.LlmProvider
        assert protocol.ChatKwargs is zeph_providers.ChatKwargs


async def test_breaking_out_of_a_routed_stream_releases_the_members_slot() -> None:
    from zeph_providers.backends.router import RouterProvider

    member = _Held()
    router = RouterProvider("r", ["held"], lambda _name: member, timeout_secs=3600)
    async for _chunk in router.chat_stream(USER):
        break
    await asyncio.wait_for(member.released.wait(), HANG_GUARD)
    assert router.status()["held"]["state"] == "closed"
