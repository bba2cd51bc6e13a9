"""The Ollama backend against a real loopback server speaking Ollama's REST API.

Every test talks over real sockets to `tests.fakes.ollama_server.OllamaServer`, which follows
Ollama's documented payload shapes; the assertions check what went over the wire and what the
caller gets back.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, SecretStr

from tests.backends import HANG_GUARD_SECS
from tests.fakes import ollama as ollama_wire
from tests.fakes.ollama_server import (
    BrokenReply,
    ChatReply,
    EmbedReply,
    ErrorReply,
    HangReply,
    OllamaServer,
    RawReply,
)
from zeph_providers import (
    BadResponseError,
    ContentChunk,
    ContextLengthError,
    ImagePart,
    InvalidRequestError,
    LlmError,
    Message,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    ThinkingChunk,
    ToolCall,
    ToolCallDeltaChunk,
    ToolDefinition,
    ToolUseChunk,
    UnsupportedCapabilityError,
    UsageChunk,
)
from zeph_providers.backends.ollama import OllamaProvider, build
from zeph_providers.config import OllamaConfig
from zeph_providers.retry import RetryPolicy

WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather for a city",
    parameters={
        "type": "object",
        "properties": {
            "location": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                "required": ["city"],
            },
            "unit": {"anyOf": [{"type": "string", "enum": ["celsius", "fahrenheit"]}, {"type": "null"}]},
        },
        "required": ["location"],
        "additionalProperties": False,
    },
)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(32))


@pytest.fixture
def server() -> Iterator[OllamaServer]:
    with OllamaServer() as running:
        yield running


def make(server_url: str, model: str = "qwen3:8b", *, retries: int = 0, **fields: Any) -> OllamaProvider:
    config = OllamaConfig(name="ollama", model=model, base_url=server_url, max_retries=retries, **fields)
    provider = OllamaProvider(config)
    provider.retry_policy = RetryPolicy(max_retries=retries, base_delay=0.01, max_delay=0.05)
    return provider


@pytest.fixture
async def provider(server: OllamaServer) -> AsyncIterator[OllamaProvider]:
    p = make(server.url, embedding_model="nomic-embed-text", keep_alive="10m")
    yield p
    await p.aclose()


# ----- request payloads ---------------------------------------------------------------------


async def test_messages_tool_results_and_images_on_the_wire(server: OllamaServer) -> None:
    server.models["llava:7b"] = ["completion", "vision", "tools"]
    p = make(server.url, "llava:7b")
    call = ToolCall(id="call_abc", name="get_weather", arguments={"location": {"city": "Paris"}})
    history = [
        Message.system("Be brief."),
        Message.user("What is in this picture, and the weather?", images=[ImagePart(data=PNG)]),
        Message.assistant("Let me check.", tool_calls=[call], thinking="need weather"),
        Message.tool_result("call_abc", {"temp_c": 18}),
        Message.tool_result("call_unknown", "orphan result", is_error=True),
    ]
    await p.chat(history, tools=[WEATHER])
    await p.aclose()
    sent = server.chat_requests[0]
    assert sent["model"] == "llava:7b"
    assert sent["stream"] is False  # chat(): one unstreamed reply (chat_stream() sends True)
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": "What is in this picture, and the weather?",
            "images": [base64.b64encode(PNG).decode()],
        },
        {
            "role": "assistant",
            "content": "Let me check.",
            "thinking": "need weather",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"location": {"city": "Paris"}}}}],
        },
        {"role": "tool", "content": '{"temp_c": 18}', "tool_name": "get_weather"},
        {"role": "tool", "content": "Error: orphan result"},
    ]
    # The tool schema arrives intact (nested objects, anyOf, additionalProperties).
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": WEATHER.description, "parameters": WEATHER.parameters},
        }
    ]


async def test_options_keep_alive_and_think(server: OllamaServer) -> None:
    p = make(server.url, keep_alive="30m", think=True, temperature=0.2)
    await p.chat(
        [Message.user("hi")],
        max_tokens=64,
        temperature=0.1,
        top_p=0.9,
        top_k=20,
        seed=7,
        stop=["</s>", "###"],
        extra={"repeat_penalty": 1.2, "num_ctx": 8192},
    )
    await p.chat([Message.user("again")])  # config defaults only
    await p.aclose()
    first, second = server.chat_requests
    assert first["keep_alive"] == "30m"
    assert first["think"] is True
    assert first["options"] == {
        "num_predict": 64,
        "temperature": 0.1,
        "top_p": 0.9,
        "top_k": 20,
        "seed": 7,
        "stop": ["</s>", "###"],
        "repeat_penalty": 1.2,
        "num_ctx": 8192,
    }
    assert second["options"] == {"temperature": 0.2}
    assert "tools" not in first and "format" not in first


class Weather(BaseModel):
    city: str
    temp_c: float


async def test_structured_output_sends_schema_as_format(server: OllamaServer, provider: OllamaProvider) -> None:
    server.script_chat(ChatReply(content=('{"city": ', '"Paris", "temp_c": 18.5}')))
    resp = await provider.chat([Message.user("weather?")], response_format=Weather)
    assert server.chat_requests[0]["format"] == Weather.model_json_schema()
    assert resp.parsed == Weather(city="Paris", temp_c=18.5)


async def test_tool_choice_none_and_auto(server: OllamaServer, provider: OllamaProvider) -> None:
    await provider.chat([Message.user("hi")], tools=[WEATHER], tool_choice="none")
    await provider.chat([Message.user("hi")], tools=[WEATHER], tool_choice="auto")
    no_tools, auto = server.chat_requests
    assert "tools" not in no_tools and "format" not in no_tools
    assert auto["tools"][0]["function"]["name"] == "get_weather"
    assert "format" not in auto


# ----- forced tools: emulated with the schema-constrained `format` -------------------------------

TIME = ToolDefinition(
    name="get_time",
    description="The time in a timezone",
    parameters={"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
)
FORCED_ARGS = {"location": {"city": "Paris", "country": "FR"}, "unit": "celsius"}
FORCED_TEXT = json.dumps({"name": "get_weather", "arguments": FORCED_ARGS})


def _call_schema(tool: ToolDefinition) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"type": "string", "enum": [tool.name]}, "arguments": tool.parameters},
        "required": ["name", "arguments"],
    }


@pytest.mark.parametrize("stream", [False, True])
async def test_forced_tool_is_emulated_with_format(
    server: OllamaServer, provider: OllamaProvider, stream: bool
) -> None:
    # The constrained reply arrives as text, split mid-token the way a model streams it.
    server.script_chat(ChatReply(content=(FORCED_TEXT[:17], FORCED_TEXT[17:40], FORCED_TEXT[40:])))
    messages = [Message.system("Be brief."), Message.user("Weather in Paris?")]
    if stream:
        async with provider.chat_stream(messages, tools=[WEATHER, TIME], tool_choice="get_weather") as s:
            chunks = [chunk async for chunk in s]
        resp = s.response
    else:
        resp = await provider.chat(messages, tools=[WEATHER, TIME], tool_choice="get_weather")
        chunks = []
    sent = server.chat_requests[0]
    assert "tools" not in sent, "a forced tool is sent as `format`, not as tools"
    assert sent["format"] == _call_schema(WEATHER)
    system = sent["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.\n\n")
    assert "get_weather" in system["content"] and json.dumps(WEATHER.parameters) in system["content"]
    assert "get_time" not in system["content"]
    assert sent["messages"][1] == {"role": "user", "content": "Weather in Paris?"}
    assert resp.text == "", "the JSON call is not the reply's text"
    assert resp.finish_reason == "tool_use"
    assert [(c.name, c.arguments) for c in resp.tool_calls] == [("get_weather", FORCED_ARGS)]
    assert resp.tool_calls[0].id
    if stream:
        assert not [c for c in chunks if isinstance(c, ContentChunk)]
        deltas = [c for c in chunks if isinstance(c, ToolCallDeltaChunk)]
        assert [(d.index, d.name, d.id) for d in deltas] == [(0, "get_weather", resp.tool_calls[0].id)]
        assert json.loads(deltas[0].arguments) == FORCED_ARGS
        kinds = [type(c).__name__ for c in chunks]
        assert kinds.index("ToolCallDeltaChunk") < kinds.index("ToolUseChunk")


async def test_forced_required_offers_every_tool(server: OllamaServer, provider: OllamaProvider) -> None:
    server.script_chat(ChatReply(content=(json.dumps({"name": "get_time", "arguments": {"tz": "UTC"}}),)))
    resp = await provider.chat([Message.user("Time?")], tools=[WEATHER, TIME], tool_choice="required")
    sent = server.chat_requests[0]
    assert "tools" not in sent
    assert sent["format"] == {"anyOf": [_call_schema(WEATHER), _call_schema(TIME)]}
    assert sent["messages"][0]["role"] == "system"  # no system message given: the instruction is one
    assert "get_weather" in sent["messages"][0]["content"] and "get_time" in sent["messages"][0]["content"]
    assert [(c.name, c.arguments) for c in resp.tool_calls] == [("get_time", {"tz": "UTC"})]
    again = await provider.chat([Message.user("Time?")], tools=[WEATHER, TIME], tool_choice="required")
    assert again.tool_calls == resp.tool_calls, "the generated id is stable"
    async with provider.chat_stream([Message.user("Time?")], tools=[WEATHER, TIME], tool_choice="any") as s:
        async for _ in s:
            pass
    assert s.response == resp


@pytest.mark.parametrize(
    ("reply", "needle"),
    [
        (ChatReply(content=('{"name": "get_weather", "argu',), done_reason="length"), "token limit"),
        (ChatReply(content=('{"name": "get_weather"}',)), "object"),
        (ChatReply(content=('{"name": "launch_rockets", "arguments": {}}',)), "launch_rockets"),
        (ChatReply(content=("Sure! It is sunny.",)), "forced tool call"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_forced_tool_malformed_reply(
    server: OllamaServer, provider: OllamaProvider, reply: ChatReply, needle: str, stream: bool
) -> None:
    server.script_chat(reply)
    with pytest.raises(BadResponseError) as info:
        if stream:
            async with provider.chat_stream([Message.user("hi")], tools=[WEATHER], tool_choice="get_weather") as s:
                async for _ in s:
                    pass
        else:
            await provider.chat([Message.user("hi")], tools=[WEATHER], tool_choice="get_weather")
    assert info.value.provider == "ollama"
    assert needle in str(info.value)


async def test_forced_tool_refusals(server: OllamaServer, provider: OllamaProvider) -> None:
    with pytest.raises(UnsupportedCapabilityError) as info:
        await provider.chat([Message.user("hi")], tools=[WEATHER], tool_choice="get_weather", response_format=Weather)
    assert "response_format" in str(info.value) and info.value.provider == "ollama"
    with pytest.raises(InvalidRequestError):
        await provider.chat([Message.user("hi")], tools=[WEATHER], tool_choice="nope")
    with pytest.raises(InvalidRequestError):
        await provider.chat([Message.user("hi")], tool_choice="required")
    assert server.chat_requests == []


async def test_forced_tool_needs_no_tool_support(server: OllamaServer) -> None:
    # gemma:2b lists no "tools" capability: `format` is all the emulation needs.
    p = make(server.url, "gemma:2b")
    server.script_chat(ChatReply(content=(FORCED_TEXT,)))
    resp = await p.chat([Message.user("hi")], tools=[WEATHER], tool_choice="required")
    await p.aclose()
    assert "tools" not in server.chat_requests[0]
    assert [c.name for c in resp.tool_calls] == ["get_weather"]
    plain = make(server.url, "gemma:2b")
    with pytest.raises(UnsupportedCapabilityError):
        await plain.chat([Message.user("hi")], tools=[WEATHER])  # unforced tools still need the model's support
    await plain.aclose()


async def test_api_key_header_and_secret_never_in_errors(server: OllamaServer) -> None:
    key = "ollama-proxy-secret-0123456789"
    p = make(server.url, api_key=SecretStr(key))
    server.script_chat(ErrorReply(400, f"bad key {key}"))
    with pytest.raises(InvalidRequestError) as info:
        await p.chat([Message.user("hi")])
    await p.aclose()
    assert server.requests_to("/api/chat")[0].headers["authorization"] == f"Bearer {key}"
    assert key not in str(info.value) and key not in repr(info.value)


# ----- streaming ----------------------------------------------------------------------------


async def test_thinking_then_content_streamed(server: OllamaServer, provider: OllamaProvider) -> None:
    server.script_chat(ChatReply(thinking=("Let me ", "think."), content=("The ", "answer."), eval_count=9))
    async with provider.chat_stream([Message.user("q")]) as stream:
        chunks = [chunk async for chunk in stream]
    kinds = [type(c).__name__ for c in chunks]
    assert kinds == [
        "ThinkingChunk",
        "ThinkingChunk",
        "ContentChunk",
        "ContentChunk",
        "UsageChunk",
        "EndChunk",
    ]
    assert [c.text for c in chunks if isinstance(c, ThinkingChunk)] == ["Let me ", "think."]
    assert stream.response.thinking == "Let me think."
    assert stream.response.text == "The answer."
    assert stream.response.usage.output_tokens == 9


async def test_tool_calls_get_stable_unique_ids(server: OllamaServer, provider: OllamaProvider) -> None:
    calls = [
        [{"function": {"name": "get_weather", "arguments": {"location": {"city": "Paris"}}}}],
        [
            {"function": {"name": "get_weather", "arguments": {"location": {"city": "Rome"}}}},
            {"function": {"name": "get_weather", "arguments": {"location": {"city": "Paris"}}}},
        ],
    ]
    server.script_chat(ChatReply(content=(), tool_calls=calls))
    first = await provider.chat([Message.user("weather?")], tools=[WEATHER])
    stream = provider.chat_stream([Message.user("weather?")], tools=[WEATHER])
    streamed = [c.tool_call async for c in stream if isinstance(c, ToolUseChunk)]
    assert first.finish_reason == "tool_use"
    assert [c.arguments["location"]["city"] for c in first.tool_calls] == ["Paris", "Rome", "Paris"]
    ids = [c.id for c in first.tool_calls]
    assert len(set(ids)) == 3, "same tool, same arguments, still distinct ids"
    assert all(i.startswith("call_") for i in ids)
    assert streamed == first.tool_calls, "ids are deterministic for the same response"
    # The next turn names the tool for each result.
    history = [Message.user("weather?"), first.to_message()]
    history += [Message.tool_result(c.id, "sunny") for c in first.tool_calls]
    server.script_chat(ChatReply(content=("ok",)))
    await provider.chat(history, tools=[WEATHER])
    tool_messages = [m for m in server.chat_requests[-1]["messages"] if m["role"] == "tool"]
    assert [m["tool_name"] for m in tool_messages] == ["get_weather"] * 3


async def test_finish_reasons_and_usage_once(server: OllamaServer, provider: OllamaProvider) -> None:
    server.script_chat(ChatReply(done_reason="length", prompt_eval_count=None, eval_count=3))
    stream = provider.chat_stream([Message.user("q")])
    chunks = [c async for c in stream]
    usage = [c for c in chunks if isinstance(c, UsageChunk)]
    assert len(usage) == 1 and (usage[0].usage.input_tokens, usage[0].usage.output_tokens) == (0, 3)
    assert stream.response.finish_reason == "length"
    assert len([c for c in chunks if isinstance(c, ContentChunk)]) == 4


# ----- capabilities -------------------------------------------------------------------------


async def test_capabilities_from_api_show(server: OllamaServer) -> None:
    p = make(server.url, "qwen3:8b")
    before = p.capabilities
    assert (before.streaming, before.tools, before.structured_output, before.vision) == (True, True, True, False)
    await p.chat([Message.user("hi")])
    await p.chat([Message.user("hi")])
    after = p.capabilities
    assert (after.tools, after.thinking, after.vision, after.embeddings) == (True, True, False, False)
    assert len(server.requests_to("/api/show")) == 1, "fetched once, cached"
    assert server.requests_to("/api/show")[0].body == {"model": "qwen3:8b"}
    server.models["qwen3:8b"] = ["completion", "tools", "vision"]
    refreshed = await p.refresh_capabilities()
    assert refreshed.vision and not refreshed.thinking
    await p.aclose()


async def test_image_rejected_when_model_lacks_vision(server: OllamaServer) -> None:
    p = make(server.url, "gemma:2b")
    await p.refresh_capabilities()
    with pytest.raises(UnsupportedCapabilityError) as info:
        await p.chat([Message.user("what is this?", images=[ImagePart(data=PNG)])])
    assert "vision" in str(info.value)
    # Also refused when the image comes before capabilities are known (checked after /api/show).
    fresh = make(server.url, "gemma:2b")
    with pytest.raises(UnsupportedCapabilityError):
        await fresh.chat([Message.user("what is this?", images=[ImagePart(data=PNG)])])
    assert server.chat_requests == [], "nothing was sent"
    await p.aclose()
    await fresh.aclose()


async def test_tools_rejected_when_model_lacks_them(server: OllamaServer) -> None:
    p = make(server.url, "llava:7b")
    with pytest.raises(UnsupportedCapabilityError) as info:
        await p.chat([Message.user("hi")], tools=[WEATHER])
    assert "tools" in str(info.value)
    embed_only = make(server.url, "nomic-embed-text")
    with pytest.raises(UnsupportedCapabilityError):
        await embed_only.chat([Message.user("hi")])
    assert server.chat_requests == []
    await p.aclose()
    await embed_only.aclose()


# ----- embeddings ---------------------------------------------------------------------------


async def test_embed_batch_is_one_native_request_in_order(server: OllamaServer, provider: OllamaProvider) -> None:
    assert provider.capabilities.embeddings
    texts = ["alpha", "beta", "gamma", "delta"]
    vectors = await provider.embed_batch(texts)
    single = await provider.embed("beta")
    embeds = server.requests_to("/api/embed")
    assert embeds[0].body == {"model": "nomic-embed-text", "input": texts, "keep_alive": "10m"}
    assert len(embeds) == 2
    assert len(vectors) == 4 and all(len(v) == 8 for v in vectors)
    assert vectors[1] == single
    assert len({tuple(v) for v in vectors}) == 4


async def test_embeddings_need_an_embedding_model(server: OllamaServer) -> None:
    p = make(server.url)
    assert not p.capabilities.embeddings
    with pytest.raises(UnsupportedCapabilityError):
        await p.embed("x")
    await p.aclose()


async def test_embed_errors(server: OllamaServer, provider: OllamaProvider) -> None:
    server.script_embed(EmbedReply(embeddings=[[0.1, 0.2]]))
    with pytest.raises(BadResponseError):
        await provider.embed_batch(["a", "b"])
    server.script_embed(ErrorReply(429, "busy", {"Retry-After": "2"}))
    with pytest.raises(RateLimitError) as info:
        await provider.embed_batch(["a"])
    assert info.value.retry_after == pytest.approx(2)
    missing = make(server.url, embedding_model="not-pulled")
    server.script_embed(EmbedReply())
    with pytest.raises(InvalidRequestError, match="ollama pull not-pulled"):
        await missing.embed("a")
    await missing.aclose()


# ----- faults -------------------------------------------------------------------------------


async def test_rate_limit_with_retry_after(server: OllamaServer, provider: OllamaProvider) -> None:
    server.script_chat(ErrorReply(429, "too many requests", {"Retry-After": "7"}))
    with pytest.raises(RateLimitError) as info:
        await provider.chat([Message.user("hi")])
    assert info.value.retry_after == pytest.approx(7)
    assert info.value.provider == "ollama"
    assert info.value.__cause__ is not None


async def test_rate_limit_then_success_honours_retry_after(server: OllamaServer) -> None:
    p = make(server.url, retries=2)
    server.script_chat(ErrorReply(429, "slow down", {"Retry-After": "0.3"}), ChatReply(content=("ok",)))
    started = time.monotonic()
    resp = await p.chat([Message.user("hi")])
    assert resp.text == "ok"
    assert time.monotonic() - started >= 0.3
    assert len(server.chat_requests) == 2
    await p.aclose()


async def test_server_error_then_success(server: OllamaServer) -> None:
    p = make(server.url, retries=2)
    server.script_chat(ErrorReply(500, "llama runner process has terminated"), ChatReply(content=("fine",)))
    resp = await p.chat([Message.user("hi")])
    assert resp.text == "fine"
    assert len(server.chat_requests) == 2
    await p.aclose()


async def test_connection_closed_mid_stream(server: OllamaServer) -> None:
    p = make(server.url, retries=3)
    server.script_chat(BrokenReply(content=("partial ", "text")))
    received: list[str] = []
    with pytest.raises(ProviderUnavailableError) as info:
        async for chunk in p.chat_stream([Message.user("hi")]):
            if isinstance(chunk, ContentChunk):
                received.append(chunk.text)
    assert "".join(received) == "partial text"
    assert info.value.__cause__ is not None
    assert len(server.chat_requests) == 1, "never retried after the first chunk"
    await p.aclose()


async def test_stream_without_done_is_bad_response(server: OllamaServer, provider: OllamaProvider) -> None:
    line = {"model": "qwen3:8b", "created_at": "x", "message": {"role": "assistant", "content": "cut"}, "done": False}
    server.script_chat(RawReply([json.dumps(line).encode() + b"\n"]))
    received: list[str] = []
    with pytest.raises(BadResponseError, match="done"):
        async for chunk in provider.chat_stream([Message.user("hi")]):
            if isinstance(chunk, ContentChunk):
                received.append(chunk.text)
    assert received == ["cut"]


async def test_invalid_json_line(server: OllamaServer, provider: OllamaProvider) -> None:
    server.script_chat(RawReply([b'{"model": "qwen3:8b", "message": {"role": "assistant", "con\n']))
    with pytest.raises(BadResponseError) as info:
        await provider.chat([Message.user("hi")])
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


async def test_error_line_inside_the_stream(server: OllamaServer, provider: OllamaProvider) -> None:
    server.script_chat(RawReply([b'{"error": "the input length exceeds the context length"}\n']))
    with pytest.raises(ContextLengthError):
        await provider.chat([Message.user("hi")])
    server.script_chat(RawReply([b'{"error": "an error was encountered while running the model"}\n']))
    with pytest.raises(ProviderUnavailableError):
        await provider.chat([Message.user("hi")])


async def test_context_overflow_status(server: OllamaServer, provider: OllamaProvider) -> None:
    server.script_chat(ErrorReply(400, "prompt is too long: exceeds the context window"))
    with pytest.raises(ContextLengthError):
        await provider.chat([Message.user("hi")])


async def test_ten_megabyte_line_is_refused_quickly(server: OllamaServer, provider: OllamaProvider) -> None:
    head = b'{"model": "qwen3:8b", "created_at": "x", "message": {"role": "assistant", "content": "'
    piece = b"a" * (1024 * 1024)
    server.script_chat(RawReply([head] + [piece] * 10 + [b'"}, "done": false}\n'], finish=False))
    with pytest.raises(BadResponseError, match="exceeded"):  # refused at the limit, not at the deadline
        await provider.chat([Message.user("hi")], timeout=HANG_GUARD_SECS)


async def test_stream_that_never_ends_times_out(server: OllamaServer, provider: OllamaProvider) -> None:
    server.script_chat(HangReply(content=("still ", "thinking")))
    received: list[str] = []
    # The guard only turns a hang (the deadline ignored) into a failure; it bounds no speed.
    async with asyncio.timeout(HANG_GUARD_SECS):
        with pytest.raises(ProviderTimeoutError):
            async for chunk in provider.chat_stream([Message.user("hi")], timeout=0.5):
                if isinstance(chunk, ContentChunk):
                    received.append(chunk.text)
    assert received == ["still ", "thinking"]
    server.script_chat(HangReply())
    async with asyncio.timeout(HANG_GUARD_SECS):
        with pytest.raises(ProviderTimeoutError):
            await provider.chat([Message.user("hi")], timeout=0.5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    p = make(url)
    with pytest.raises(ProviderUnavailableError, match="is Ollama running") as info:
        await p.chat([Message.user("hi")])
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert url in str(info.value)
    with pytest.raises(ProviderUnavailableError, match="is Ollama running"):
        await p.refresh_capabilities()
    p2 = make(url, embedding_model="nomic-embed-text")
    with pytest.raises(ProviderUnavailableError):
        await p2.embed("x")
    await p.aclose()
    await p2.aclose()


async def test_model_not_found_hints_pull(server: OllamaServer) -> None:
    p = make(server.url, "llama9:70b")
    with pytest.raises(InvalidRequestError, match=r"ollama pull llama9:70b") as info:
        await p.chat([Message.user("hi")])
    assert "not found" in str(info.value)
    await p.aclose()


async def test_http_errors_keep_cause(server: OllamaServer, provider: OllamaProvider) -> None:
    server.script_chat(ErrorReply(503, "server busy"))
    with pytest.raises(ProviderUnavailableError) as info:
        await provider.chat([Message.user("hi")])
    assert type(info.value.__cause__).__name__ == "ResponseError"


# ----- construction and lifecycle -----------------------------------------------------------


async def test_custom_transport_and_close() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/api/show":
            return httpx.Response(200, json={"model_info": {}, "capabilities": ["completion"]})
        lines = [
            ollama_wire.delta("m", "hi", created_at="t"),
            ollama_wire.final("m", created_at="t", prompt_eval_count=2, eval_count=1),
        ]
        return httpx.Response(200, content=b"".join(ollama_wire.line(x) for x in lines))

    config = OllamaConfig(name="t", model="m", base_url="http://ollama.invalid:11434")
    p = OllamaProvider(config, transport=httpx.MockTransport(handler))
    resp = await p.chat([Message.user("x")])
    assert (resp.text, resp.usage.input_tokens, resp.model) == ("hi", 2, "m")
    assert seen == ["/api/show", "/api/chat"]
    await p.aclose()
    await p.aclose()  # safe twice
    assert p._client._client.is_closed


@pytest.mark.parametrize(
    "show",
    [
        httpx.Response(501, json={"error": "not implemented"}),
        httpx.Response(200, json={"license": "MIT"}),  # no model_info: the SDK's model rejects it
        httpx.Response(200, json={"model_info": {}}),  # an older server: no capabilities list
    ],
    ids=["501", "odd-shape", "no-capabilities"],
)
async def test_unusable_api_show_does_not_block_chat(show: httpx.Response) -> None:
    final = {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": "ok"}, "done": True}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/show":
            return show
        return httpx.Response(200, content=json.dumps(final).encode() + b"\n")

    p = OllamaProvider(OllamaConfig(name="t", model="m"), transport=httpx.MockTransport(handler))
    resp = await p.chat([Message.user("x", images=[ImagePart(data=PNG)])], tools=[WEATHER])
    assert resp.text == "ok"
    assert p.capabilities.tools
    await p.aclose()


def test_build_and_light_import() -> None:
    config = OllamaConfig(name="o", model="qwen3:8b")
    provider = build(config, registry=None)  # type: ignore[arg-type]
    assert isinstance(provider, OllamaProvider)
    assert provider.base_url == "http://localhost:11434"
    asyncio.run(provider.aclose())
    code = "import sys, zeph_providers; assert 'ollama' not in sys.modules, 'ollama imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_registry_builds_it_from_toml(server: OllamaServer) -> None:
    from zeph_providers import Registry

    toml = f"""
