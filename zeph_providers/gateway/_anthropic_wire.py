"""Anthropic Messages API <-> the library's types: pure functions, no HTTP (the routes are `_anthropic`).

Decisions:

- Request -> `(messages, ChatKwargs)`. Every top-level field is either honoured, ignored because it
  cannot change the reply (`metadata`, `service_tier`, `stream` is the route's), or refused with an
  `InvalidRequestError` naming it (`container`, `mcp_servers`, unknown fields, server tools, image
  or document URLs, images inside a tool result): nothing that would change the reply is dropped.
- `max_tokens` is required, as in the API. `tool_choice` maps auto/any/tool/none to
  "auto"/"required"/<name>/"none"; `disable_parallel_tool_use` to `parallel_tool_calls=False` (a
  provider that cannot honour it refuses with a typed error, i.e. a 400).
- A user turn's `tool_result` blocks become `Role.TOOL` messages (in order, the user's other
  blocks around them kept in their place); `cache_control` on a block becomes a `CachePointPart`
  after it (a no-op on backends that cache by themselves, see `CachePointPart`). A `thinking` block
  in history becomes a `ThinkingPart` (an empty signature is None: blocks this gateway produced
  for an unsigned thinking run go back as unsigned thinking).
- `thinking`: the library configures thinking per provider, not per call (`thinking_budget_tokens`
  etc. in the provider's config). So: a Claude provider gets the request's `thinking` object as is
  (`extra`, which the Claude backend sends in the request body, overriding its config); any other
  provider must report the `thinking` capability for "enabled"/"adaptive" (400 otherwise) and
  thinks as configured, `budget_tokens` bounded by `max_tokens`, which the API requires to be
  larger; "disabled" on such a provider leaves every thinking block out of the reply.
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

import base64
import binascii
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from zeph_providers.errors import InvalidRequestError
from zeph_providers.options import ChatKwargs
from zeph_providers.types import (
    CachePointPart,
    ContentChunk,
    DocumentPart,
    EndChunk,
    FinishReason,
    ImagePart,
    Message,
    Part,
    RedactedThinkingChunk,
    RedactedThinkingPart,
    Role,
    StreamChunk,
    TextPart,
    ThinkingChunk,
    ThinkingPart,
    ToolCallDeltaChunk,
    ToolDefinition,
    ToolResultPart,
    ToolUseChunk,
    ToolUsePart,
    Usage,
    UsageChunk,
)

__all__ = [
    "AnthropicRequest",
    "MessageBuilder",
    "StreamTranslator",
    "error_body",
    "error_type",
    "parse_request",
    "sse",
    "stop_reason",
]

_HONOURED = frozenset(
    {"model", "messages", "max_tokens", "system", "stop_sequences", "stream", "temperature", "top_p", "top_k"}
    | {"tools", "tool_choice", "thinking"}
)
_IGNORED = frozenset({"metadata", "service_tier"})
"""Fields that cannot change the reply's content: accepted and not acted on."""
_COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking"})

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


def _bad(message: str) -> InvalidRequestError:
    return InvalidRequestError(message)


# ----- request -------------------------------------------------------------------------------


@dataclass
class AnthropicRequest:
    model: str
    messages: list[Message]
    kwargs: ChatKwargs
    stream: bool = False
    thinking: dict[str, Any] | None = None
    """The request's `thinking` object, validated (None when absent)."""


