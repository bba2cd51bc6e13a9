"""The Messages API reply -> our chunks: the stream translator and a whole `message` as events.

Split from `claude.py` (the provider: request, transport, errors). `StreamTranslator` folds raw
stream events (SDK models or plain dicts, `_convert.get_field` reads either) into neutral chunks one event at a
time; `message_events` turns a non-streamed `message` body into the events that would have carried
it, so `chat()` goes through the same translator as `chat_stream()`. The decisions (synthetic
structured-output call, thinking blocks, stop reasons, usage TTL breakdown) are recorded in
`claude.py`'s docstring.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from zeph_providers.backends._claude_request import Structured
from zeph_providers.backends._convert import get_field as get
from zeph_providers.backends._convert import map_finish_reason
from zeph_providers.backends._tools import ToolCallAccumulator
from zeph_providers.backends._wire import count
from zeph_providers.errors import BadResponseError
from zeph_providers.types import (
    ContentChunk,
    EndChunk,
    FinishReason,
    RedactedThinkingChunk,
    StreamChunk,
    ThinkingChunk,
    ToolUseChunk,
    Usage,
    UsageChunk,
)

__all__ = ["ErrorBody", "StreamTranslator", "map_stop_reason", "message_events"]


def map_stop_reason(reason: str | None) -> FinishReason:
    """Anthropic's `stop_reason` -> the neutral finish reason (the shared table)."""
    return map_finish_reason(reason)


@dataclass
class _Block:
    kind: str
    synthetic: bool = False
    streamed: bool = False
    """Argument text arrived as `input_json_delta`s (it was already shown as the reply text)."""


