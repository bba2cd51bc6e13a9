"""The Anthropic translator on its own: request JSON -> our messages and options, our chunks -> the
API's events, checked with the official SDK's own stream accumulator and types."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message as SdkMessage
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from zeph_providers.errors import InvalidRequestError
from zeph_providers.gateway._anthropic_request import parse_request
from zeph_providers.gateway._anthropic_wire import MessageBuilder, StreamTranslator, error_body
from zeph_providers.types import (
    CachePointPart,
    ContentChunk,
    EndChunk,
    ImagePart,
    RedactedThinkingChunk,
    RedactedThinkingPart,
    Role,
    StreamChunk,
    TextPart,
    ThinkingChunk,
    ThinkingPart,
    ToolCall,
    ToolCallDeltaChunk,
    ToolResultPart,
    ToolUseChunk,
    ToolUsePart,
    Usage,
    UsageChunk,
)

_EVENT = TypeAdapter(RawMessageStreamEvent)


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **fields}


def _run(chunks: list[StreamChunk], **kw: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    translator = StreamTranslator(model="m", **kw)
    events = translator.start()
    for chunk in chunks:
        events += translator.feed(chunk)
    events += translator.end()
    builder = MessageBuilder()
    builder.add_all(events)
    return events, builder.message


def _sdk_fold(events: list[dict[str, Any]]) -> SdkMessage:
    snapshot = None
    buffers: dict[int, bytes] = {}
    for event in events:
        snapshot = accumulate_event(event=_EVENT.validate_python(event), current_snapshot=snapshot, json_bufs=buffers)
    assert snapshot is not None
    return snapshot


def test_request_maps_every_honoured_field() -> None:
    image = base64.b64encode(b"\x89PNG").decode()
    body = _body(
        system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "xyz"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "42"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
        temperature=0.5,
        top_p=0.9,
        top_k=5,
        stop_sequences=["END"],
        tools=[{"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        metadata={"user_id": "u"},
        stream=True,
    )
    parsed = parse_request(body)
    roles = [m.role for m in parsed.messages]
    assert roles == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.TOOL, Role.USER]
    assert parsed.messages[0].parts == (TextPart(text="be brief"), CachePointPart())
    assert parsed.messages[1].parts[1] == ImagePart(data=b"\x89PNG", mime_type="image/png")
    assert parsed.messages[2].parts == (
        ThinkingPart(text="hmm", signature="sig"),
        RedactedThinkingPart(data="xyz"),
        ToolUsePart(id="t1", name="f", arguments={"a": 1}),
    )
    assert parsed.messages[3].parts == (ToolResultPart(tool_call_id="t1", content="42", is_error=True),)
    assert parsed.messages[4].text == "and?"
    kw = parsed.kwargs
    assert (kw["max_tokens"], kw["temperature"], kw["top_p"], kw["top_k"]) == (64, 0.5, 0.9, 5)
    assert kw["stop"] == ["END"] and kw["tool_choice"] == "required" and kw["parallel_tool_calls"] is False
    assert [t.name for t in kw["tools"] or ()] == ["f"]
    assert parsed.stream is True


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "f"}, "f"),
        ({"type": "any"}, "required"),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: str) -> None:
    assert parse_request(_body(tool_choice=choice)).kwargs["tool_choice"] == expected


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"container": "c"}, "container"),
        ({"mcp_servers": []}, "mcp_servers"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x"}}]}
                ]
            },
            "messages[0].content[0].source",
        ),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "budget_tokens"),  # not below max_tokens 64
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}]}]},
            "assistant",
        ),
    ],
)
def test_refused_fields_are_named(fields: dict[str, Any], named: str) -> None:
    body = _body(**fields)
    if fields.get("max_tokens", 0) is None:
        del body["max_tokens"]
    with pytest.raises(
        InvalidRequestError, match=r"\b" + named.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")
    ):
        parse_request(body)


def test_count_body_needs_no_max_tokens() -> None:
    body = _body()
    del body["max_tokens"]
    assert parse_request(body, count_only=True).kwargs == {}


def test_error_body_types() -> None:
    assert error_body(429, "slow")["error"] == {"type": "rate_limit_error", "message": "slow"}
    assert error_body(404, "x")["error"]["type"] == "not_found_error"
    assert error_body(502, "x")["error"]["type"] == "api_error"
    assert error_body(503, "x")["error"]["type"] == "overloaded_error"


def test_stream_events_fold_like_the_sdk() -> None:
    chunks: list[StreamChunk] = [
        ThinkingChunk(text="let me ", block=0),
        ThinkingChunk(text="think", block=0),
        ThinkingChunk(text="", signature="SIG", block=0),
        RedactedThinkingChunk(data="opaque", block=1),
        ContentChunk(text="Hel"),
        ContentChunk(text="lo"),
        ToolCallDeltaChunk(index=0, id="c1", name="f", arguments='{"a"'),
        ToolCallDeltaChunk(index=0, arguments=": 1}"),
        ToolCallDeltaChunk(index=1, id="c2", name="g", arguments="{}"),
        ToolUseChunk(tool_call=ToolCall(id="c1", name="f", arguments={"a": 1})),
        ToolUseChunk(tool_call=ToolCall(id="c2", name="g", arguments={})),
        UsageChunk(usage=Usage(input_tokens=7, output_tokens=5, cache_read_tokens=2, cache_write_tokens=3)),
        EndChunk(finish_reason="tool_use"),
    ]
    events, message = _run(chunks)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    # one block open at a time: every start is followed by its own stop before the next start
    open_index = None
    for event in events:
        if event["type"] == "content_block_start":
            assert open_index is None
            open_index = event["index"]
        elif event["type"] == "content_block_stop":
            assert event["index"] == open_index
            open_index = None
        elif event["type"] == "content_block_delta":
            assert event["index"] == open_index
    sdk = _sdk_fold(events)
    assert sdk.model_dump(exclude_none=True) == SdkMessage.model_validate(message).model_dump(exclude_none=True)
    assert [b["type"] for b in message["content"]] == ["thinking", "redacted_thinking", "text", "tool_use", "tool_use"]
    assert message["content"][0] == {"type": "thinking", "thinking": "let me think", "signature": "SIG"}
    assert message["content"][3]["input"] == {"a": 1} and message["content"][4]["input"] == {}
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 7,
        "output_tokens": 5,
        "cache_read_input_tokens": 2,
        "cache_creation_input_tokens": 3,
    }


def test_tool_call_without_deltas_or_id_arrives_whole() -> None:
    chunks: list[StreamChunk] = [
        ToolCallDeltaChunk(index=0, name="f", arguments='{"x": '),  # no id yet: held
        ToolCallDeltaChunk(index=0, arguments='"y"}'),
        ToolUseChunk(tool_call=ToolCall(id="gen1", name="f", arguments={"x": "y"})),
        ToolUseChunk(tool_call=ToolCall(id="c2", name="g", arguments={"k": [1]})),  # never streamed
    ]
    events, message = _run(chunks)
    assert message["content"] == [
        {"type": "tool_use", "id": "gen1", "name": "f", "input": {"x": "y"}},
        {"type": "tool_use", "id": "c2", "name": "g", "input": {"k": [1]}},
    ]
    assert _sdk_fold(events).content[1].input == {"k": [1]}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("end", "reason"),
    [
        (EndChunk(finish_reason="stop"), "end_turn"),
        (EndChunk(finish_reason="stop", stop_sequence="END"), "stop_sequence"),
        (EndChunk(finish_reason="length"), "max_tokens"),
        (EndChunk(finish_reason="refusal"), "refusal"),
        (EndChunk(finish_reason="content_filter"), "refusal"),
        (EndChunk(finish_reason="pause_turn"), "pause_turn"),
    ],
)
def test_stop_reasons(end: EndChunk, reason: str) -> None:
    _, message = _run([ContentChunk(text="x"), end])
    assert message["stop_reason"] == reason
    assert message["stop_sequence"] == end.stop_sequence


def test_thinking_dropped_when_disabled_and_unsigned_round_trip() -> None:
    _, message = _run([ThinkingChunk(text="t"), ContentChunk(text="a")], keep_thinking=False)
    assert [b["type"] for b in message["content"]] == ["text"]
    _, message = _run([ThinkingChunk(text="t"), ContentChunk(text="a")])
    assert message["content"][0] == {"type": "thinking", "thinking": "t", "signature": ""}
    again = parse_request(
        _body(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": message["content"]}])
    )
    assert again.messages[1].parts[0] == ThinkingPart(text="t", signature=None)
