"""The library's replies -> the Anthropic Messages API: stream chunks -> SSE events, the folded
message, the error shape (pure functions; the request side is `_anthropic_request`, the routes
`_anthropic`).

Decisions:

- Reply -> events: `StreamTranslator` turns our stream chunks into the API's SSE events
  (message_start, content_block_start / delta / stop, message_delta, message_stop), in the order
  the official SDK's accumulator expects: one block open at a time (text and thinking blocks close
  when anything else starts; a tool block closes when its call completes or the next call starts).
  The non-streamed reply is the fold of the same events (`MessageBuilder`), so a streamed reply's
  final message equals the non-streamed one by construction.
- `message_start` carries zero usage (the counts arrive at the end of our streams); the final
  `message_delta` carries every count (input, output, cache read, cache creation), which the SDK
  takes over the start's values.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from zeph_providers.types import (
    ContentChunk,
    EndChunk,
    FinishReason,
    RedactedThinkingChunk,
    StreamChunk,
    ThinkingChunk,
    ToolCallDeltaChunk,
    ToolUseChunk,
    Usage,
    UsageChunk,
)

__all__ = [
    "MessageBuilder",
    "StreamTranslator",
    "error_body",
    "error_type",
    "new_message_id",
    "sse",
    "stop_reason",
    "usage_json",
]

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """The API's error `type` for an HTTP status (other 4xx: invalid request; other 5xx: api_error)."""
    if status in _STATUS_TYPES:
        return _STATUS_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event, named by its `type` as the API names them."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


# ----- reply ---------------------------------------------------------------------------------

_STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_use": "tool_use",
    "content_filter": "refusal",
    "refusal": "refusal",
    "pause_turn": "pause_turn",
}


def stop_reason(finish: FinishReason, stop_sequence: str | None) -> str:
    """Our finish reason as the API's `stop_reason` ("error" has none: the route reports an error)."""
    if finish == "stop" and stop_sequence:
        return "stop_sequence"
    return _STOP_REASONS.get(finish, "end_turn")


