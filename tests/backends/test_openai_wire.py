"""The OpenAI backend on the wire: exact request payloads and every fault a server can produce.

A `httpx2.MockTransport` stands in for the server behind the official SDK, answering with real
Chat Completions payload shapes (see `tests/conformance/harness_openai.py`).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from pydantic import BaseModel, SecretStr

from tests.backends import HANG_GUARD_SECS
from tests.conformance.harness_openai import (
    TEST_KEY,
    EventStream,
    ScriptedServer,
    answering_unstreamed,
    make_provider,
    sse_response,
    text_events,
)
from tests.fakes.openai import DONE, chunk, error_body, sse, usage_chunk
from zeph_providers.backends.openai import OpenAIProvider, build, openai_capabilities
from zeph_providers.config import CompatibleConfig, OpenAIConfig
from zeph_providers.errors import (
    AuthenticationError,
    BadResponseError,
    ConfigError,
    ContextLengthError,
    InvalidRequestError,
    LlmError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    UnsupportedCapabilityError,
)
from zeph_providers.types import (
    ContentChunk,
    EndChunk,
    ImagePart,
    Message,
    ThinkingChunk,
    ToolCall,
    ToolDefinition,
    ToolUseChunk,
    UsageChunk,
)

HELLO = [Message.system("Be brief."), Message.user("Say hello.")]
WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def ok(request: httpx2.Request) -> httpx2.Response:
    return sse_response(text_events(["Hi", "!"]))


def server_of(*responses: Any) -> ScriptedServer:
    """Each argument: an httpx2.Response factory or a list of SSE events."""

    def responder(item: Any) -> Any:
        if callable(item):
            return item
        return lambda _req: sse_response(item)

    return ScriptedServer([responder(item) for item in responses])


# ----- request payloads ------------------------------------------------------------------


async def test_basic_request_payload_and_headers() -> None:
    server = server_of(ok)
    async with make_provider(server) as provider:
        resp = await provider.chat(HELLO, max_tokens=50, temperature=0.2, top_p=0.9, stop=["END"], seed=7)
    assert resp.text == "Hi!"
    body = server.requests[0]
    assert body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "seed": 7,
    }
    request = server.raw[0]
    assert request.url == "https://api.openai.test/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {TEST_KEY}"


async def test_chat_is_unstreamed_and_chat_stream_streams_the_same_request() -> None:
    server = server_of(ok)
    async with make_provider(server) as provider:
        chat = await provider.chat(HELLO, max_tokens=50)
        async with provider.chat_stream(HELLO, max_tokens=50) as stream:
            streamed = await stream.collect()
    unstreamed, live = server.requests
    assert "stream" not in unstreamed and "stream_options" not in unstreamed
    assert live == {**unstreamed, "stream": True, "stream_options": {"include_usage": True}}
    assert chat == streamed


async def test_unstreamed_completion_maps_every_field() -> None:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "reasoning_content": "The user wants weather.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        },
                        {"type": "function", "function": {"name": "get_weather", "arguments": ""}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4}},
    }
    server = server_of(lambda _req: httpx2.Response(200, json=completion))
    async with make_provider(server) as provider:
        resp = await provider.chat(HELLO, tools=[WEATHER])
    assert resp.text == "Let me check."
    assert resp.thinking == "The user wants weather."
    first = resp.tool_calls[0]
    assert (first.id, first.name, first.arguments) == ("call_1", "get_weather", {"city": "Paris"})
    assert resp.tool_calls[1].id and resp.tool_calls[1].arguments == {}  # a stable generated id
    # prompt_tokens 12 of which 4 cached: Usage's input_tokens are the 8 uncached ones
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.cache_read_tokens) == (8, 5, 4)
    assert resp.usage.prompt_tokens == 12
    assert resp.finish_reason == "tool_use"
    assert resp.model == "gpt-4o-mini-2024-07-18"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"error": {"message": "too long", "code": "context_length_exceeded"}}, ContextLengthError),
        ({"error": {"message": "boom", "type": "server_error"}}, ProviderUnavailableError),
        ({"id": "x", "object": "chat.completion"}, BadResponseError),
        ({"id": "x", "choices": "bad"}, BadResponseError),
        ([1, 2], BadResponseError),
    ],
)
async def test_unstreamed_error_or_malformed_bodies_are_typed(body: Any, error: type[LlmError]) -> None:
    server = server_of(lambda _req: httpx2.Response(200, json=body))
    async with make_provider(server) as provider:
        with pytest.raises(error):
            await provider.chat(HELLO)


async def test_config_defaults_and_per_call_overrides() -> None:
    server = server_of(ok)
    async with make_provider(server, max_tokens=64, temperature=0.5) as provider:
        await provider.chat(HELLO)
        await provider.chat(HELLO, max_tokens=8, temperature=0.0)
    assert (server.requests[0]["max_tokens"], server.requests[0]["temperature"]) == (64, 0.5)
    assert (server.requests[1]["max_tokens"], server.requests[1]["temperature"]) == (8, 0.0)


@pytest.mark.parametrize(
    ("model", "flag", "key"),
    [
        ("gpt-4o-mini", None, "max_tokens"),
        ("o1", None, "max_completion_tokens"),
        ("o3-mini", None, "max_completion_tokens"),
        ("o4-mini", None, "max_completion_tokens"),
        ("gpt-5-nano", None, "max_completion_tokens"),
        ("gpt-4o", True, "max_completion_tokens"),
        ("o3", False, "max_tokens"),
    ],
)
async def test_max_completion_tokens_for_newer_models(model: str, flag: bool | None, key: str) -> None:
    server = server_of(ok)
    async with make_provider(server, model=model, use_max_completion_tokens=flag) as provider:
        await provider.chat(HELLO, max_tokens=32)
    body = server.requests[0]
    assert body[key] == 32
    assert {"max_tokens", "max_completion_tokens"} - {key} & body.keys() == set()


async def test_tools_tool_calls_and_tool_results_payload() -> None:
    server = server_of(ok)
    history = [
        Message.user("Weather in Paris?"),
        Message.assistant(
            "Let me check.", tool_calls=[ToolCall(id="call_9", name="get_weather", arguments={"city": "Paris"})]
        ),
        Message.tool_result("call_9", {"temp_c": 18}),
        Message.tool_result("call_9", "timeout", is_error=True),
    ]
    async with make_provider(server) as provider:
        await provider.chat(history, tools=[WEATHER], tool_choice="get_weather")
    body = server.requests[0]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": '{"temp_c": 18}'},
        {"role": "tool", "tool_call_id": "call_9", "content": "Error: timeout"},
    ]


async def test_user_message_with_tool_results_puts_them_first() -> None:
    from zeph_providers.types import Role, TextPart, ToolResultPart

    server = server_of(ok)
    mixed = Message(
        role=Role.USER,
        parts=(ToolResultPart(tool_call_id="c1", content="18C"), TextPart(text="And tomorrow?")),
    )
    history = [Message.user("q"), Message.assistant(tool_calls=[ToolCall(id="c1", name="get_weather")]), mixed]
    async with make_provider(server) as provider:
        await provider.chat(history, tools=[WEATHER])
    assert server.requests[0]["messages"][2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        {"role": "user", "content": "And tomorrow?"},
    ]


async def test_plain_json_body_instead_of_a_stream_is_bad_response() -> None:
    completion = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": "hi"}}]}
    server = server_of(lambda _req: httpx2.Response(200, json=completion))
    async with make_provider(server) as provider:
        with pytest.raises(BadResponseError, match="no stream events"):
            await provider.chat_stream(HELLO).collect()
        assert (await provider.chat(HELLO)).text == "hi"  # what chat() asks for: one JSON body


async def test_assistant_tool_call_without_text_sends_null_content() -> None:
    server = server_of(ok)
    history = [Message.user("q"), Message.assistant(tool_calls=[ToolCall(id="c1", name="get_weather")])]
    async with make_provider(server) as provider:
        await provider.chat(history, tools=[WEATHER])
    assert server.requests[0]["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
    }


@pytest.mark.parametrize(("choice", "wire"), [("auto", "auto"), ("none", "none"), ("required", "required")])
async def test_tool_choice_keywords(choice: str, wire: str) -> None:
    server = server_of(ok)
    async with make_provider(server) as provider:
        await provider.chat(HELLO, tools=[WEATHER], tool_choice=choice)
    assert server.requests[0]["tool_choice"] == wire


async def test_unknown_tool_choice_is_refused_before_sending() -> None:
    server = server_of(ok)
    async with make_provider(server) as provider:
        with pytest.raises(InvalidRequestError):
            await provider.chat(HELLO, tools=[WEATHER], tool_choice="get_time")
    assert server.requests == []


async def test_image_becomes_data_url_part() -> None:
    server = server_of(ok)
    async with make_provider(server) as provider:
        assert provider.capabilities.vision
        await provider.chat([Message.user("What is this?", images=[ImagePart(data=PNG, mime_type="image/png")])])
    content = server.requests[0]["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "What is this?"}
    assert content[1]["type"] == "image_url"
    url = content[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    import base64

    assert base64.b64decode(url.split(",", 1)[1]) == PNG


async def test_images_refused_without_vision() -> None:
    server = server_of(ok)
    image = Message.user("x", images=[ImagePart(data=PNG)])
    async with make_provider(server, model="gpt-3.5-turbo") as provider:
        with pytest.raises(UnsupportedCapabilityError):
            await provider.chat([image])
    compatible = CompatibleConfig(name="c", model="m", base_url="http://127.0.0.1:9/v1")
    assert not openai_capabilities(compatible).vision
    assert openai_capabilities(compatible.model_copy(update={"vision": True})).vision
    assert server.requests == []


class City(BaseModel):
    name: str
    population: int


async def test_structured_output_pydantic_strict_schema_and_parsed() -> None:
    server = server_of([*text_events(['{"name": "Paris", ', '"population": 2100000}'])])
    async with make_provider(server) as provider:
        resp = await provider.chat([Message.user("Paris?")], response_format=City)
    fmt = server.requests[0]["response_format"]
    assert fmt["type"] == "json_schema"
    spec = fmt["json_schema"]
    assert spec["name"] == "City"
    assert spec["strict"] is True
    assert spec["schema"]["additionalProperties"] is False
    assert set(spec["schema"]["required"]) == {"name", "population"}
    assert resp.parsed == City(name="Paris", population=2_100_000)


async def test_structured_output_optional_field_is_sent_non_strict() -> None:
    schema = {
        "title": "My Answer!",
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
        "required": ["a"],
    }
    server = server_of([*text_events(['{"a": "x"}'])])
    async with make_provider(server) as provider:
        resp = await provider.chat([Message.user("q")], response_format=schema)
    spec = server.requests[0]["response_format"]["json_schema"]
    assert spec == {"name": "My_Answer", "schema": schema, "strict": False}
    assert resp.parsed == {"a": "x"}


async def test_top_k_refused_on_openai_sent_on_compatible() -> None:
    server = server_of(ok)
    async with make_provider(server) as provider:
        with pytest.raises(UnsupportedCapabilityError, match="top_k"):
            await provider.chat(HELLO, top_k=40)
    assert server.requests == []
    compat = OpenAIProvider(
        CompatibleConfig(name="local", model="smol", base_url="http://127.0.0.1:8080/v1"),
        transport=httpx2.MockTransport(answering_unstreamed(server)),
    )
    async with compat:
        await compat.chat(HELLO, top_k=40, extra={"min_p": 0.05})
    assert server.requests[0]["top_k"] == 40
    assert server.requests[0]["min_p"] == 0.05


async def test_compatible_without_key_sends_placeholder_and_no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-openai-key-should-not-leak")
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-should-not-leak")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-should-not-leak")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-should-not-leak")
    server = server_of(ok)
    provider = OpenAIProvider(
        CompatibleConfig(name="local", model="smol", base_url="http://127.0.0.1:8080/v1"),
        transport=httpx2.MockTransport(answering_unstreamed(server)),
    )
    async with provider:
        await provider.chat(HELLO)
    headers = server.raw[0].headers
    assert headers["authorization"] == "Bearer not-needed"
    sent = " ".join(f"{k}: {v}" for k, v in headers.items())
    assert "leak" not in sent
    assert server.raw[0].url == "http://127.0.0.1:8080/v1/chat/completions"


def test_key_over_plain_http_to_remote_host_is_refused() -> None:
    with pytest.raises(ConfigError, match="plain http"):
        OpenAIProvider(OpenAIConfig(name="o", api_key=SecretStr("sk-1234567890"), base_url="http://example.com/v1"))


def test_openai_type_requires_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIProvider(OpenAIConfig(name="o"))


async def test_timeout_passed_to_the_sdk_is_the_remaining_deadline() -> None:
    server = server_of(ok)
    async with make_provider(server) as provider:
        await provider.chat(HELLO, timeout=5.0)
    timeout = server.raw[0].extensions["timeout"]
    assert 0 < timeout["read"] <= 5.0
    assert timeout["connect"] <= 5.0


# ----- response assembly -----------------------------------------------------------------


async def test_reasoning_content_becomes_thinking_and_cached_tokens_are_read() -> None:
    events = text_events(["4"], thinking="2 plus 2 is 4.", prompt=30, completion=9, cached=16)
    server = server_of(events)
    async with make_provider(server, model="o3-mini") as provider:
        stream = provider.chat_stream([Message.user("2+2?")])
        chunks = [c async for c in stream]
    assert "".join(c.text for c in chunks if isinstance(c, ThinkingChunk)) == "2 plus 2 is 4."
    resp = stream.response
    assert (resp.text, resp.thinking) == ("4", "2 plus 2 is 4.")
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.cache_read_tokens) == (14, 9, 16)
    assert resp.model == "gpt-4o-mini-2024-07-18"
    assert isinstance(chunks[-1], EndChunk)
    assert isinstance(chunks[-2], UsageChunk)


async def test_two_interleaved_tool_calls_and_missing_ids() -> None:
    def call_delta(index: int, **fields: Any) -> bytes:
        return sse(chunk({"tool_calls": [{"index": index, **fields}]}))

    events = [
        sse(chunk({"role": "assistant", "content": None})),
        call_delta(0, type="function", function={"name": "get_weather", "arguments": '{"ci'}),
        call_delta(1, id="call_b", type="function", function={"name": "get_time", "arguments": ""}),
        call_delta(0, function={"arguments": 'ty": "Paris"}'}),
        call_delta(1, function={"arguments": '{"tz": "CET"}'}),
        sse(chunk(finish="tool_calls")),
        sse(usage_chunk(20, 12)),
        DONE,
    ]
    server = server_of(events, events)
    async with make_provider(server) as provider:
        first = await provider.chat([Message.user("q")], tools=[WEATHER])
        stream = provider.chat_stream([Message.user("q")], tools=[WEATHER])
        streamed = [c.tool_call async for c in stream if isinstance(c, ToolUseChunk)]
    assert [(c.name, c.arguments) for c in first.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]
    assert first.tool_calls[1].id == "call_b"
    assert first.tool_calls[0].id.startswith("call_")
    assert streamed == first.tool_calls, "a generated id is stable"
    assert first.finish_reason == "tool_use"


async def test_invalid_tool_arguments_are_a_bad_response() -> None:
    events = [
        sse(
            chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "get_weather", "arguments": "{oops"}}]})
        ),
        sse(chunk(finish="tool_calls")),
        DONE,
    ]
    async with make_provider(server_of(events)) as provider:
        with pytest.raises(BadResponseError, match="invalid JSON arguments"):
            await provider.chat([Message.user("q")], tools=[WEATHER])


@pytest.mark.parametrize(
    ("wire", "ours"),
    [("stop", "stop"), ("length", "length"), ("content_filter", "content_filter"), ("weird", "error")],
)
async def test_finish_reasons(wire: str, ours: str) -> None:
    async with make_provider(server_of(text_events(["a"], finish=wire))) as provider:
        resp = await provider.chat(HELLO)
    assert resp.finish_reason == ours


async def test_no_usage_from_server_still_one_usage_chunk() -> None:
    events = [sse(chunk({"content": "a"})), sse(chunk({"content": "b"})), sse(chunk(finish="stop")), DONE]
    async with make_provider(server_of(events)) as provider:
        stream = provider.chat_stream(HELLO)
        usage = [c async for c in stream if isinstance(c, UsageChunk)]
    assert len(usage) == 1
    assert usage[0].usage.total_tokens == 0
    assert stream.response.text == "ab"


async def test_truncated_stream_without_finish_is_bad_response_after_partial() -> None:
    events = [sse(chunk({"content": "par"})), sse(chunk({"content": "tial"})), DONE]
    received: list[str] = []
    async with make_provider(server_of(events), max_retries=2) as provider:
        with pytest.raises(BadResponseError, match="finish"):
            async for c in provider.chat_stream(HELLO):
                if isinstance(c, ContentChunk):
                    received.append(c.text)
    assert "".join(received) == "partial"


async def test_in_stream_error_event_is_typed() -> None:
    events = [
        sse(chunk({"content": "a"})),
        sse({"error": {"message": "The server had an error", "type": "server_error", "code": None}}),
    ]
    async with make_provider(server_of(events)) as provider:
        with pytest.raises(ProviderUnavailableError, match="server had an error") as info:
            await provider.chat_stream(HELLO).collect()
        assert info.value.__cause__ is not None
        with pytest.raises(ProviderUnavailableError, match="server had an error"):  # unstreamed: an error body
            await provider.chat(HELLO)


async def test_malformed_chunk_shape_is_bad_response() -> None:
    events = [sse({"id": "x", "object": "chat.completion.chunk", "model": "m", "choices": "bad"}), DONE]
    async with make_provider(server_of(events)) as provider:
        with pytest.raises(BadResponseError):
            await provider.chat(HELLO)


# ----- faults and retries ------------------------------------------------------------------


def status(code: int, message: str = "scripted", error_type: str = "", **headers: str) -> Any:
    return lambda _req: httpx2.Response(code, json=error_body(message, error_type), headers=headers)


async def test_429_retry_after_is_honoured() -> None:
    server = server_of(status(429, "Rate limit reached", "rate_limit_exceeded", **{"retry-after": "0.2"}), ok)
    async with make_provider(server, max_retries=2) as provider:
        started = time.monotonic()
        resp = await provider.chat(HELLO)
        waited = time.monotonic() - started
    assert resp.text == "Hi!"
    assert len(server.requests) == 2
    assert waited >= 0.2


async def test_429_without_retries_carries_retry_after() -> None:
    server = server_of(status(429, "slow down", **{"retry-after-ms": "1500"}))
    async with make_provider(server) as provider:
        with pytest.raises(RateLimitError) as info:
            await provider.chat(HELLO)
    assert info.value.retry_after == pytest.approx(1.5)
    assert "slow down" in str(info.value)
    assert info.value.__cause__ is not None


async def test_500_then_success() -> None:
    server = server_of(status(500, "boom", "server_error"), ok)
    async with make_provider(server, max_retries=1) as provider:
        resp = await provider.chat(HELLO)
    assert resp.text == "Hi!"
    assert len(server.requests) == 2


async def test_retries_are_bounded() -> None:
    server = server_of(status(503, "overloaded"))
    async with make_provider(server, max_retries=2) as provider:
        with pytest.raises(ProviderUnavailableError):
            await provider.chat(HELLO)
    assert len(server.requests) == 3


async def test_connection_reset_mid_stream_after_partial() -> None:
    events = [sse(chunk({"content": "one "})), sse(chunk({"content": "two "})), sse(chunk({"content": "three"}))]
    server = server_of(lambda _req: sse_response(events, fail_after=2))
    received: list[str] = []
    async with make_provider(server, max_retries=3) as provider:
        with pytest.raises(ProviderUnavailableError) as info:
            async with provider.chat_stream(HELLO) as stream:
                async for c in stream:
                    if isinstance(c, ContentChunk):
                        received.append(c.text)
    assert received == ["one ", "two "]
    assert len(server.requests) == 1
    assert info.value.__cause__ is not None


async def test_connect_failure_is_unavailable() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    async with make_provider(refuse) as provider:
        with pytest.raises(ProviderUnavailableError):
            await provider.chat(HELLO)


async def test_invalid_json_data_line_is_bad_response() -> None:
    events = [sse(chunk({"content": "ok"})), b"data: {not json at all\n\n", DONE]
    async with make_provider(server_of(events)) as provider:
        with pytest.raises(BadResponseError):
            await provider.chat(HELLO)


async def test_ten_megabyte_sse_line() -> None:
    """A 10 MB event neither hangs nor blows memory: valid JSON is delivered, garbage is typed."""
    big_text = "x" * (10 * 1024 * 1024)
    valid = [sse(chunk({"content": big_text})), sse(chunk(finish="stop")), DONE]
    garbage = [b"data: {" + b"y" * (10 * 1024 * 1024) + b"\n\n", DONE]

    def in_pieces(events: list[bytes]) -> Any:
        async def body() -> AsyncIterator[bytes]:
            blob = b"".join(events)
            for i in range(0, len(blob), 64 * 1024):  # as a socket would deliver it
                yield blob[i : i + 64 * 1024]

        return lambda _req: httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=EventStream(body)
        )

    server = server_of(in_pieces(valid), in_pieces(garbage))
    async with make_provider(server) as provider:
        tracemalloc.start()
        resp = await provider.chat_stream(HELLO, timeout=20).collect()  # SSE reassembly across reads
        assert len(resp.text) == len(big_text)
        del resp
        with pytest.raises(BadResponseError):
            await provider.chat_stream(HELLO, timeout=20).collect()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 400 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"


async def test_stream_that_never_ends_hits_the_deadline() -> None:
    async def forever() -> AsyncIterator[bytes]:
        yield sse(chunk({"content": "started"}))
        while True:
            await asyncio.sleep(0.05)
            yield b": keep-alive\n\n"

    server = server_of(
        lambda _req: httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=EventStream(forever))
    )
    async with make_provider(server) as provider:
        # The guard only turns a hang (the deadline ignored) into a failure; it bounds no speed.
        async with asyncio.timeout(HANG_GUARD_SECS):
            with pytest.raises(ProviderTimeoutError):
                await provider.chat(HELLO, timeout=0.4)


async def test_server_that_never_answers_hits_the_deadline() -> None:
    async def hang(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async with make_provider(hang, max_retries=3) as provider:
        async with asyncio.timeout(HANG_GUARD_SECS):
            with pytest.raises(ProviderTimeoutError):
                await provider.chat(HELLO, timeout=0.3)


@pytest.mark.parametrize(
    ("message", "error_type"),
    [
        ("This model's maximum context length is 128000 tokens.", "context_length_exceeded"),
        ("request (5000 tokens) exceeds the available context size (4096 tokens)", "exceed_context_size_error"),
        ("Input too long for this model", "context_length_exceeded"),
    ],
)
async def test_context_length_400(message: str, error_type: str) -> None:
    async with make_provider(server_of(status(400, message, error_type))) as provider:
        with pytest.raises(ContextLengthError):
            await provider.chat(HELLO)


async def test_plain_400_is_invalid_request_and_not_retried() -> None:
    server = server_of(status(400, "Invalid value for 'temperature'", "invalid_request_error"), ok)
    async with make_provider(server, max_retries=3) as provider:
        with pytest.raises(InvalidRequestError, match="temperature"):
            await provider.chat(HELLO)
    assert len(server.requests) == 1


async def test_401_never_leaks_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-proj-very-secret-key-value-123456"
    monkeypatch.setenv("MY_OPENAI_KEY", key)
    server = server_of(status(401, f"Incorrect API key provided: {key}.", "invalid_api_key"))
    provider = make_provider(server, api_key=None, api_key_env="MY_OPENAI_KEY")
    async with provider:
        with pytest.raises(AuthenticationError) as info:
            await provider.chat(HELLO)
    assert server.raw[0].headers["authorization"] == f"Bearer {key}"
    error = info.value
    assert key not in str(error)
    assert key not in repr(error)
    assert error.provider == "openai-conf"
    assert isinstance(error.__cause__, Exception)


# ----- embeddings --------------------------------------------------------------------------


def embedding_server(requests: list[dict[str, Any]]) -> Any:
    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        requests.append(body)
        data = [
            {"object": "embedding", "index": i, "embedding": [float(i), float(len(text))]}
            for i, text in enumerate(body["input"])
        ]
        data.reverse()  # servers may answer out of order; `index` is the truth
        return httpx2.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            },
        )

    return handler


async def test_embeddings_batch_in_order() -> None:
    requests: list[dict[str, Any]] = []
    async with make_provider(embedding_server(requests), embedding_model="text-embedding-3-small") as provider:
        assert provider.capabilities.embeddings
        vectors = await provider.embed_batch(["a", "bb", "ccc"])
        single = await provider.embed("dddd")
    assert vectors == [[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]]
    assert single == [0.0, 4.0]
    assert requests[0] == {"input": ["a", "bb", "ccc"], "model": "text-embedding-3-small", "encoding_format": "float"}


async def test_embeddings_need_an_embedding_model() -> None:
    async with make_provider(ok) as provider:
        assert not provider.capabilities.embeddings
        with pytest.raises(UnsupportedCapabilityError):
            await provider.embed("x")


async def test_embeddings_count_mismatch_is_bad_response() -> None:
    def short(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={"object": "list", "data": [], "model": "e", "usage": {}})

    async with make_provider(short, embedding_model="e") as provider:
        with pytest.raises(BadResponseError):
            await provider.embed_batch(["a"])


# ----- capabilities, factory, lifecycle --------------------------------------------------


@pytest.mark.parametrize(
    ("model", "vision", "thinking"),
    [
        ("gpt-4o-mini", True, False),
        ("gpt-4.1-nano", True, False),
        ("gpt-5", True, True),
        ("o1", True, True),
        ("o3-mini", False, True),
        ("o4-mini", True, True),
        ("gpt-3.5-turbo", False, False),
        ("ft:gpt-4o-mini:org::abc", True, False),
    ],
)
def test_openai_capabilities(model: str, vision: bool, thinking: bool) -> None:
    caps = openai_capabilities(OpenAIConfig(name="o", model=model))
    assert (caps.vision, caps.thinking, caps.tools, caps.structured_output, caps.streaming) == (
        vision,
        thinking,
        True,
        True,
        True,
    )
    assert not caps.embeddings


def test_compatible_capabilities() -> None:
    caps = openai_capabilities(CompatibleConfig(name="c", model="m", base_url="http://localhost:1/v1"))
    assert caps.thinking and not caps.vision and not caps.embeddings


async def test_build_and_aclose_closes_the_http_client() -> None:
    provider = build(CompatibleConfig(name="c", model="m", base_url="http://localhost:1/v1"), None)  # type: ignore[arg-type]
    assert isinstance(provider, OpenAIProvider)
    await provider.aclose()
    await provider.aclose()  # twice is fine
    assert provider._http.is_closed


async def test_errors_are_llm_errors_naming_the_provider() -> None:
    async with make_provider(server_of(status(404, "The model does not exist", "model_not_found"))) as provider:
        with pytest.raises(LlmError) as info:
            await provider.chat(HELLO)
    assert isinstance(info.value, InvalidRequestError)
    assert "openai-conf" in str(info.value)


def test_import_zeph_providers_does_not_import_openai() -> None:
    code = "import sys, zeph_providers; print('openai' in sys.modules, 'httpx2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "False"


async def test_embedding_usage_is_reported_and_priced() -> None:
    from zeph_providers.pricing import CostTracker

    requests: list[dict[str, Any]] = []
    async with make_provider(embedding_server(requests), embedding_model="text-embedding-3-small") as provider:
        tracker = CostTracker()
        provider.hooks.add(tracker)
        await provider.embed_batch(["a", "bb", "ccc"])
    totals = tracker.totals()[provider.name]
    assert totals.input_tokens == 3  # the reply's usage.prompt_tokens
    assert totals.cost_usd == pytest.approx(3 * 0.02 / 1e6)  # genai-prices: text-embedding-3-small
