"""The OpenAI backend against a real server: llama.cpp's OpenAI API (/v1/chat/completions).

The official `openai` SDK talks to an in-process llama.cpp server (the `llamacpp_server` fixture)
that serves SmolLM2-135M, once as `type = "compatible"` and once as `type = "openai"` with a
`base_url` override. A tiny model answers with shapes, not facts: these tests assert on streaming,
usage, finish reasons and payload acceptance, never on wording. The last test talks to the real
OpenAI API, only when OPENAI_API_KEY is set (marked `live`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import openai
import pytest

from zeph_providers import ContentChunk, LogprobsChunk, Message, UsageChunk
from zeph_providers.backends.openai import OpenAIProvider
from zeph_providers.config import CompatibleConfig, OpenAIConfig
from zeph_providers.errors import ContextLengthError
from zeph_providers.types import ToolCall, ToolDefinition

pytestmark = pytest.mark.slow

DUMMY_KEY = "sk-dummy-key-for-llamacpp"
PROMPT = [Message.system("You are a helpful assistant."), Message.user("Write one sentence about the sea.")]
WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def _make(kind: str, llamacpp_server: str, monkeypatch: pytest.MonkeyPatch) -> OpenAIProvider:
    # timeout_secs is a "never hangs" bound: a few tokens took over 60 s on this shared machine under load.
    base_url = f"{llamacpp_server}/v1"
    config: OpenAIConfig
    if kind == "compatible":
        config = CompatibleConfig(name="llamacpp-compat", model="smollm2", base_url=base_url, timeout_secs=300)
    else:
        monkeypatch.setenv("OPENAI_API_KEY", DUMMY_KEY)
        config = OpenAIConfig(name="llamacpp-openai", model="smollm2", base_url=base_url, timeout_secs=300)
    return OpenAIProvider(config)


@pytest.fixture(params=["compatible", "openai"])
async def provider(
    request: pytest.FixtureRequest, llamacpp_server: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[OpenAIProvider]:
    """Both types: `compatible`, and `openai` with a base_url override."""
    built = _make(str(request.param), llamacpp_server, monkeypatch)
    try:
        yield built
    finally:
        await built.aclose()


@pytest.fixture
async def compat(llamacpp_server: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OpenAIProvider]:
    built = _make("compatible", llamacpp_server, monkeypatch)
    try:
        yield built
    finally:
        await built.aclose()


async def test_chat_returns_text_usage_and_finish(provider: OpenAIProvider) -> None:
    resp = await provider.chat(PROMPT, max_tokens=24, temperature=0)
    assert resp.text.strip()
    assert resp.usage.input_tokens > 0
    assert 0 < resp.usage.output_tokens <= 24
    assert resp.finish_reason in ("stop", "length")
    assert resp.provider == provider.name
    assert resp.tool_calls == []


async def test_stream_arrives_in_many_chunks_and_equals_its_response(provider: OpenAIProvider) -> None:
    async with provider.chat_stream(PROMPT, max_tokens=24, temperature=0) as stream:
        chunks = [chunk async for chunk in stream]
    texts = [c.text for c in chunks if isinstance(c, ContentChunk)]
    assert len(texts) >= 5, "text must reach the caller piece by piece"
    assert "".join(texts) == stream.response.text
    assert len([c for c in chunks if isinstance(c, UsageChunk)]) == 1


async def test_streamed_and_chat_usage_agree_with_a_non_streamed_call(
    provider: OpenAIProvider, llamacpp_server: str
) -> None:
    """Our client always streams; the server's non-streamed accounting must agree with it."""
    ours = await provider.chat(PROMPT, max_tokens=16, temperature=0, seed=42)
    async with provider.chat_stream(PROMPT, max_tokens=16, temperature=0, seed=42) as stream:
        async for _ in stream:
            pass
    # prompt_tokens: llama.cpp reports its KV-cache reuse as cached_tokens, so the split varies
    assert stream.response.usage.prompt_tokens == ours.usage.prompt_tokens
    assert stream.response.usage.output_tokens == ours.usage.output_tokens
    assert stream.response.text == ours.text
    client = openai.AsyncOpenAI(api_key=DUMMY_KEY, base_url=f"{llamacpp_server}/v1", max_retries=0)
    try:
        plain = await client.chat.completions.create(
            model="smollm2", messages=[m for m in _wire(PROMPT)], max_tokens=16, temperature=0, seed=42
        )
    finally:
        await client.close()
    assert plain.usage is not None
    assert ours.usage.prompt_tokens == plain.usage.prompt_tokens
    assert ours.usage.output_tokens == plain.usage.completion_tokens
    assert ours.text == plain.choices[0].message.content


def _wire(messages: list[Message]) -> list[openai.types.chat.ChatCompletionMessageParam]:
    return [
        {"role": "system", "content": messages[0].text},
        {"role": "user", "content": messages[1].text},
    ]