def usage_json(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


@dataclass
class _ToolBlock:
    index: int | None = None
    """The content block index, once started (None: held until the call's id is known)."""
    held: list[str] = field(default_factory=list)
    name: str = ""
    closed: bool = False


class StreamTranslator:
    """Our stream chunks -> the API's events. `feed()` each chunk, then `finish()`.

    `keep_thinking` False drops thinking blocks (a request with `thinking: disabled` on a provider
    that thinks by configuration).
    """

    def __init__(self, *, model: str, message_id: str | None = None, keep_thinking: bool = True) -> None:
        self.model = model
        self.message_id = message_id or new_message_id()
        self._keep_thinking = keep_thinking
        self._next_index = 0
        self._open: tuple[str, Any] | None = None  # ("text" | "thinking", key) / ("tool", call position)
        self._open_index = -1
        self._tools: dict[int, _ToolBlock] = {}
        self._calls_done = 0
        self.usage = Usage()
        self.finish: FinishReason = "stop"
        self.stop_sequence: str | None = None

    def start(self) -> list[dict[str, Any]]:
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [{"type": "message_start", "message": message}]

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        kind, key = self._open
        self._open = None
        if kind == "tool":
            self._tools[key].closed = True
        return [{"type": "content_block_stop", "index": self._open_index}]

    def _begin(self, kind: str, key: Any, block: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close()
        self._open = (kind, key)
        self._open_index = self._next_index
        self._next_index += 1
        events.append({"type": "content_block_start", "index": self._open_index, "content_block": block})
        return events

    def _delta(self, index: int, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": index, "delta": delta}

    def feed(self, chunk: StreamChunk) -> list[dict[str, Any]]:
        if isinstance(chunk, ContentChunk):
            if not chunk.text:
                return []
            events = [] if self._open == ("text", None) else self._begin("text", None, {"type": "text", "text": ""})
            events.append(self._delta(self._open_index, {"type": "text_delta", "text": chunk.text}))
            return events
        if isinstance(chunk, ThinkingChunk):
            return self._thinking(chunk) if self._keep_thinking else []
        if isinstance(chunk, RedactedThinkingChunk):
            if not self._keep_thinking:
                return []
            events = self._begin("redacted", chunk.block, {"type": "redacted_thinking", "data": chunk.data})
            return events + self._close()
        if isinstance(chunk, ToolCallDeltaChunk):
            return self._tool_delta(chunk)
        if isinstance(chunk, ToolUseChunk):
            return self._tool_done(chunk)
        if isinstance(chunk, UsageChunk):
            self.usage = chunk.usage
        elif isinstance(chunk, EndChunk):
            self.finish = chunk.finish_reason
            self.stop_sequence = chunk.stop_sequence
        return []  # logprobs: the Messages API has none (and we never ask for them)

    def _thinking(self, chunk: ThinkingChunk) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self._open != ("thinking", chunk.block):
            events = self._begin("thinking", chunk.block, {"type": "thinking", "thinking": "", "signature": ""})
        if chunk.text:
            events.append(self._delta(self._open_index, {"type": "thinking_delta", "thinking": chunk.text}))
        if chunk.signature:
            events.append(self._delta(self._open_index, {"type": "signature_delta", "signature": chunk.signature}))
        return events

    def _tool_delta(self, chunk: ToolCallDeltaChunk) -> list[dict[str, Any]]:
        tool = self._tools.setdefault(chunk.index, _ToolBlock())
        events: list[dict[str, Any]] = []
        if tool.index is None:
            tool.name += chunk.name
            if not chunk.id:  # the API's block start needs the id: hold the text until it is known
                tool.held.append(chunk.arguments)
                return []
            block = {"type": "tool_use", "id": chunk.id, "name": tool.name, "input": {}}
            events = self._begin("tool", chunk.index, block)
            tool.index = self._open_index
            tool.held.append(chunk.arguments)
            text, tool.held = "".join(tool.held), []
        else:
            text = chunk.arguments
        if text:
            events.append(self._delta(tool.index, {"type": "input_json_delta", "partial_json": text}))
        return events

    def _tool_done(self, chunk: ToolUseChunk) -> list[dict[str, Any]]:
        position = self._calls_done  # the k-th ToolUseChunk completes the call whose deltas have index k
        self._calls_done += 1
        call = chunk.tool_call
        tool = self._tools.setdefault(position, _ToolBlock())
        if tool.index is None:  # never streamed (or held for want of an id): the whole call now
            text = "".join(tool.held) if tool.held and "".join(tool.held).strip() else json.dumps(call.arguments)
            events = self._begin("tool", position, {"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
            tool.index = self._open_index
            events.append(self._delta(tool.index, {"type": "input_json_delta", "partial_json": text}))
            return events + self._close()
        if self._open == ("tool", position):
            return self._close()
        return []

    def end(self) -> list[dict[str, Any]]:
        events = self._close()
        usage = usage_json(self.usage)
        events.append(
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": stop_reason(self.finish, self.stop_sequence),
                    "stop_sequence": self.stop_sequence,
                },
                "usage": usage,
            }
        )
        events.append({"type": "message_stop"})
        return events


class MessageBuilder:
    """Folds the API's events into the message object (the non-streamed reply)."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self._json: dict[int, list[str]] = {}

    def add_all(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            self.add(event)

    def add(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "message_start":
            self.message = json.loads(json.dumps(event["message"]))
        elif kind == "content_block_start":
            self.message["content"].append(dict(event["content_block"]))
        elif kind == "content_block_delta":
            block = self.message["content"][event["index"]]
            delta = event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "input_json_delta":
                self._json.setdefault(event["index"], []).append(delta["partial_json"])
        elif kind == "content_block_stop":
            index = event["index"]
            if index in self._json:
                text = "".join(self._json.pop(index))
                self.message["content"][index]["input"] = json.loads(text) if text.strip() else {}
        elif kind == "message_delta":
            self.message.update(event["delta"])
            self.message["usage"].update(event["usage"])
