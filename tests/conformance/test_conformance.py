"""One contract, every backend: the same scripted replies must come out the same way."""

from __future__ import annotations

import pytest

from tests.conformance.scenarios import (
    BrokenStream,
    ErrorReply,
    Harness,
    Scenario,
    TextReply,
    ToolCallSpec,
    ToolReply,
    check_tool_deltas,
)
from zeph_providers import (
    AllProvidersFailedError,
    AuthenticationError,
    ContentChunk,
    InvalidRequestError,
    LlmError,
    Message,
    ProviderUnavailableError,
    RateLimitError,
    ToolDefinition,
    ToolUseChunk,
    UsageChunk,
)

MESSAGES = [Message.system("Be brief."), Message.user("Say hello.")]


def answering_name(harness: Harness, provider_name: str) -> str:
    """Who a reply names: the provider itself, or (a router) the member that answered."""
    return getattr(harness, "answers_as", None) or provider_name


def scripted(harness: Harness) -> bool:
    """Whether the harness serves the scenario's exact reply (a real local model answers its own)."""
    return bool(getattr(harness, "scripts_replies", True))


def maps_wire_errors(harness: Harness) -> bool:
    """Whether the harness's provider turns a scripted failure on its wire into our error itself.

    The mock cannot: its harness builds the error object (`error_from_status`) and the mock raises
    that very object, so asserting its type would check only the test's own set-up (it cannot
    fail). A harness may declare `maps_wire_errors`; without it, the mock is the one that does not.
    """
    declared = getattr(harness, "maps_wire_errors", None)
    if declared is not None:
        return bool(declared)
    return harness.supports_scripted_errors and harness.name != "mock"


def member_error(error: LlmError) -> LlmError:
    """A router's `AllProvidersFailedError` over a single member: that member's own error."""
    if isinstance(error, AllProvidersFailedError) and len(error.errors) == 1:
        return error.errors[0]
    return error


WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather for a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
)


async def test_chat_returns_text_usage_and_finish(harness: Harness) -> None:
    reply = TextReply()
    async with harness.provider([reply]) as (provider, _):
        resp = await provider.chat(MESSAGES)
    if scripted(harness):
        assert resp.text == reply.text
        assert resp.usage.input_tokens == reply.input_tokens
        assert resp.usage.output_tokens == reply.output_tokens
        assert resp.finish_reason == "stop"
    else:
        assert resp.text
        assert resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0
        assert resp.finish_reason in ("stop", "length")
    assert resp.provider == answering_name(harness, provider.name)
    assert resp.tool_calls == []
    assert [a.outcome for a in resp.attempts] == ["ok"]
    assert resp.attempts[0].provider == answering_name(harness, provider.name)


async def test_stream_matches_chat(harness: Harness) -> None:
    reply = TextReply(chunks=("The ", "quick ", "brown ", "fox"))
    async with harness.provider([reply, reply]) as (provider, _):
        chat_resp = await provider.chat(MESSAGES)
        async with provider.chat_stream(MESSAGES) as stream:
            chunks = [chunk async for chunk in stream]
        streamed = stream.response
    texts = [c.text for c in chunks if isinstance(c, ContentChunk)]
    assert len(texts) >= 2, "a stream must deliver text in more than one piece"
    assert "".join(texts) == (reply.text if scripted(harness) else chat_resp.text)
    assert streamed == chat_resp


async def test_usage_reported_exactly_once(harness: Harness) -> None:
    async with harness.provider([TextReply(input_tokens=7, output_tokens=3)]) as (provider, _):
        stream = provider.chat_stream(MESSAGES)
        usage_chunks = [c async for c in stream if isinstance(c, UsageChunk)]
    assert len(usage_chunks) == 1
    usage = usage_chunks[0].usage
    if scripted(harness):
        assert (usage.input_tokens, usage.output_tokens) == (7, 3)
    else:
        assert usage.input_tokens > 0 and usage.output_tokens > 0


async def test_length_finish_reason(harness: Harness) -> None:
    async with harness.provider([TextReply(finish="length")]) as (provider, _):
        resp = await provider.chat(MESSAGES, max_tokens=4)
    assert resp.finish_reason == "length"


async def test_tool_call_reassembled_from_fragments(harness: Harness) -> None:
    if not harness.supports_tools:
        pytest.skip(f"{harness.name} cannot script tool calls")
    reply = ToolReply(fragments=5)
    async with harness.provider([reply, reply]) as (provider, _):
        resp = await provider.chat([Message.user("Weather in Paris?")], tools=[WEATHER])
        stream = provider.chat_stream([Message.user("Weather in Paris?")], tools=[WEATHER])
        chunks = [c async for c in stream]
    expected = reply.calls[0]
    assert resp.finish_reason == "tool_use"
    assert len(resp.tool_calls) == 1
    call = resp.tool_calls[0]
    assert (call.name, call.arguments) == (expected.name, expected.arguments)
    assert call.id, "every tool call has an id"
    assert [c.tool_call for c in chunks if isinstance(c, ToolUseChunk)] == resp.tool_calls
    assert check_tool_deltas(chunks) == resp.tool_calls
    assert stream.response == resp


