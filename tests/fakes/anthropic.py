"""Anthropic Messages API wire shapes: the streaming events (message_start, content_block_start, ping,
content_block_delta, content_block_stop, message_delta, message_stop, error) and unstreamed bodies."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

SERVED_MODEL = "claude-sonnet-4-6-20260217"
MESSAGE_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event exactly as the Messages API frames it."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def message_start(
    *,
    input_tokens: int,
    cache_read: int | None = None,
    cache_write: int | None = None,
    cache_creation: dict[str, int] | None = None,
    model: str = SERVED_MODEL,
    message_id: str = MESSAGE_ID,
) -> bytes:
    """`cache_creation`: the TTL breakdown (`ephemeral_5m_input_tokens`, `ephemeral_1h_input_tokens`)."""
    usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": 1}
    if cache_read is not None:
        usage["cache_read_input_tokens"] = cache_read
    if cache_write is not None:
        usage["cache_creation_input_tokens"] = cache_write
    if cache_creation is not None:
        usage["cache_creation"] = dict(cache_creation)
    return sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": model,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage,
            },
        },
    )


def ping() -> bytes:
    return sse("ping", {"type": "ping"})


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def block_delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def text_delta(index: int, text: str) -> bytes:
    return block_delta(index, {"type": "text_delta", "text": text})


def block_stop(index: int) -> bytes:
    return sse("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(stop_reason: str, output_tokens: int, *, stop_sequence: str | None = None) -> bytes:
    return sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": {"output_tokens": output_tokens},
        },
    )


def message_stop() -> bytes:
    return sse("message_stop", {"type": "message_stop"})


def error_event(error_type: str, message: str) -> bytes:
    return sse("error", {"type": "error", "error": {"type": error_type, "message": message}})


def error_body(error_type: str, message: str) -> dict[str, Any]:
    """The `{"type": "error", "error": {...}}` body of an API error."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def text_block(index: int, chunks: Iterable[str]) -> list[bytes]:
    events = [block_start(index, {"type": "text", "text": ""})]
    events.extend(text_delta(index, c) for c in chunks)
    events.append(block_stop(index))
    return events


def thinking_block(index: int, chunks: Iterable[str], signature: str = "EqQBCgIYAhIM1gbcDa9GJwZA2b3h") -> list[bytes]:
    events = [block_start(index, {"type": "thinking", "thinking": ""})]
    events.extend(block_delta(index, {"type": "thinking_delta", "thinking": c}) for c in chunks)
    events.append(block_delta(index, {"type": "signature_delta", "signature": signature}))
    events.append(block_stop(index))
    return events


def redacted_thinking_block(index: int, data: str) -> list[bytes]:
    """A `redacted_thinking` block: whole in content_block_start (no deltas), then its stop."""
    return [block_start(index, {"type": "redacted_thinking", "data": data}), block_stop(index)]


def tool_block(index: int, call_id: str, name: str, fragments: Iterable[str]) -> list[bytes]:
    events = [block_start(index, {"type": "tool_use", "id": call_id, "name": name, "input": {}})]
    events.extend(block_delta(index, {"type": "input_json_delta", "partial_json": f}) for f in fragments)
    events.append(block_stop(index))
    return events


def text_stream_head(*, input_tokens: int, model: str = SERVED_MODEL, message_id: str = MESSAGE_ID) -> list[bytes]:
    """message_start, the opening of text block 0 and a ping: what precedes the first text delta."""
    return [
        message_start(input_tokens=input_tokens, model=model, message_id=message_id),
        block_start(0, {"type": "text", "text": ""}),
        ping(),
    ]


def text_stream_tail(*, output_tokens: int, stop_reason: str = "end_turn") -> list[bytes]:
    """Closing text block 0, message_delta and message_stop: what follows the last text delta."""
    return [block_stop(0), message_delta(stop_reason, output_tokens), message_stop()]


def message(
    text: str,
    *,
    input_tokens: int,
    output_tokens: int,
    model: str = SERVED_MODEL,
    message_id: str = MESSAGE_ID,
    stop_reason: str = "end_turn",
) -> dict[str, Any]:
    """An unstreamed `message` body with one text block."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
