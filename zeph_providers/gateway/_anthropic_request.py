"""Anthropic Messages API request JSON -> the library's messages and `ChatKwargs` (pure functions;
the reply side is `_anthropic_wire`, the routes `_anthropic`).

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
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, TypeGuard

from zeph_providers.errors import InvalidRequestError
from zeph_providers.options import ChatKwargs
from zeph_providers.types import (
    CachePointPart,
    DocumentPart,
    ImagePart,
    Message,
    Part,
    RedactedThinkingPart,
    Role,
    TextPart,
    ThinkingPart,
    ToolDefinition,
    ToolResultPart,
    ToolUsePart,
)

__all__ = ["AnthropicRequest", "parse_request"]

_HONOURED = frozenset(
    {"model", "messages", "max_tokens", "system", "stop_sequences", "stream", "temperature", "top_p", "top_k"}
    | {"tools", "tool_choice", "thinking"}
)
_IGNORED = frozenset({"metadata", "service_tier"})
"""Fields that cannot change the reply's content: accepted and not acted on."""
_COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking"})


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