async def test_parallel_tool_calls_stream_deltas_per_call(harness: Harness) -> None:
    if not harness.supports_tools:
        pytest.skip(f"{harness.name} cannot script tool calls")
    reply = ToolReply(
        calls=(
            ToolCallSpec("call_a", "get_weather", {"city": "Paris", "unit": "celsius"}),
            ToolCallSpec("call_b", "get_weather", {"city": "Tokyo"}),
            ToolCallSpec("call_c", "get_weather", {"city": "Lima", "unit": "kelvin"}),
        ),
        text_before="Checking three cities.",
        fragments=4,
    )
    async with harness.provider([reply, reply]) as (provider, _):
        resp = await provider.chat([Message.user("Weather in three cities?")], tools=[WEATHER])
        stream = provider.chat_stream([Message.user("Weather in three cities?")], tools=[WEATHER])
        chunks = [c async for c in stream]
    assert [(c.name, c.arguments) for c in resp.tool_calls] == [(s.name, s.arguments) for s in reply.calls]
    assert len({c.id for c in resp.tool_calls}) == 3
    assert check_tool_deltas(chunks) == resp.tool_calls
    assert stream.response == resp


async def test_multi_turn_tool_conversation(harness: Harness) -> None:
    if not harness.supports_tools:
        pytest.skip(f"{harness.name} cannot script tool calls")
    async with harness.provider([ToolReply(), TextReply(chunks=("It is ", "18C."))]) as (provider, served):
        first = await provider.chat([Message.user("Weather in Paris?")], tools=[WEATHER])
        history = [
            Message.user("Weather in Paris?"),
            first.to_message(),
            Message.tool_result(first.tool_calls[0].id, {"temp_c": 18}),
        ]
        second = await provider.chat(history, tools=[WEATHER])
    assert second.text == "It is 18C."
    assert len(served.requests) == 2


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (401, AuthenticationError),
        (400, InvalidRequestError),
        (500, ProviderUnavailableError),
        (503, ProviderUnavailableError),
    ],
)
async def test_http_errors_are_typed(harness: Harness, status: int, error_type: type[LlmError]) -> None:
    if not maps_wire_errors(harness):
        pytest.skip(f"{harness.name} maps no wire errors of its own (see maps_wire_errors)")
    async with harness.provider([ErrorReply(status=status, message="scripted")]) as (provider, _):
        with pytest.raises(error_type) as info:
            await provider.chat(MESSAGES)
    assert info.value.provider in {provider.name, answering_name(harness, provider.name)}
    assert isinstance(member_error(info.value), error_type)
    assert [a.outcome for a in info.value.attempts] == [type(member_error(info.value)).__name__]


async def test_rate_limit_carries_retry_after(harness: Harness) -> None:
    if not maps_wire_errors(harness):
        pytest.skip(f"{harness.name} maps no wire errors of its own (see maps_wire_errors)")
    async with harness.provider([ErrorReply(status=429, message="slow down", retry_after=7)]) as (provider, _):
        with pytest.raises(LlmError) as info:
            await provider.chat(MESSAGES)
    error = member_error(info.value)
    assert isinstance(error, RateLimitError)
    assert error.retry_after == pytest.approx(7)


async def test_server_error_then_success_is_retried(harness: Harness) -> None:
    if not harness.supports_retries:
        pytest.skip(f"{harness.name} does not retry")
    scenarios: list[Scenario] = [ErrorReply(status=503, message="busy"), TextReply()]
    async with harness.provider(scenarios, max_retries=2) as (provider, served):
        resp = await provider.chat(MESSAGES)
    assert resp.text == TextReply().text
    assert len(served.requests) == 2
    assert [a.outcome for a in resp.attempts] == ["ProviderUnavailableError", "ok"]
    assert resp.attempts[0].wait == 0.0 and resp.attempts[1].wait >= 0.0
    assert resp.attempts[1].time_to_first_chunk is not None


async def test_client_error_is_not_retried(harness: Harness) -> None:
    if not harness.supports_retries:
        pytest.skip(f"{harness.name} does not retry")
    async with harness.provider([ErrorReply(status=400), TextReply()], max_retries=3) as (provider, served):
        with pytest.raises(InvalidRequestError):
            await provider.chat(MESSAGES)
    assert len(served.requests) == 1


async def test_stream_broken_midway_raises_typed_after_partial(harness: Harness) -> None:
    if not harness.supports_scripted_errors:
        pytest.skip(f"{harness.name} has no HTTP layer")
    async with harness.provider([BrokenStream()], max_retries=2) as (provider, served):
        received: list[str] = []
        with pytest.raises(LlmError):
            async with provider.chat_stream(MESSAGES) as stream:
                async for chunk in stream:
                    if isinstance(chunk, ContentChunk):
                        received.append(chunk.text)
    assert "".join(received), "what arrived before the break reaches the caller"
    assert len(served.requests) == 1, "a stream is never retried after its first chunk"


async def test_closing_a_stream_early_is_clean(harness: Harness) -> None:
    reply = TextReply(chunks=tuple(f"w{i} " for i in range(40)), output_tokens=40)
    async with harness.provider([reply, TextReply()]) as (provider, _):
        async with provider.chat_stream(MESSAGES) as stream:
            async for chunk in stream:
                if isinstance(chunk, ContentChunk):
                    break
        assert not stream.done
        after = await provider.chat(MESSAGES)
    assert after.text