def parse_request(body: dict[str, Any], *, count_only: bool = False) -> AnthropicRequest:
    """Validate a Messages API request body (`count_only`: a count_tokens body, no `max_tokens`)."""
    allowed = _COUNT_FIELDS if count_only else _HONOURED | _IGNORED
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _bad(f"unsupported field(s): {', '.join(unknown)} (this gateway cannot honour them)")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model: a string naming a provider is required")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _bad("messages: a non-empty list is required")
    messages = _system(body.get("system"))
    for i, raw in enumerate(raw_messages):
        messages.extend(_message(raw, f"messages[{i}]"))
    kwargs = ChatKwargs()
    if not count_only:
        max_tokens = body.get("max_tokens")
        if not _is_int(max_tokens) or max_tokens < 1:
            raise _bad("max_tokens: a positive integer is required")
        kwargs["max_tokens"] = max_tokens
        for name in ("temperature", "top_p"):
            if body.get(name) is not None:
                value = body[name]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise _bad(f"{name}: a number is required")
                kwargs[name] = float(value)  # type: ignore[literal-required,unused-ignore]
        if body.get("top_k") is not None:
            if not _is_int(body["top_k"]):
                raise _bad("top_k: an integer is required")
            kwargs["top_k"] = body["top_k"]
        stops = body.get("stop_sequences")
        if stops is not None:
            if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
                raise _bad("stop_sequences: a list of strings is required")
            if stops:
                kwargs["stop"] = list(stops)
    tools = body.get("tools")
    if tools is not None:
        kwargs["tools"] = _tools(tools)
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], kwargs)
    thinking = _thinking(body.get("thinking"), kwargs.get("max_tokens"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream: a boolean is required")
    return AnthropicRequest(model=model, messages=messages, kwargs=kwargs, stream=stream, thinking=thinking)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _system(system: Any) -> list[Message]:
    if system is None or system == "" or system == []:
        return []
    if isinstance(system, str):
        return [Message.system(system)]
    if not isinstance(system, list):
        raise _bad("system: a string or a list of text blocks is required")
    parts: list[Part] = []
    for i, block in enumerate(system):
        where = f"system[{i}]"
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _bad(f"{where}: only text blocks are allowed in system")
        parts.append(TextPart(text=block["text"]))
        parts.extend(_cache_point(block, where))
    return [Message(role=Role.SYSTEM, parts=tuple(parts))]


def _cache_point(block: dict[str, Any], where: str) -> list[Part]:
    control = block.get("cache_control")
    if control is None:
        return []
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise _bad(f"{where}.cache_control: only {{'type': 'ephemeral'}} is supported")
    ttl = control.get("ttl")
    if ttl not in (None, "5m", "1h"):
        raise _bad(f"{where}.cache_control.ttl: '5m' or '1h'")
    return [CachePointPart(ttl=ttl)]


def _message(raw: Any, where: str) -> list[Message]:
    if not isinstance(raw, dict):
        raise _bad(f"{where}: an object with role and content is required")
    role = raw.get("role")
    if role not in ("user", "assistant"):
        raise _bad(f"{where}.role: 'user' or 'assistant'")
    content = raw.get("content")
    if isinstance(content, str):
        return [Message(role=Role(role), parts=(TextPart(text=content),) if content else ())]
    if not isinstance(content, list):
        raise _bad(f"{where}.content: a string or a list of content blocks is required")
    out: list[Message] = []
    parts: list[Part] = []
    for i, block in enumerate(content):
        bwhere = f"{where}.content[{i}]"
        if not isinstance(block, dict):
            raise _bad(f"{bwhere}: a content block object is required")
        if block.get("type") == "tool_result":
            if role != "user":
                raise _bad(f"{bwhere}: tool_result blocks belong in user messages")
            if parts:
                out.append(Message(role=Role.USER, parts=tuple(parts)))
                parts = []
            out.append(Message(role=Role.TOOL, parts=(_tool_result(block, bwhere),)))
            continue
        parts.append(_block(block, role, bwhere))
        parts.extend(_cache_point(block, bwhere))
    if parts or not out:
        out.append(Message(role=Role(role), parts=tuple(parts)))
    return out


def _str_field(block: dict[str, Any], name: str, where: str) -> str:
    value = block.get(name)
    if not isinstance(value, str):
        raise _bad(f"{where}.{name}: a string is required")
    return value


def _block(block: dict[str, Any], role: str, where: str) -> Part:
    kind = block.get("type")
    if kind == "text":
        return TextPart(text=_str_field(block, "text", where))
    if kind == "image":
        source = _base64_source(block, where)
        return ImagePart(data=_decode(source["data"], f"{where}.source.data"), mime_type=source["media_type"])
    if kind == "document":
        raw_source = block.get("source")
        title = block.get("title")
        if isinstance(raw_source, dict) and raw_source.get("type") == "text":
            return DocumentPart(text=_str_field(raw_source, "data", f"{where}.source"), title=title)
        source = _base64_source(block, where)
        data = _decode(source["data"], f"{where}.source.data")
        return DocumentPart(data=data, mime_type=source["media_type"], title=title)
    if kind in ("tool_use", "thinking", "redacted_thinking") and role != "assistant":
        raise _bad(f"{where}: {kind} blocks belong in assistant messages")
    if kind == "tool_use":
        arguments = block.get("input", {})
        if not isinstance(arguments, dict):
            raise _bad(f"{where}.input: an object is required")
        return ToolUsePart(
            id=_str_field(block, "id", where), name=_str_field(block, "name", where), arguments=arguments
        )
    if kind == "thinking":
        signature = block.get("signature") or None
        return ThinkingPart(text=_str_field(block, "thinking", where), signature=signature)
    if kind == "redacted_thinking":
        return RedactedThinkingPart(data=_str_field(block, "data", where))
    raise _bad(f"{where}.type: {kind!r} blocks are not supported by this gateway")


def _base64_source(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64":
        kind = source.get("type") if isinstance(source, dict) else None
        raise _bad(f"{where}.source: only base64 sources are supported (not {kind!r}); send the bytes inline")
    if not isinstance(source.get("media_type"), str) or not isinstance(source.get("data"), str):
        raise _bad(f"{where}.source: media_type and data (strings) are required")
    return source


def _decode(data: str, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{where}: not valid base64") from None


def _tool_result(block: dict[str, Any], where: str) -> ToolResultPart:
    content = block.get("content", "")
    if isinstance(content, list):
        texts = []
        for i, item in enumerate(content):
            if not isinstance(item, dict) or item.get("type") != "text" or not isinstance(item.get("text"), str):
                raise _bad(f"{where}.content[{i}]: only text blocks are supported in a tool_result")
            texts.append(item["text"])
        content = "\n".join(texts)
    if not isinstance(content, str):
        raise _bad(f"{where}.content: a string or a list of text blocks is required")
    is_error = block.get("is_error", False)
    return ToolResultPart(
        tool_call_id=_str_field(block, "tool_use_id", where), content=content, is_error=bool(is_error)
    )


def _tools(tools: Any) -> list[ToolDefinition]:
    if not isinstance(tools, list):
        raise _bad("tools: a list is required")
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad(f"{where}: a tool object is required")
        if tool.get("type") not in (None, "custom"):
            raise _bad(f"{where}.type: server tool {tool.get('type')!r} is not supported by this gateway")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _bad(f"{where}.input_schema: a JSON schema object is required")
        description = tool.get("description") or ""
        strict = tool.get("strict")
        out.append(
            ToolDefinition(
                name=_str_field(tool, "name", where),
                description=str(description),
                parameters=schema,
                strict=strict if isinstance(strict, bool) else None,
            )
        )
    return out


def _tool_choice(choice: Any, kwargs: ChatKwargs) -> None:
    if not isinstance(choice, dict):
        raise _bad("tool_choice: an object with a type is required")
    kind = choice.get("type")
    if kind == "auto":
        kwargs["tool_choice"] = "auto"
    elif kind == "any":
        kwargs["tool_choice"] = "required"
    elif kind == "none":
        kwargs["tool_choice"] = "none"
    elif kind == "tool":
        kwargs["tool_choice"] = _str_field(choice, "name", "tool_choice")
    else:
        raise _bad("tool_choice.type: 'auto', 'any', 'tool' or 'none'")
    if choice.get("disable_parallel_tool_use") and kind != "none":
        kwargs["parallel_tool_calls"] = False


def _thinking(thinking: Any, max_tokens: int | None) -> dict[str, Any] | None:
    if thinking is None:
        return None
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled", "adaptive"):
        raise _bad("thinking.type: 'enabled', 'disabled' or 'adaptive'")
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if not _is_int(budget) or budget < 1024:
            raise _bad("thinking.budget_tokens: an integer >= 1024 is required")
        if max_tokens is not None and budget >= max_tokens:
            raise _bad(f"thinking.budget_tokens ({budget}) must be below max_tokens ({max_tokens})")
    return dict(thinking)


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