async def test_small_max_tokens_finishes_with_length(compat: OpenAIProvider) -> None:
    resp = await compat.chat([Message.user("Count from one to one hundred in words.")], max_tokens=3, temperature=0)
    assert resp.finish_reason == "length"
    assert resp.usage.output_tokens == 3


async def test_tools_are_accepted(compat: OpenAIProvider) -> None:
    """SmolLM2's template has no tool syntax; llama.cpp still takes the request (generic tool format).

    Whether the tiny model actually calls the tool is up to it: either a well-formed tool call or
    plain text is a pass. The request itself must succeed: this server takes tools (the round-trip
    test below sends them too), so any error, typed or not, fails the test (no skip to hide it).
    """
    resp = await compat.chat(
        [Message.user("What is the weather in Paris? Use the tool.")],
        tools=[WEATHER],
        max_tokens=16,
        temperature=0,
    )
    assert resp.usage.input_tokens > 0
    if resp.tool_calls:
        assert resp.finish_reason == "tool_use"
        assert all(call.id and call.name == "get_weather" for call in resp.tool_calls)
        assert all(isinstance(call.arguments, dict) for call in resp.tool_calls)
    else:
        assert resp.finish_reason in ("stop", "length")


async def test_tool_round_trip_history_is_accepted(compat: OpenAIProvider) -> None:
    """An assistant tool call and its result, in the real wire shape, are accepted by the server."""
    history = [
        Message.user("What is the weather in Paris?"),
        Message.assistant(tool_calls=[ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})]),
        Message.tool_result("call_1", {"temp_c": 18, "sky": "clear"}),
    ]
    resp = await compat.chat(history, tools=[WEATHER], max_tokens=16, temperature=0)
    assert resp.usage.input_tokens > 0
    assert resp.finish_reason in ("stop", "length", "tool_use")


async def test_prompt_over_the_context_window_is_context_length_error(compat: OpenAIProvider) -> None:
    with pytest.raises(ContextLengthError) as info:
        await compat.chat([Message.user("hello " * 5000)], max_tokens=4)
    assert info.value.provider == compat.name


async def test_structured_output_is_constrained(compat: OpenAIProvider) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 16}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    resp = await compat.chat([Message.user("Say hi as JSON.")], response_format=schema, max_tokens=64, temperature=0)
    assert resp.finish_reason == "stop"
    assert isinstance(resp.parsed, dict)
    assert isinstance(resp.parsed["answer"], str)


@pytest.mark.live
@pytest.mark.skipif(
    not os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY") == DUMMY_KEY, reason="needs OPENAI_API_KEY"
)
async def test_live_openai() -> None:  # pragma: no cover - needs the network and a key
    provider = OpenAIProvider(OpenAIConfig(name="live-openai", model="gpt-4o-mini", timeout_secs=60))
    async with provider:
        resp = await provider.chat([Message.user("Reply with the single word: pong")], max_tokens=8, temperature=0)
        async with provider.chat_stream([Message.user("Count to five.")], max_tokens=32) as stream:
            async for _ in stream:
                pass
    assert resp.text.strip()
    assert resp.usage.input_tokens > 0
    assert stream.response.usage.output_tokens > 0


# ----- issue 12: typed OpenAI options against a real compatible server ------------------------


async def test_logprobs_come_back_from_a_real_server_streamed_and_not(compat: OpenAIProvider) -> None:
    resp = await compat.chat(PROMPT, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2)
    async with compat.chat_stream(PROMPT, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2) as stream:
        chunks = [chunk async for chunk in stream]
    streamed = stream.response
    assert any(isinstance(chunk, LogprobsChunk) for chunk in chunks)
    for reply in (resp, streamed):
        assert reply.logprobs, "asked for logprobs: the server sends them"
        for token in reply.logprobs:
            assert isinstance(token.token, str)
            assert token.logprob <= 0.0
            assert len(token.top_logprobs) <= 2
            assert all(top.logprob <= 0.0 for top in token.top_logprobs)
    plain = await compat.chat(PROMPT, max_tokens=4, temperature=0)
    assert plain.logprobs is None


async def test_reasoning_effort_and_parallel_tool_calls_do_not_break_a_compatible_server(
    compat: OpenAIProvider,
) -> None:
    resp = await compat.chat(PROMPT, reasoning_effort="low", max_tokens=8, temperature=0)
    assert resp.finish_reason in ("stop", "length")
    resp = await compat.chat(
        [Message.user("What is the weather in Paris? Use the tool.")],
        tools=[WEATHER],
        parallel_tool_calls=False,
        max_tokens=16,
        temperature=0,
    )
    assert resp.finish_reason in ("stop", "length", "tool_use")
    assert len(resp.tool_calls) <= 1
