"""Tool-call argument deltas (`ToolCallDeltaChunk`) on the wire, for OpenAI, Claude and Ollama.

Recorded-shape streams: OpenAI's `tool_calls[].index` fragments (several calls interleaved, the
index not starting at 0, arguments cut mid-token, the id only on a call's first fragment),
Claude's `input_json_delta`s across content blocks with a text block first (block indexes are not
call positions), and Ollama's whole calls. Each test asserts the exact deltas, the final calls,
the shared contract (`tests.conformance.scenarios.check_tool_deltas`), and that the streamed, the
non-streamed (`chat()`'s one request) and `chat()` replies are equal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from tests.conformance.harness_claude import FakeAnthropic
from tests.conformance.harness_claude import make_provider as make_claude
from tests.conformance.harness_claude import sse_response as claude_sse_response
from tests.conformance.harness_openai import ScriptedServer, sse_response
from tests.conformance.harness_openai import make_provider as make_openai
from tests.conformance.scenarios import check_tool_deltas
from tests.fakes.anthropic import message_delta, message_start, message_stop, text_block, tool_block
from tests.fakes.ollama_server import ChatReply, OllamaServer
from tests.fakes.openai import DONE, chunk, sse, usage_chunk
from zeph_providers import (
    ChatResponse,
    ContentChunk,
    Message,
    StreamChunk,
    ToolCallDeltaChunk,
    ToolDefinition,
    ToolUseChunk,
)
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.backends.ollama import OllamaProvider
from zeph_providers.config import OllamaConfig
from zeph_providers.options import ChatOptions
from zeph_providers.protocol import LlmProvider
from zeph_providers.types import ToolCall

TOOLS = [
    ToolDefinition(name="get_weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}}),
    ToolDefinition(name="get_time", parameters={"type": "object", "properties": {"tz": {"type": "string"}}}),
    ToolDefinition(name="get_news", parameters={"type": "object", "properties": {}}),
]
ASK = [Message.user("Weather and time in Paris, and the news?")]

Delta = tuple[int, str, str, str]


def deltas(chunks: list[StreamChunk]) -> list[Delta]:
    return [(c.index, c.id, c.name, c.arguments) for c in chunks if isinstance(c, ToolCallDeltaChunk)]


def kinds(chunks: list[StreamChunk]) -> list[str]:
    names = {ContentChunk: "text", ToolCallDeltaChunk: "delta", ToolUseChunk: "call"}
    return [names[type(c)] for c in chunks if type(c) in names]


async def three_ways(
    provider: LlmProvider, messages: list[Message], **kwargs: Any
) -> tuple[list[StreamChunk], list[StreamChunk], ChatResponse]:
    """The streamed chunks, the non-streamed request's chunks (what `chat()` folds), and `chat()`.

    Asserts the three replies are equal and both chunk lists keep the delta contract.
    """
    async with provider.chat_stream(messages, **kwargs) as stream:
        streamed = [c async for c in stream]
    async with provider.open_stream(messages, ChatOptions.from_kwargs(kwargs, stream=False)) as whole:
        unstreamed = [c async for c in whole]
    resp = await provider.chat(messages, **kwargs)
    assert stream.response == resp
    assert whole.response == resp
    assert check_tool_deltas(streamed) == resp.tool_calls
    assert check_tool_deltas(unstreamed) == resp.tool_calls
    return streamed, unstreamed, resp


# ----- OpenAI (and compatible) --------------------------------------------------------------


def call_delta(index: int, **fields: Any) -> bytes:
    return sse(chunk({"tool_calls": [{"index": index, **fields}]}))


OPENAI_EVENTS = [
    sse(chunk({"role": "assistant", "content": "Let me check."})),
    # OpenAI indexes 1, 3, 5 (not positions); the id and name only on each call's first fragment.
    call_delta(1, id="call_w", type="function", function={"name": "get_weather", "arguments": ""}),
    call_delta(1, function={"arguments": '{"ci'}),
    call_delta(3, id="call_t", type="function", function={"name": "get_time", "arguments": '{"tz": "Eu'}),
    call_delta(1, function={"arguments": 'ty": "Par'}),
    call_delta(3, function={"arguments": 'rope/Paris"}'}),
    call_delta(1, function={"arguments": 'is"}'}),
    call_delta(5, id="call_n", type="function", function={"name": "get_news", "arguments": ""}),
    sse(chunk(finish="tool_calls")),
    sse(usage_chunk(20, 12)),
    DONE,
]
FINAL = [
    ("get_weather", {"city": "Paris"}),
    ("get_time", {"tz": "Europe/Paris"}),
    ("get_news", {}),
]


async def test_openai_interleaved_calls_stream_deltas_by_position() -> None:
    server = ScriptedServer([lambda _req: sse_response(OPENAI_EVENTS)])
    async with make_openai(server) as provider:
        streamed, unstreamed, resp = await three_ways(provider, ASK, tools=TOOLS)
    assert deltas(streamed) == [
        (0, "call_w", "get_weather", ""),
        (0, "", "", '{"ci'),
        (1, "call_t", "get_time", '{"tz": "Eu'),
        (0, "", "", 'ty": "Par'),
        (1, "", "", 'rope/Paris"}'),
        (0, "", "", 'is"}'),
        (2, "call_n", "get_news", ""),
        (2, "", "", "{}"),  # a call without arguments still spells JSON
    ]
    # Deltas as the fragments arrive; the complete calls when the choice finishes.
    assert kinds(streamed) == ["text", *["delta"] * 7, "call", "call", "delta", "call"]
    assert [(c.name, c.arguments) for c in resp.tool_calls] == FINAL
    assert [c.id for c in resp.tool_calls] == ["call_w", "call_t", "call_n"]
    assert resp.text == "Let me check." and resp.finish_reason == "tool_use"
    # chat()'s one request: each call whole, one delta with its arguments before the calls.
    assert deltas(unstreamed)[:3] == [
        (0, "call_w", "get_weather", '{"city": "Paris"}'),
        (1, "call_t", "get_time", '{"tz": "Europe/Paris"}'),
        (2, "call_n", "get_news", ""),
    ]


async def test_openai_arguments_before_the_name_and_a_late_id() -> None:
    # A compatible server that sends an argument fragment before the call's name, and its id late.
    events = [
        call_delta(0, function={"arguments": '{"city"'}),
        call_delta(0, type="function", function={"name": "get_weather", "arguments": ': "Oslo"'}),
        call_delta(0, id="call_late", function={"arguments": "}"}),
        sse(chunk(finish="tool_calls")),
        DONE,
    ]
    server = ScriptedServer([lambda _req: sse_response(events)])
    async with make_openai(server) as provider:
        streamed, _, resp = await three_ways(provider, ASK, tools=TOOLS)
    assert deltas(streamed) == [(0, "", "get_weather", '{"city": "Oslo"'), (0, "call_late", "", "}")]
    assert resp.tool_calls == [ToolCall(id="call_late", name="get_weather", arguments={"city": "Oslo"})]


# ----- Claude -------------------------------------------------------------------------------

CLAUDE_EVENTS = [
    message_start(input_tokens=30),
    *text_block(0, ["Let me ", "check."]),
    *tool_block(1, "toolu_w", "get_weather", ['{"ci', 'ty": "Pa', 'ris"}']),
    *tool_block(2, "toolu_t", "get_time", ["", '{"tz": "Europe/', 'Paris"}']),
    *tool_block(3, "toolu_n", "get_news", []),
    message_delta("tool_use", 40),
    message_stop(),
]


async def test_claude_blocks_stream_deltas_by_call_position() -> None:
    server = FakeAnthropic([lambda _req: claude_sse_response(CLAUDE_EVENTS)])
    async with make_claude(server) as provider:
        streamed, unstreamed, resp = await three_ways(provider, ASK, tools=TOOLS)
    # Content blocks 1..3 are calls 0..2; the text block before them takes no position.
    assert deltas(streamed) == [
        (0, "toolu_w", "get_weather", ""),
        (0, "", "", '{"ci'),
        (0, "", "", 'ty": "Pa'),
        (0, "", "", 'ris"}'),
        (1, "toolu_t", "get_time", ""),
        (1, "", "", '{"tz": "Europe/'),
        (1, "", "", 'Paris"}'),
        (2, "toolu_n", "get_news", ""),
        (2, "", "", "{}"),
    ]
    # Each call completes at its own content_block_stop, right after its deltas.
    assert kinds(streamed) == ["text", "text", *["delta"] * 4, "call", *["delta"] * 3, "call", "delta", "delta", "call"]
    assert [(c.name, c.arguments) for c in resp.tool_calls] == FINAL
    assert [c.id for c in resp.tool_calls] == ["toolu_w", "toolu_t", "toolu_n"]
    # A non-streamed message carries each block's input whole: one delta of its JSON each.
    assert [d for d in deltas(unstreamed) if d[2]] == [
        (0, "toolu_w", "get_weather", '{"city": "Paris"}'),
        (1, "toolu_t", "get_time", '{"tz": "Europe/Paris"}'),
        (2, "toolu_n", "get_news", ""),
    ]


class City(BaseModel):
    city: str


async def test_claude_structured_output_tool_sends_no_deltas() -> None:
    # The synthetic answer tool is the reply's text, not a call: no deltas, no position.
    events = [
        message_start(input_tokens=30),
        *tool_block(0, "toolu_answer", "City", ['{"city"', ': "Rome"}']),
        message_delta("tool_use", 12),
        message_stop(),
    ]
    server = FakeAnthropic([lambda _req: claude_sse_response(events)])
    async with make_claude(server) as provider, provider.chat_stream(ASK, response_format=City) as stream:
        chunks = [c async for c in stream]
    assert deltas(chunks) == [] and stream.response.tool_calls == []
    assert stream.response.parsed == City(city="Rome")


# ----- Ollama -------------------------------------------------------------------------------


@pytest.fixture
def ollama_server() -> Iterator[OllamaServer]:
    with OllamaServer() as running:
        yield running


async def test_ollama_whole_calls_one_delta_each(ollama_server: OllamaServer) -> None:
    ollama_server.script_chat(
        ChatReply(
            content=("Checking.",),
            tool_calls=[
                [{"function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}],
                [
                    {"function": {"name": "get_time", "arguments": {"tz": "Europe/Zurich"}}},
                    {"function": {"name": "get_news", "arguments": {}}},
                ],
            ],
        )
    )
    config = OllamaConfig(name="ollama", model="qwen3:8b", base_url=ollama_server.url, timeout_secs=20)
    provider = OllamaProvider(config)
    try:
        streamed, unstreamed, resp = await three_ways(provider, ASK, tools=TOOLS)
    finally:
        await provider.aclose()
    ids = [c.id for c in resp.tool_calls]
    # Whole calls: the delta carries the stable id the call gets, and its arguments as JSON text.
    assert deltas(streamed) == [
        (0, ids[0], "get_weather", '{"city": "Zürich"}'),
        (1, ids[1], "get_time", '{"tz": "Europe/Zurich"}'),
        (2, ids[2], "get_news", ""),
        (2, "", "", "{}"),
    ]
    assert kinds(streamed) == ["text", "delta", "call", "delta", "call", "delta", "delta", "call"]
    assert deltas(unstreamed) == deltas(streamed)
    assert [(c.name, c.arguments) for c in resp.tool_calls] == [
        ("get_weather", {"city": "Zürich"}),
        ("get_time", {"tz": "Europe/Zurich"}),
        ("get_news", {}),
    ]


# ----- the mock, and the checker itself -----------------------------------------------------


async def test_mock_streams_scripted_calls_as_deltas() -> None:
    call = ToolCall(id="c1", name="get_weather", arguments={"city": "Paris", "days": [1, 2]})
    mock = MockProvider(replies=[MockReply(tool_calls=[call])], chunk_size=5)
    async with mock.chat_stream(ASK) as stream:
        chunks = [c async for c in stream]
    found = deltas(chunks)
    assert found[0] == (0, "c1", "get_weather", "")
    assert len(found) > 2, "the arguments arrive in chunk_size pieces"
    assert all(len(d[3]) <= 5 for d in found)
    assert check_tool_deltas(chunks) == [call] == stream.response.tool_calls


def _call_chunk(name: str = "f", arguments: dict[str, Any] | None = None) -> ToolUseChunk:
    return ToolUseChunk(tool_call=ToolCall(id="x", name=name, arguments=arguments or {"a": 1}))


@pytest.mark.parametrize(
    ("chunks", "needle"),
    [
        ([_call_chunk()], "no ToolCallDeltaChunk"),
        ([ToolCallDeltaChunk(index=0, arguments='{"a": 1}'), _call_chunk()], "does not name"),
        ([ToolCallDeltaChunk(index=0, name="f", arguments='{"a": 2}'), _call_chunk()], "deltas give"),
        ([ToolCallDeltaChunk(index=0, name="f", arguments='{"a": '), _call_chunk()], "not JSON"),
        ([ToolCallDeltaChunk(index=0, name="f", id="y", arguments='{"a": 1}'), _call_chunk()], "ids"),
        ([ToolCallDeltaChunk(index=1, name="f", arguments='{"a": 1}'), _call_chunk()], "no ToolCallDeltaChunk"),
        (
            [ToolCallDeltaChunk(index=0, name="f", arguments='{"a": 1}'), _call_chunk(), ToolCallDeltaChunk(index=0)],
            "after",
        ),
    ],
)
def test_the_conformance_check_rejects_broken_streams(chunks: list[StreamChunk], needle: str) -> None:
    with pytest.raises(AssertionError, match=needle):
        check_tool_deltas(chunks)


def test_delta_chunks_round_trip_through_the_stream_chunk_union() -> None:
    from pydantic import TypeAdapter

    delta = ToolCallDeltaChunk(index=2, id="i", name="n", arguments='{"a"')
    adapter: TypeAdapter[StreamChunk] = TypeAdapter(StreamChunk)
    assert adapter.validate_json(adapter.dump_json(delta)) == delta
    assert json.loads(adapter.dump_json(delta))["type"] == "tool_call_delta"
