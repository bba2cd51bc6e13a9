"""The Claude backend on the wire: exact request payloads, stream translation and every fault.

A fake Anthropic server (tests/conformance/harness_claude.py) sits behind an httpx2
MockTransport and speaks real Messages API SSE, so the official SDK parses what it would parse
from api.anthropic.com.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from pydantic import BaseModel, SecretStr

from tests.backends import HANG_GUARD_SECS
from tests.conformance.harness_claude import (
    SERVED_MODEL,
    TEST_KEY,
    FakeAnthropic,
    error_response,
    make_provider,
    sse_response,
    text_events,
)
from tests.conformance.scenarios import TextReply, ToolCallSpec, ToolReply
from tests.fakes.anthropic import (
    block_delta,
    block_start,
    block_stop,
    error_event,
    message_delta,
    message_start,
    message_stop,
    ping,
    sse,
    text_block,
    thinking_block,
    tool_block,
)
from zeph_providers import (
    AuthenticationError,
    BadResponseError,
    ConfigError,
    ContentChunk,
    ContextLengthError,
    ImagePart,
    InvalidRequestError,
    LlmError,
    Message,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    Registry,
    ThinkingChunk,
    ThinkingPart,
    ToolCall,
    ToolDefinition,
    ToolUseChunk,
    UnsupportedCapabilityError,
    UsageChunk,
)
from zeph_providers.backends.claude import (
    ClaudeProvider,
    convert_messages,
    convert_tool_choice,
    map_stop_reason,
)
from zeph_providers.config import ClaudeConfig
from zeph_providers.types import Role

MODEL = "claude-sonnet-4-6"
HELLO = [Message.system("Be brief."), Message.user("Say hello.")]
WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def provider_for(server: FakeAnthropic, **config: Any) -> ClaudeProvider:
    config.setdefault("model", MODEL)
    return make_provider(server, **config)


async def chat_once(
    *responders: Any, messages: list[Message] | None = None, **kwargs: Any
) -> tuple[Any, FakeAnthropic]:
    server = FakeAnthropic(list(responders) or [TextReply()])
    config = kwargs.pop("config", {})
    async with provider_for(server, **config) as provider:
        resp = await provider.chat(messages or HELLO, **kwargs)
    return resp, server


async def stream_once(*responders: Any, **kwargs: Any) -> tuple[Any, FakeAnthropic]:
    """`chat_once` through `chat_stream()`: the SSE body is read and reassembled across network reads."""
    server = FakeAnthropic(list(responders) or [TextReply()])
    async with provider_for(server) as provider:
        resp = await provider.chat_stream(HELLO, **kwargs).collect()
    return resp, server


# ----- request payloads ---------------------------------------------------------------------


async def test_basic_request_payload_and_headers() -> None:
    resp, server = await chat_once(TextReply())
    body = server.bodies[0]
    assert body == {
        "model": MODEL,
        "max_tokens": 4096,  # ClaudeConfig's default
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}],
        "system": "Be brief.",
    }  # chat(): one unstreamed request
    request = server.raw_requests[0]
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert request.headers["authorization"] == f"Bearer {TEST_KEY}"  # anthropic 2.x sends the key as a bearer token
    assert "anthropic-version" in request.headers
    assert resp.text == "Hello, world!"
    assert resp.model == SERVED_MODEL  # the model the server reports in message_start


async def test_chat_is_unstreamed_and_chat_stream_streams_the_same_request() -> None:
    server = FakeAnthropic([TextReply()])
    async with provider_for(server) as provider:
        chat = await provider.chat(HELLO)
        async with provider.chat_stream(HELLO) as stream:
            streamed = await stream.collect()
    unstreamed, live = server.bodies
    assert "stream" not in unstreamed
    assert live == {**unstreamed, "stream": True}
    assert chat == streamed


async def test_max_tokens_per_call_then_config() -> None:
    _, server = await chat_once(TextReply(), max_tokens=17)
    assert server.bodies[0]["max_tokens"] == 17
    _, server = await chat_once(TextReply(), config={"max_tokens": 99})
    assert server.bodies[0]["max_tokens"] == 99


async def test_sampling_travels_in_extra_body_and_stop_sequences() -> None:
    _, server = await chat_once(
        TextReply(), temperature=0.2, top_p=0.9, top_k=40, seed=7, stop=["\n\nHuman:", "END"], extra={"metadata": {}}
    )
    body = server.bodies[0]
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.2, 0.9, 40)
    assert body["stop_sequences"] == ["\n\nHuman:", "END"]
    assert body["metadata"] == {}
    assert "seed" not in body  # Claude has no seed parameter
    # config.temperature is the default; nothing is sent when neither is set
    _, server = await chat_once(TextReply(), config={"temperature": 0.5})
    assert server.bodies[0]["temperature"] == 0.5
    _, server = await chat_once(TextReply())
    assert not {"temperature", "top_p", "top_k", "stop_sequences"} & set(server.bodies[0])


async def test_thinking_budget_from_config() -> None:
    _, server = await chat_once(TextReply(), config={"thinking_budget_tokens": 2048})
    assert server.bodies[0]["thinking"] == {"type": "enabled", "budget_tokens": 2048}


async def test_tools_and_tool_choice_payload() -> None:
    _, server = await chat_once(TextReply(), tools=[WEATHER], tool_choice="required")
    body = server.bodies[0]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
    assert body["tool_choice"] == {"type": "any"}
    assert convert_tool_choice("auto") == {"type": "auto"}
    assert convert_tool_choice("none") == {"type": "none"}
    assert convert_tool_choice("get_weather") == {"type": "tool", "name": "get_weather"}
    assert convert_tool_choice(None) is None
    _, server = await chat_once(TextReply(), tools=[WEATHER])
    assert "tool_choice" not in server.bodies[0]


async def test_history_with_tool_calls_results_images_and_thinking() -> None:
    png = b"\x89PNG\r\n\x1a\nfake"
    history = [
        Message.system("You are terse."),
        Message.user("What is in this picture, and the weather?", images=[ImagePart(data=png, mime_type="image/png")]),
        Message(
            role=Role.ASSISTANT,
            parts=(
                ThinkingPart(text="Need two tools.", signature="sig-abc"),
                ThinkingPart(text="unsigned thoughts from another model"),
            ),
        ),
        Message.assistant(
            "Let me check.",
            tool_calls=[
                ToolCall(id="toolu_1", name="get_weather", arguments={"city": "Paris"}),
                ToolCall(id="toolu_2", name="get_weather", arguments={"city": "Rome"}),
            ],
        ),
        Message.tool_result("toolu_1", {"temp_c": 18}),
        Message.tool_result("toolu_2", "service down", is_error=True),
        Message.user("Thanks."),
        Message.system("Answer in French."),
    ]
    _, server = await chat_once(TextReply(), messages=history, tools=[WEATHER])
    body = server.bodies[0]
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture, and the weather?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgpmYWtl"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Need two tools.", "signature": "sig-abc"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"temp_c": 18}', "is_error": False},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "service down", "is_error": True},
                {"type": "text", "text": "Thanks."},
            ],
        },
    ]


def test_tool_results_go_first_when_merged_after_user_text() -> None:
    _, turns = convert_messages([Message.user("note"), Message.tool_result("t1", "ok")])
    assert [b["type"] for b in turns[0]["content"]] == ["tool_result", "text"]


def test_stop_reason_mapping() -> None:
    assert map_stop_reason("end_turn") == "stop"
    assert map_stop_reason("stop_sequence") == "stop"
    assert map_stop_reason("max_tokens") == "length"
    assert map_stop_reason("tool_use") == "tool_use"
    assert map_stop_reason("refusal") == "refusal"
    assert map_stop_reason("pause_turn") == "pause_turn"
    assert map_stop_reason(None) == "error"


# ----- structured output through a forced tool ------------------------------------------------


class Weather(BaseModel):
    city: str
    temp_c: float


def answer_events(name: str, arguments: Any, *, fragments: int = 4) -> list[bytes]:
    text = json.dumps(arguments)
    size = -(-len(text) // fragments)
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    return [
        message_start(input_tokens=30),
        *tool_block(0, "toolu_answer", name, pieces),
        message_delta("tool_use", 12),
        message_stop(),
    ]


async def test_structured_output_forces_a_tool_and_parses_it() -> None:
    server = FakeAnthropic([sse_response(answer_events("Weather", {"city": "Paris", "temp_c": 18.5}))])
    async with provider_for(server) as provider, provider.chat_stream(HELLO, response_format=Weather) as stream:
        chunks = [c async for c in stream]
    resp = stream.response
    body = server.bodies[0]
    assert body["tool_choice"] == {"type": "tool", "name": "Weather"}
    assert body["tools"][0]["name"] == "Weather"
    assert body["tools"][0]["input_schema"] == Weather.model_json_schema()
    assert resp.parsed == Weather(city="Paris", temp_c=18.5)
    # the synthetic call is not a user tool call; its JSON streams as the reply text
    assert resp.tool_calls == [] and not any(isinstance(c, ToolUseChunk) for c in chunks)
    assert len([c for c in chunks if isinstance(c, ContentChunk)]) >= 2
    assert json.loads(resp.text) == {"city": "Paris", "temp_c": 18.5}
    assert resp.finish_reason == "stop"


async def test_structured_output_stream_and_chat_give_equal_responses() -> None:
    # The model streams pretty-printed JSON; a non-streamed message only carries the parsed input.
    pretty = json.dumps({"city": "Paris", "temp_c": 18.5}, indent=2)
    events = [
        message_start(input_tokens=30),
        *tool_block(0, "toolu_answer", "Weather", [pretty[:9], pretty[9:20], pretty[20:]]),
        message_delta("tool_use", 12),
        message_stop(),
    ]
    server = FakeAnthropic([sse_response(events), sse_response(events)])
    async with provider_for(server) as provider:
        async with provider.chat_stream(HELLO, response_format=Weather) as stream:
            streamed_text = "".join([c.text async for c in stream if isinstance(c, ContentChunk)])
        chatted = await provider.chat(HELLO, response_format=Weather)
    assert streamed_text == pretty, "the stream delivers the model's own text as it arrives"
    assert stream.response == chatted
    assert stream.response.parsed == chatted.parsed == Weather(city="Paris", temp_c=18.5)


async def test_structured_output_with_dict_schema_non_object_and_thinking() -> None:
    schema = {"title": "numbers list!", "type": "array", "items": {"type": "integer"}}
    server = FakeAnthropic([sse_response(answer_events("numbers_list_", {"value": [1, 2, 3]}))])
    async with provider_for(server, thinking_budget_tokens=1024) as provider:
        resp = await provider.chat(HELLO, response_format=schema)
    tool = server.bodies[0]["tools"][0]
    assert tool["name"] == "numbers_list_"
    assert tool["input_schema"] == {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    assert server.bodies[0]["tool_choice"] == {"type": "any"}  # a forced tool is refused with thinking
    assert resp.parsed == [1, 2, 3]
    assert resp.text == "[1, 2, 3]"


async def test_structured_output_alongside_user_tools() -> None:
    reply = ToolReply(calls=(ToolCallSpec("toolu_w", "get_weather", {"city": "Oslo"}),))
    resp, server = await chat_once(reply, tools=[WEATHER], response_format=Weather)
    body = server.bodies[0]
    assert [t["name"] for t in body["tools"]] == ["get_weather", "Weather"]
    assert body["tool_choice"] == {"type": "any"}
    assert resp.tool_calls == [ToolCall(id="toolu_w", name="get_weather", arguments={"city": "Oslo"})]
    assert resp.parsed is None and resp.finish_reason == "tool_use"


async def test_structured_output_that_does_not_match_is_bad_response() -> None:
    server = FakeAnthropic([sse_response(answer_events("Weather", {"city": "Paris"}))])
    async with provider_for(server) as provider:
        with pytest.raises(BadResponseError, match="response_format"):
            await provider.chat(HELLO, response_format=Weather, structured_retries=0)


# ----- stream translation -----------------------------------------------------------------------


async def test_thinking_stream_gives_thinking_chunks_and_signature() -> None:
    reply = TextReply(thinking="Let me think about greetings.")
    server = FakeAnthropic([reply, reply])
    async with provider_for(server) as provider:
        async with provider.chat_stream(HELLO) as stream:
            chunks = [c async for c in stream]
        chat = await provider.chat(HELLO)
    thinking = [c for c in chunks if isinstance(c, ThinkingChunk)]
    assert len([c for c in thinking if c.text]) == 3
    assert thinking[-1].signature == "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"
    assert stream.response.thinking == "Let me think about greetings."
    assert stream.response.text == "Hello, world!"
    assert chunks.index(thinking[0]) < next(i for i, c in enumerate(chunks) if isinstance(c, ContentChunk))
    assert stream.response == chat


async def test_cache_tokens_and_usage_from_message_delta() -> None:
    events = text_events(TextReply(input_tokens=12, output_tokens=6), cache_read=100, cache_write=40)
    server = FakeAnthropic([sse_response(events)])
    async with provider_for(server) as provider:
        stream = provider.chat_stream(HELLO)
        usage_chunks = [c async for c in stream if isinstance(c, UsageChunk)]
    assert len(usage_chunks) == 1
    usage = usage_chunks[0].usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (
        12,
        6,
        100,
        40,
    )


async def test_tool_call_with_text_before_and_two_calls() -> None:
    reply = ToolReply(
        text_before="Checking both.",
        calls=(ToolCallSpec("toolu_a", "get_weather", {"city": "Paris"}), ToolCallSpec("toolu_b", "get_weather", {})),
        fragments=4,
    )
    resp, _ = await chat_once(reply, tools=[WEATHER])
    assert resp.text == "Checking both."
    assert [(c.id, c.arguments) for c in resp.tool_calls] == [("toolu_a", {"city": "Paris"}), ("toolu_b", {})]
    assert resp.finish_reason == "tool_use"


@pytest.mark.parametrize(("stop_reason", "finish"), [("refusal", "refusal"), ("stop_sequence", "stop")])
async def test_finish_reasons(stop_reason: str, finish: str) -> None:
    events = [message_start(input_tokens=3), *text_block(0, ["a", "b"]), message_delta(stop_reason, 2), message_stop()]
    resp, _ = await chat_once(sse_response(events))
    assert resp.finish_reason == finish


async def test_invalid_tool_arguments_are_bad_response() -> None:
    events = [message_start(input_tokens=3), *tool_block(0, "t", "get_weather", ['{"city": ', "Par"])]
    events += [message_delta("tool_use", 3), message_stop()]
    server = FakeAnthropic([sse_response(events)])
    async with provider_for(server) as provider:
        with pytest.raises(BadResponseError, match="invalid JSON arguments"):  # fragments only stream
            await provider.chat_stream(HELLO, tools=[WEATHER]).collect()


# ----- faults -------------------------------------------------------------------------------------


async def test_rate_limit_retry_after_is_honoured() -> None:
    server = FakeAnthropic([error_response(429, "Number of request tokens exceeded", retry_after=0.2), TextReply()])
    async with provider_for(server, max_retries=2) as provider:
        started = time.monotonic()
        resp = await provider.chat(HELLO)
        elapsed = time.monotonic() - started
    assert resp.text == "Hello, world!"
    assert len(server.raw_requests) == 2
    assert elapsed >= 0.2


async def test_rate_limit_exhausted_raises_with_retry_after() -> None:
    server = FakeAnthropic([error_response(429, "slow down", retry_after=0.01)])
    async with provider_for(server, max_retries=2) as provider:
        with pytest.raises(RateLimitError) as info:
            await provider.chat(HELLO)
    assert info.value.retry_after == pytest.approx(0.01)
    assert len(server.raw_requests) == 3  # one try and two retries
    assert "rate_limit_error" in str(info.value)


async def test_overloaded_529_then_success() -> None:
    server = FakeAnthropic([error_response(529, "Overloaded"), TextReply()])
    async with provider_for(server, max_retries=1) as provider:
        resp = await provider.chat(HELLO)
    assert resp.text == "Hello, world!"
    assert len(server.raw_requests) == 2
    server = FakeAnthropic([error_response(529, "Overloaded")])
    async with provider_for(server) as provider:
        with pytest.raises(ProviderUnavailableError, match="overloaded_error") as info:
            await provider.chat(HELLO)
    assert info.value.__cause__ is not None


async def test_connection_reset_mid_stream_after_text() -> None:
    events = [message_start(input_tokens=4), block_start(0, {"type": "text", "text": ""})]
    events += [block_delta(0, {"type": "text_delta", "text": "partial"})]
    server = FakeAnthropic([sse_response(events, fail=httpx2.ReadError("Connection reset by peer")), TextReply()])
    received: list[str] = []
    async with provider_for(server, max_retries=3) as provider:
        with pytest.raises(ProviderUnavailableError, match="connection broke") as info:
            async for chunk in provider.chat_stream(HELLO):
                if isinstance(chunk, ContentChunk):
                    received.append(chunk.text)
    assert received == ["partial"]
    assert len(server.raw_requests) == 1  # never retried after the first chunk
    assert isinstance(info.value.__cause__, httpx2.ReadError)


async def test_connection_reset_before_any_chunk_is_retried() -> None:
    broken = sse_response([message_start(input_tokens=4)], fail=httpx2.RemoteProtocolError("peer closed"))
    server = FakeAnthropic([broken, TextReply()])
    async with provider_for(server, max_retries=1) as provider:
        resp = await provider.chat(HELLO)
    assert resp.text == "Hello, world!"
    assert len(server.raw_requests) == 2


async def test_connect_error_and_timeout_are_typed() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("Connection refused", request=request)

    def slow(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    with pytest.raises(ProviderUnavailableError, match="cannot connect"):
        await chat_once(refuse)
    with pytest.raises(ProviderTimeoutError):
        await chat_once(slow)


async def test_stream_without_message_stop_is_bad_response_after_partial() -> None:
    events = [message_start(input_tokens=4), *text_block(0, ["half ", "done"]), message_delta("end_turn", 2)]
    server = FakeAnthropic([sse_response(events)])
    received: list[str] = []
    async with provider_for(server, max_retries=2) as provider:
        with pytest.raises(BadResponseError, match="message_stop"):
            async for chunk in provider.chat_stream(HELLO):
                if isinstance(chunk, ContentChunk):
                    received.append(chunk.text)
    assert "".join(received) == "half done"
    assert len(server.raw_requests) == 1


async def test_invalid_json_data_line_is_bad_response() -> None:
    events = [message_start(input_tokens=4), b"event: content_block_start\ndata: {not json\n\n"]
    server = FakeAnthropic([sse_response(events)])
    async with provider_for(server) as provider:
        with pytest.raises(BadResponseError) as info:
            await provider.chat(HELLO)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


async def test_error_event_mid_stream() -> None:
    events = [message_start(input_tokens=4), block_start(0, {"type": "text", "text": ""}), ping()]
    events += [block_delta(0, {"type": "text_delta", "text": "Hel"}), error_event("overloaded_error", "Overloaded")]
    server = FakeAnthropic([sse_response(events), TextReply()])
    received: list[str] = []
    async with provider_for(server, max_retries=2) as provider:
        with pytest.raises(ProviderUnavailableError, match="overloaded_error: Overloaded"):
            async for chunk in provider.chat_stream(HELLO):
                if isinstance(chunk, ContentChunk):
                    received.append(chunk.text)
    assert received == ["Hel"]
    assert len(server.raw_requests) == 1


async def test_error_event_before_any_chunk_is_typed_and_retried() -> None:
    rate_limited = sse_response([message_start(input_tokens=4), error_event("rate_limit_error", "slow")])
    server = FakeAnthropic([rate_limited, TextReply()])
    async with provider_for(server, max_retries=1) as provider:
        assert (await provider.chat(HELLO)).text == "Hello, world!"
    assert len(server.raw_requests) == 2
    server = FakeAnthropic([sse_response([error_event("invalid_request_error", "bad thing")])])
    async with provider_for(server, max_retries=2) as provider:
        with pytest.raises(InvalidRequestError):
            await provider.chat(HELLO)
    assert len(server.raw_requests) == 1


async def test_ten_megabyte_sse_line_is_handled() -> None:
    big = "x" * (10 * 1024 * 1024)
    events = [message_start(input_tokens=4), *text_block(0, ["start ", big]), message_delta("end_turn", 9)]
    events.append(message_stop())
    resp, _ = await stream_once(sse_response(events), timeout=30)
    assert len(resp.text) == len(big) + len("start ")
    # the same bytes as the network delivers them: 64 KB reads cutting through the line
    wire = b"".join(events)
    pieces = [wire[i : i + 65536] for i in range(0, len(wire), 65536)]
    resp, _ = await stream_once(sse_response(pieces), timeout=30)
    assert len(resp.text) == len(big) + len("start ")
    garbage = [
        message_start(input_tokens=4),
        b"event: content_block_delta\ndata: {" + b"y" * (10 * 1024 * 1024) + b"\n\n",
    ]
    with pytest.raises(BadResponseError):
        await stream_once(sse_response(garbage), timeout=30)


async def test_stream_that_never_ends_times_out() -> None:
    async def forever() -> AsyncIterator[bytes]:
        yield message_start(input_tokens=4)
        yield block_start(0, {"type": "text", "text": ""})
        yield block_delta(0, {"type": "text_delta", "text": "tick"})
        while True:
            await asyncio.sleep(0.05)
            yield ping()

    server = FakeAnthropic(
        [lambda request: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=forever())]
    )
    async with provider_for(server) as provider:
        # The guard only turns a hang (the deadline ignored) into a failure; it bounds no speed.
        async with asyncio.timeout(HANG_GUARD_SECS):
            with pytest.raises(ProviderTimeoutError):
                await provider.chat(HELLO, timeout=0.4)


async def test_prompt_too_long_is_context_length_error() -> None:
    message = "prompt is too long: 210000 tokens > 200000 maximum"
    with pytest.raises(ContextLengthError, match="prompt is too long"):
        await chat_once(error_response(400, message))


async def test_unauthorized_never_shows_the_key() -> None:
    leaky = error_response(401, f"invalid x-api-key {TEST_KEY}")
    with pytest.raises(AuthenticationError) as info:
        await chat_once(leaky)
    error = info.value
    assert TEST_KEY not in str(error) and TEST_KEY not in repr(error)
    assert "authentication_error" in str(error)
    assert error.provider == "claude-conf"


async def test_key_from_environment_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    env_key = "sk-ant-env-only-key-987654321"
    monkeypatch.setenv("ANTHROPIC_API_KEY", env_key)
    server = FakeAnthropic([error_response(403, f"key {env_key} lacks permission")])
    provider = ClaudeProvider(ClaudeConfig(name="c", model=MODEL), transport=server.transport())
    async with provider:
        with pytest.raises(AuthenticationError) as info:
            await provider.chat(HELLO)
    assert server.raw_requests[0].headers["authorization"] == f"Bearer {env_key}"
    assert env_key not in str(info.value) and env_key not in repr(info.value)


# ----- construction, capabilities, lifecycle ------------------------------------------------


async def test_capabilities_and_embeddings_unsupported() -> None:
    server = FakeAnthropic([TextReply()])
    async with provider_for(server) as provider:
        caps = provider.capabilities
        assert (caps.streaming, caps.tools, caps.vision, caps.structured_output, caps.thinking) == (True,) * 5
        assert caps.embeddings is False
        with pytest.raises(UnsupportedCapabilityError, match="embeddings"):
            await provider.embed("hello")
    assert server.raw_requests == []


def test_missing_key_and_insecure_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        ClaudeProvider(ClaudeConfig(name="c"))
    with pytest.raises(ConfigError, match="plain http"):
        ClaudeProvider(ClaudeConfig(name="c", api_key=SecretStr("sk-ant-x-1234"), base_url="http://example.com"))


async def test_base_url_override_and_registry_build() -> None:
    server = FakeAnthropic([TextReply()])
    provider = make_provider(server, base_url="http://127.0.0.1:8080", model=MODEL)
    async with provider:
        await provider.chat(HELLO)
    assert str(server.raw_requests[0].url) == "http://127.0.0.1:8080/v1/messages"
    registry = Registry.from_dict(
        {"llm": {"providers": [{"name": "claude", "type": "anthropic", "api_key": "sk-ant-reg-1234", "model": MODEL}]}}
    )
    async with registry:
        built = registry.get("claude")
        assert isinstance(built, ClaudeProvider)
        assert built.model == MODEL


async def test_aclose_closes_the_client() -> None:
    server = FakeAnthropic([TextReply()])
    provider = provider_for(server)
    await provider.aclose()
    await provider.aclose()  # twice is fine
    assert provider._client._client.is_closed
    with pytest.raises(LlmError):
        await provider.chat(HELLO)


def test_import_zeph_providers_does_not_import_anthropic() -> None:
    code = "import sys, zeph_providers; print('anthropic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sse_helper_frames_events_like_the_api() -> None:
    assert sse("ping", {"type": "ping"}) == b'event: ping\ndata: {"type": "ping"}\n\n'
    assert thinking_block(0, ["a"])[0].startswith(b"event: content_block_start\n")
    assert block_stop(1) == b'event: content_block_stop\ndata: {"type": "content_block_stop", "index": 1}\n\n'