class StreamTranslator:
    """Folds Anthropic's raw stream events into neutral chunks, one event at a time."""

    def __init__(self, *, provider: str, model: str, structured: Structured | None) -> None:
        self._provider = provider
        self._model = model
        self._structured = structured
        self._blocks: dict[int, _Block] = {}
        self._calls = ToolCallAccumulator(provider=provider)
        self._usage: dict[str, int] = {}
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None
        self._user_tool_calls = 0
        self._answered = False
        self.stopped = False

    def feed(self, event: Any) -> list[StreamChunk]:
        kind = get(event, "type")
        if kind == "message_start":
            message = get(event, "message", {})
            self._model = str(get(message, "model", "") or self._model)
            self._take_usage(get(message, "usage"))
            return []
        if kind == "content_block_start":
            return self._block_start(get(event, "index", 0), get(event, "content_block", {}))
        if kind == "content_block_delta":
            return self._block_delta(get(event, "index", 0), get(event, "delta", {}))
        if kind == "content_block_stop":
            return self._block_stop(get(event, "index", 0))
        if kind == "message_delta":
            delta = get(event, "delta", {})
            reason = get(delta, "stop_reason")
            if reason is not None:
                self._stop_reason = str(reason)
            sequence = get(delta, "stop_sequence")
            if sequence is not None:
                self._stop_sequence = str(sequence)
            self._take_usage(get(event, "usage"))
            return []
        if kind == "message_stop":
            self.stopped = True
            end = EndChunk(finish_reason=self._finish(), model=self._model, stop_sequence=self._stop_sequence)
            return [UsageChunk(usage=self._build_usage()), end]
        # "ping" and event types newer than this code are ignored (the API may add some).
        return []

    def _take_usage(self, usage: Any) -> None:
        if usage is None:
            return
        for source, target in (
            ("input_tokens", "input"),
            ("output_tokens", "output"),
            ("cache_read_input_tokens", "cache_read"),
            ("cache_creation_input_tokens", "cache_write"),
        ):
            value = get(usage, source)
            if value is not None:
                self._usage[target] = count(value, source, provider=self._provider)
        creation = get(usage, "cache_creation")
        for source, target in (("ephemeral_5m_input_tokens", "write_5m"), ("ephemeral_1h_input_tokens", "write_1h")):
            value = get(creation, source) if creation is not None else None
            if value is not None:
                self._usage[target] = count(value, source, provider=self._provider)

    def _build_usage(self) -> Usage:
        u = self._usage
        return Usage(
            input_tokens=u.get("input", 0),
            output_tokens=u.get("output", 0),
            cache_read_tokens=u.get("cache_read", 0),
            cache_write_tokens=u.get("cache_write", 0),
            cache_write_5m_tokens=u.get("write_5m", 0),
            cache_write_1h_tokens=u.get("write_1h", 0),
        )

    def _finish(self) -> FinishReason:
        finish = map_stop_reason(self._stop_reason)
        if finish == "tool_use" and self._user_tool_calls == 0 and self._answered:
            return "stop"  # only the synthetic structured-output tool was called
        return finish

    def _block_start(self, index: int, block: Any) -> list[StreamChunk]:
        kind = str(get(block, "type", ""))
        if kind == "text":
            self._blocks[index] = _Block("text")
            text = str(get(block, "text", ""))
            return [ContentChunk(text=text)] if text else []
        if kind == "thinking":
            self._blocks[index] = _Block("thinking")
            text = str(get(block, "thinking", ""))
            signature = get(block, "signature") or None
            return [ThinkingChunk(text=text, signature=signature, block=index)] if text or signature else []
        if kind == "redacted_thinking":
            self._blocks[index] = _Block("redacted_thinking")
            return [RedactedThinkingChunk(data=str(get(block, "data", "")), block=index)]
        if kind == "tool_use":
            name = str(get(block, "name", ""))
            initial = get(block, "input", {})
            if not isinstance(initial, dict):
                raise BadResponseError(f"tool_use {name!r} input is not a JSON object", provider=self._provider)
            synthetic = self._structured is not None and name == self._structured.name
            self._blocks[index] = _Block("tool_use", synthetic=synthetic)
            # A synthetic (structured-output) call is the reply's text: no tool deltas for it.
            return list(self._calls.add(index, get(block, "id") or None, name, initial, silent=synthetic))
        # server tool blocks, ...: nothing neutral to say about them.
        self._blocks[index] = _Block(kind or "unknown")
        return []

    def _block_delta(self, index: int, delta: Any) -> list[StreamChunk]:
        block = self._blocks.get(index)
        if block is None:
            raise BadResponseError(f"content_block_delta for unknown block {index}", provider=self._provider)
        kind = get(delta, "type")
        if kind == "text_delta":
            text = str(get(delta, "text", ""))
            return [ContentChunk(text=text)] if text else []
        if kind == "thinking_delta":
            text = str(get(delta, "thinking", ""))
            return [ThinkingChunk(text=text, block=index)] if text else []
        if kind == "signature_delta":
            return [ThinkingChunk(text="", signature=str(get(delta, "signature", "")), block=index)]
        if kind == "input_json_delta":
            fragment = str(get(delta, "partial_json", ""))
            deltas = self._calls.add(index, None, None, fragment)
            block.streamed = block.streamed or bool(fragment.strip())
            if block.synthetic and self._structured is not None and not self._structured.wrapped and fragment:
                return [ContentChunk(text=fragment)]  # structured output streams as the reply text
            return list(deltas)
        return []  # citations_delta and future delta types

    def _block_stop(self, index: int) -> list[StreamChunk]:
        block = self._blocks.pop(index, None)
        if block is None or block.kind != "tool_use":
            return []
        if not block.synthetic:
            chunks: list[StreamChunk] = list(self._calls.finish(index))  # closing delta (when due) + the call
            self._user_tool_calls += sum(isinstance(chunk, ToolUseChunk) for chunk in chunks)
            return chunks
        calls = self._calls.complete(index)
        if not calls or self._structured is None:
            return []
        call = calls[0]
        self._answered = True
        if self._structured.wrapped:
            return [ContentChunk(text=json.dumps(call.arguments.get("value")))]
        if not block.streamed:
            return [ContentChunk(text=json.dumps(call.arguments))]
        return []


def message_events(message: Any) -> list[dict[str, Any]]:
    """A non-streamed `message` object -> the stream events that would have carried it.

    Text and thinking blocks arrive whole in `content_block_start`; a tool_use block carries its
    complete `input` there (no `input_json_delta`), which the translator takes as the arguments.
    """
    if not isinstance(message, dict):
        raise TypeError("the response body is not a JSON object")
    if message.get("type") == "error":
        raise ErrorBody(message)
    content = message.get("content")
    if message.get("type") != "message" or not isinstance(content, list):
        raise TypeError("the response is not a `message` object with a `content` list")
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"model": message.get("model"), "usage": message.get("usage")}}
    ]
    for index, block in enumerate(content):
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        events.append({"type": "content_block_stop", "index": index})
    delta = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    events.append({"type": "message_delta", "delta": delta})
    events.append({"type": "message_stop"})
    return events


class ErrorBody(Exception):
    """A 200 response whose body is an `{"type": "error", ...}` object."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        super().__init__(str(body))
