"""The mock backend: chat/stream parity, tool calls, errors mid-stream, delays, concurrency, embeddings."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.errors import LlmError, ProviderTimeoutError, RateLimitError, UnsupportedCapabilityError
from zeph_providers.options import Capabilities
from zeph_providers.registry import Registry
from zeph_providers.types import (
    ContentChunk,
    EndChunk,
    ImagePart,
    Message,
    ThinkingChunk,
    ToolCall,
    ToolDefinition,
    ToolUseChunk,
    Usage,
    UsageChunk,
)

HELLO = [Message.system("Be brief."), Message.user("Say hello")]


async def test_chat_and_stream_give_equal_responses() -> None:
    script = [MockReply(text="Hello there, friend.", thinking="greet them")] * 2
    chat_mock = MockProvider(replies=script, chunk_size=3)
    stream_mock = MockProvider(replies=script, chunk_size=3)
    response = await chat_mock.chat(HELLO)
    chunks = []
    async with stream_mock.chat_stream(HELLO) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    assert stream.response == response
    assert response.text == "Hello there, friend."
    assert response.thinking == "greet them"
    assert response.finish_reason == "stop"
    assert response.provider == "mock" and response.model == "mock-1"
    assert response.usage == Usage(input_tokens=4, output_tokens=3)
    assert "".join(c.text for c in chunks if isinstance(c, ContentChunk)) == response.text
    assert all(len(c.text) <= 3 for c in chunks if isinstance(c, ContentChunk))
    assert isinstance(chunks[0], ThinkingChunk)
    assert isinstance(chunks[-2], UsageChunk) and isinstance(chunks[-1], EndChunk)


async def test_stream_is_a_plain_async_iterator_too() -> None:
    mock = MockProvider(replies=["abcdefgh"], chunk_size=4)
    stream = mock.chat_stream(HELLO)
    texts = [c.text async for c in stream if isinstance(c, ContentChunk)]
    assert texts == ["abcd", "efgh"]
    assert stream.done and stream.response.text == "abcdefgh"


async def test_response_before_end_is_an_error() -> None:
    mock = MockProvider(replies=["abcdefgh"], chunk_size=2)
    async with mock.chat_stream(HELLO) as stream:
        await anext(stream)
        with pytest.raises(LlmError, match="not finished"):
            _ = stream.response


async def test_script_order_and_last_reply_repeats() -> None:
    mock = MockProvider(replies=["one", "two"])
    texts = [(await mock.chat(HELLO)).text for _ in range(4)]
    assert texts == ["one", "two", "two", "two"]
    mock.push("three")
    assert (await mock.chat(HELLO)).text == "three"
    assert (await MockProvider().chat(HELLO)).text == "Hello from the mock provider."


async def test_tool_calls() -> None:
    call = ToolCall(id="call_1", name="weather", arguments={"city": "Paris"})
    mock = MockProvider(replies=[MockReply(text="", tool_calls=[call])])
    tools = [ToolDefinition(name="weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})]
    response = await mock.chat(HELLO, tools=tools, tool_choice="auto")
    assert response.tool_calls == [call]
    assert response.finish_reason == "tool_use"
    assert mock.requests[0].options.tools == tuple(tools)
    assert mock.requests[0].options.tool_choice == "auto"
    stream_mock = MockProvider(replies=[MockReply(tool_calls=[call])])
    chunks = [c async for c in stream_mock.chat_stream(HELLO, tools=tools)]
    assert [c.tool_call for c in chunks if isinstance(c, ToolUseChunk)] == [call]


async def test_error_mid_stream_after_some_chunks() -> None:
    error = RateLimitError("slow down", provider="mock", retry_after=2.0)
    mock = MockProvider(replies=[MockReply(text="abcdefgh", error=error, error_after_chunks=1)], chunk_size=2)
    received = []
    with pytest.raises(RateLimitError) as info:
        async with mock.chat_stream(HELLO) as stream:
            async for chunk in stream:
                received.append(chunk)
    assert info.value.retry_after == 2.0
    assert received == [ContentChunk(text="ab")]
    with pytest.raises(RateLimitError):
        await MockProvider(replies=[MockReply(text="x", error=error)]).chat(HELLO)


async def test_error_after_all_chunks() -> None:
    error = LlmError("cut", provider="mock")
    mock = MockProvider(replies=[MockReply(text="abcd", error=error, error_after_chunks=99)], chunk_size=2)
    with pytest.raises(LlmError, match="cut"):
        await mock.chat(HELLO)
    assert mock.chunks_sent == 2


async def test_delays_and_timeout() -> None:
    mock = MockProvider(replies=["abcdef"], chunk_size=2, delay_secs=0.02)
    began = time.monotonic()
    await mock.chat(HELLO)
    assert time.monotonic() - began >= 0.05
    slow = MockProvider(replies=[MockReply(text="abcdef", delay_secs=0.2)], chunk_size=1)
    with pytest.raises(ProviderTimeoutError):
        await slow.chat(HELLO, timeout=0.05)


async def test_requests_recorded_with_options() -> None:
    mock = MockProvider()
    await mock.chat(HELLO, max_tokens=12, temperature=0.1, stop="END", extra={"repeat_penalty": 1.2})
    request = mock.requests[0]
    assert request.messages == HELLO
    assert request.options.max_tokens == 12
    assert request.options.temperature == 0.1
    assert request.options.stop == ("END",)
    assert request.options.extra == {"repeat_penalty": 1.2}


async def test_max_concurrent_is_honoured() -> None:
    mock = MockProvider(replies=["abcd"], chunk_size=1, delay_secs=0.01, max_concurrent=2)
    finished = 0
    peak = 0

    async def one() -> None:
        nonlocal finished, peak
        async with mock.chat_stream(HELLO) as stream:
            async for _ in stream:
                # a request is recorded once it holds the semaphore; it is released when the stream ends
                peak = max(peak, len(mock.requests) - finished)
        finished += 1

    await asyncio.gather(*(one() for _ in range(8)))
    assert len(mock.requests) == 8
    assert peak == 2


async def test_max_concurrent_through_the_config() -> None:
    registry = Registry.from_dict(
        {"llm": {"providers": [{"name": "m", "type": "mock", "max_concurrent": 1, "delay_secs": 0.02}]}}
    )
    provider = registry.get("m")
    began = time.monotonic()
    await asyncio.gather(*(provider.chat(HELLO) for _ in range(3)))
    # 1 at a time: each reply takes at least (chunks x 20 ms)
    chunks_per_reply = math.ceil(len("Hello from the mock provider.") / 4)
    assert time.monotonic() - began >= 3 * chunks_per_reply * 0.02 * 0.9
    await registry.aclose()


async def test_embeddings_are_deterministic_and_normalised() -> None:
    mock = MockProvider(embedding_dim=16)
    a = await mock.embed("hello")
    b = await mock.embed("hello")
    c = await mock.embed("world")
    assert a == b and a != c
    assert len(a) == 16
    assert math.isclose(math.sqrt(sum(v * v for v in a)), 1.0, rel_tol=1e-9)
    batch = await mock.embed_batch(["hello", "world"])
    assert batch == [a, c]
    assert await mock.embed_batch([]) == []


async def test_missing_capabilities_raise_typed_errors() -> None:
    mock = MockProvider(capabilities=Capabilities(streaming=True))
    with pytest.raises(UnsupportedCapabilityError) as info:
        await mock.embed("x")
    assert info.value.capability == "embeddings" and info.value.provider == "mock"
    with pytest.raises(UnsupportedCapabilityError, match="tools"):
        await mock.chat(HELLO, tools=[ToolDefinition(name="f")])
    with pytest.raises(UnsupportedCapabilityError, match="vision"):
        await mock.chat([Message.user("look", images=[ImagePart(data=b"x")])])
    with pytest.raises(UnsupportedCapabilityError, match="structured output"):
        await mock.chat(HELLO, response_format={"type": "object"})


async def test_structured_output_parsed() -> None:
    from pydantic import BaseModel

    class Answer(BaseModel):
        value: int

    mock = MockProvider(replies=['{"value": 42}'])
    response = await mock.chat(HELLO, response_format=Answer)
    assert response.parsed == Answer(value=42)


async def test_closing_stream_early_stops_it() -> None:
    mock = MockProvider(replies=["abcdefghijklmnop"], chunk_size=1)
    async with mock.chat_stream(HELLO) as stream:
        await anext(stream)
        await anext(stream)
    assert mock.chunks_sent == 2
    assert not stream.done


async def test_built_from_config() -> None:
    registry = Registry.from_dict(
        {
            "llm": {
                "providers": [
                    {
                        "name": "m",
                        "type": "mock",
                        "model": "scripted",
                        "responses": ["first", "second"],
                        "chunk_size": 2,
                    }
                ]
            }
        }
    )
    provider = registry.get("m")
    assert provider.model == "scripted"
    assert provider.capabilities.names() == [
        "streaming",
        "embeddings",
        "tools",
        "vision",
        "structured_output",
        "thinking",
    ]
    assert (await provider.chat(HELLO)).text == "first"
    assert (await provider.chat(HELLO)).text == "second"
    await registry.aclose()