[[llm.providers]]
name = "local-ollama"
type = "ollama"
model = "qwen3:8b"
base_url = "{server.url}"
embedding_model = "nomic-embed-text"
keep_alive = "5m"
think = false
"""
    async with Registry.from_toml_string(toml) as registry:
        provider = registry.get("local-ollama")
        assert isinstance(provider, OllamaProvider)
        resp = await provider.chat([Message.user("hi")])
        assert resp.text == "Hello from Ollama!"
        assert len(await provider.embed("x")) == 8
    assert server.chat_requests[0]["think"] is False
    assert provider._client._client.is_closed


async def test_errors_are_all_llm_errors(server: OllamaServer, provider: OllamaProvider) -> None:
    server.script_chat(RawReply([b'{"model": "qwen3:8b", "done": false}\n']))  # no "message": wrong shape
    with pytest.raises(LlmError) as info:
        await provider.chat([Message.user("hi")])
    assert isinstance(info.value, BadResponseError)


async def test_concurrent_first_calls_fetch_capabilities_once(server: OllamaServer) -> None:
    p = make(server.url)
    server.script_chat(ChatReply(content=("a", "b"), delay_secs=0.01))
    results = await asyncio.gather(*(p.chat([Message.user(f"q{i}")]) for i in range(8)))
    assert [r.text for r in results] == ["ab"] * 8
    assert len(server.requests_to("/api/show")) == 1
    assert len(server.chat_requests) == 8
    await p.aclose()


# ----- the test server itself speaks Ollama's API (checked with the official SDK's models) ----


async def test_server_shapes_parse_with_the_official_sdk(server: OllamaServer) -> None:
    import ollama

    client = ollama.AsyncClient(host=server.url)
    server.script_chat(ChatReply(content=("Hel", "lo"), thinking=("hmm",)))
    whole = await client.chat(model="qwen3:8b", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert (whole.message.content, whole.message.thinking, whole.done, whole.done_reason) == (
        "Hello",
        "hmm",
        True,
        "stop",
    )
    assert (whole.prompt_eval_count, whole.eval_count) == (12, 4)
    parts = [
        p async for p in await client.chat(model="qwen3:8b", messages=[{"role": "user", "content": "hi"}], stream=True)
    ]
    assert [p.done for p in parts] == [False, False, False, True]
    shown = await client.show("llava:7b")
    assert shown.capabilities == ["completion", "vision"] and shown.details is not None
    listed = await client.list()
    assert {m.model for m in listed.models} >= {"qwen3:8b", "llava:7b"}
    embedded = await client.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(embedded.embeddings) == 2
    with pytest.raises(ollama.ResponseError) as info:
        await client.show("missing")
    assert info.value.status_code == 404
    async with httpx.AsyncClient(base_url=server.url) as raw:
        assert (await raw.get("/api/version")).json()["version"]
        streamed = await raw.post("/api/chat", json={"model": "qwen3:8b", "messages": []})
        assert streamed.headers["content-type"] == "application/x-ndjson"
        assert streamed.headers["transfer-encoding"] == "chunked"
    await client._client.aclose()


async def test_embedding_usage_is_reported_for_pricing(server: OllamaServer) -> None:
    from zeph_providers.pricing import CostTracker

    p = make(server.url, embedding_model="nomic-embed-text")
    tracker = CostTracker()
    p.hooks.add(tracker)
    await p.embed_batch(["alpha beta", "gamma"])
    await p.aclose()
    totals = tracker.totals()[p.name]
    assert totals.input_tokens == 3  # the server's prompt_eval_count
    assert totals.cost_usd == 0.0 and totals.unpriced_calls == 1  # Ollama: no price without `pricing`
