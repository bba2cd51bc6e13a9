"""Messages, parts, responses and chunks: builders and JSON round-trips."""

from __future__ import annotations

import json

import pytest
from pydantic import TypeAdapter, ValidationError

from zeph_providers.types import (
    Attempt,
    ChatResponse,
    ContentChunk,
    EndChunk,
    ImagePart,
    Message,
    Role,
    StreamChunk,
    TextPart,
    ThinkingChunk,
    ThinkingPart,
    ToolCall,
    ToolDefinition,
    ToolResultPart,
    ToolUseChunk,
    ToolUsePart,
    Usage,
    UsageChunk,
)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\xff\x00binary"


def test_builders() -> None:
    system = Message.system("Be brief.")
    assert system.role is Role.SYSTEM and system.text == "Be brief."
    user = Message.user("Hi")
    assert user.role == "user" and user.parts == (TextPart(text="Hi"),)
    empty = Message.user()
    assert empty.parts == ()
    call = ToolCall(id="t1", name="weather", arguments={"city": "Paris"})
    assistant = Message.assistant("Let me check.", tool_calls=[call], thinking="hmm")
    assert [type(p) for p in assistant.parts] == [ThinkingPart, TextPart, ToolUsePart]
    assert assistant.tool_calls == [call]
    result = Message.tool_result("t1", {"temp": 21})
    assert result.role is Role.TOOL
    assert result.tool_results == [ToolResultPart(tool_call_id="t1", content='{"temp": 21}')]
    assert Message.tool_result("t1", "plain", is_error=True).tool_results[0].is_error


def test_user_message_with_images() -> None:
    image = ImagePart(data=PNG, mime_type="image/png")
    message = Message.user("What is this?", images=[image])
    assert message.images == [image]
    assert message.text == "What is this?"
    assert ImagePart.model_validate({"data": image.base64}).data == PNG  # base64 text is decoded on the way in


@pytest.mark.parametrize(
    "message",
    [
        Message.system("sys"),
        Message.user("hello", images=[ImagePart(data=PNG, mime_type="image/jpeg")]),
        Message.assistant("ok", tool_calls=[ToolCall(id="1", name="f", arguments={"a": [1, 2], "b": None})]),
        Message.assistant(thinking="deep thought"),
        Message.tool_result("1", "42"),
        Message(role=Role.ASSISTANT, parts=(ThinkingPart(text="t", signature="sig=="), TextPart(text="x"))),
    ],
)
def test_message_json_round_trip(message: Message) -> None:
    text = message.model_dump_json()
    json.loads(text)  # valid JSON, bytes as base64
    assert Message.model_validate_json(text) == message
    assert Message.model_validate(message.model_dump()) == message


def test_image_bytes_are_base64_in_json() -> None:
    image = ImagePart(data=PNG)
    payload = json.loads(image.model_dump_json())
    assert payload == {"type": "image", "data": image.base64, "mime_type": "image/png"}
    assert ImagePart.model_validate_json(image.model_dump_json()).data == PNG


def test_messages_are_frozen_and_strict() -> None:
    message = Message.user("x")
    with pytest.raises(ValidationError):
        message.role = Role.SYSTEM
    with pytest.raises(ValidationError):
        Message.model_validate({"role": "user", "parts": [], "extra": 1})
    with pytest.raises(ValidationError):
        Message.model_validate({"role": "robot"})
    with pytest.raises(ValidationError):
        Message.model_validate({"role": "user", "parts": [{"type": "video", "url": "x"}]})


def test_chat_response_round_trip_and_to_message() -> None:
    response = ChatResponse(
        text="Sunny.",
        tool_calls=[ToolCall(id="c", name="weather", arguments={"city": "Oslo"})],
        thinking="consider",
        usage=Usage(input_tokens=10, output_tokens=3, cache_read_tokens=2),
        finish_reason="tool_use",
        model="m",
        provider="p",
        parsed={"not": "serialised"},
    )
    text = response.model_dump_json()
    assert "parsed" not in json.loads(text)
    again = ChatResponse.model_validate_json(text)
    assert again.model_dump() == response.model_dump()
    assert again.parsed is None
    message = response.to_message()
    assert message.role is Role.ASSISTANT
    assert message.text == "Sunny." and message.tool_calls == response.tool_calls
    assert any(isinstance(p, ThinkingPart) for p in message.parts)


def test_usage_total_and_sum() -> None:
    total = Usage(input_tokens=1, output_tokens=2) + Usage(input_tokens=3, output_tokens=4, cache_write_tokens=5)
    assert total == Usage(input_tokens=4, output_tokens=6, cache_write_tokens=5)
    assert total.total_tokens == 15  # every token: 4 uncached + 5 cache writes in, 6 out
    assert total.prompt_tokens == 9


def test_stream_chunks_round_trip_through_the_union() -> None:
    adapter: TypeAdapter[StreamChunk] = TypeAdapter(StreamChunk)
    chunks: list[StreamChunk] = [
        ContentChunk(text="a"),
        ThinkingChunk(text="t", signature="s"),
        ToolUseChunk(tool_call=ToolCall(id="1", name="f")),
        UsageChunk(usage=Usage(input_tokens=1)),
        EndChunk(finish_reason="length", model="m"),
    ]
    for chunk in chunks:
        assert adapter.validate_json(adapter.dump_json(chunk)) == chunk


def test_tool_definition_defaults() -> None:
    tool = ToolDefinition(name="now")
    assert tool.parameters == {"type": "object", "properties": {}}
    assert ToolDefinition.model_validate_json(tool.model_dump_json()) == tool


def test_attempts_round_trip_and_stay_out_of_equality() -> None:
    tries = [
        Attempt(provider="a", outcome="ProviderTimeoutError", error="no reply", duration=1.5),
        Attempt(provider="b", wait=0.2, time_to_first_chunk=0.1, duration=0.3),
    ]
    resp = ChatResponse(text="hi", provider="b", attempts=tries)
    back = ChatResponse.model_validate_json(resp.model_dump_json())
    assert back.attempts == tries
    assert tries[0].timed_out and not tries[0].ok and tries[1].ok and not tries[1].timed_out
    assert resp == ChatResponse(text="hi", provider="b")  # same reply, another path
    assert resp != ChatResponse(text="hi!", provider="b", attempts=tries)
    assert resp != "hi"


def test_one_vocabulary_aliases_and_top_level_exports() -> None:
    import zeph_providers as zp
    from zeph_providers import types

    assert types.ToolCallChunk is types.ToolUseChunk and types.ToolCallPart is types.ToolUsePart
    assert types.TextChunk is types.ContentChunk
    for name in ("FinishReason", "ResponseFormat", "BlockingChatStream", "MockProvider", "MockReply",
                 "RouterProvider", "ConfigProblem", "load_config", "ProviderClosedError", "RedactingFilter"):
        assert name in zp.__all__ and getattr(zp, name) is not None, name


def test_a_signed_thinking_block_with_empty_text_survives_to_message() -> None:
    """Claude may sign a thinking block whose text is empty; the next turn must send it back."""
    from zeph_providers.backends._claude_request import convert_messages
    from zeph_providers.types import ChatResponse, ThinkingPart, Usage

    reply = ChatResponse(text="4", thinking="", thinking_signature="sig-abc", usage=Usage(), finish_reason="stop")
    message = reply.to_message()
    assert ThinkingPart(text="", signature="sig-abc") in message.parts
    _, wire = convert_messages([Message.user("2+2?"), message])
    assert {"type": "thinking", "thinking": "", "signature": "sig-abc"} in wire[1]["content"]
