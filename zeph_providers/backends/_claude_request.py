"""Claude's request: neutral messages, tools and options -> the Messages API's `messages.create` arguments.

Split from `claude.py` (which keeps capabilities, the provider and errors; the stream translator
is `_claude_reply`) because the request conversion is pure: no SDK, no I/O, nothing the
translator needs except `Structured`, the description of the synthetic answer tool that carries
structured output. `claude.py` re-exports the public names (`convert_messages`, `convert_tools`,
`convert_tool_choice`), so old imports work.
The shape shared with the OpenAI backend (`extra_body`) lives in `_convert.put_extra_body`.

Issue 12 decisions:

- Prompt caching: `CacheSettings` (the call's `cache=`, else the config's `cache`) and
  `CachePointPart`s in messages become `cache_control: {"type": "ephemeral", "ttl": ...}`: on the
  last tool definition (`tools`), on the system prompt (`system`, which then travels as one text
  block), on the block before each `CachePointPart`, and top-level (`automatic`: the API marks the
  last cacheable block itself). The API takes at most 4 breakpoints and wants 1-hour entries before
  5-minute ones (in the order tools, system, messages); a request past either rule is refused here
  (`ValueError` -> `InvalidRequestError` naming the provider) instead of by a 400. A cache point
  with nothing cacheable before it (no block, or a thinking block, which cannot be cached) is
  refused the same way.
- Thinking: `thinking_budget_tokens` -> `{"type": "enabled", "budget_tokens": N}` (which must be
  below `max_tokens`: refused here otherwise); `thinking = "adaptive"` / `"disabled"`;
  `thinking_display`; `effort` -> `output_config.effort`; `interleaved_thinking` -> the
  `anthropic-beta: interleaved-thinking-2025-05-14` header. History sends back every signed
  `ThinkingPart` and every `RedactedThinkingPart`, in their order.
- Documents: a PDF `DocumentPart` -> a base64 `document` block, a text one (or `text/plain` bytes)
  -> a plain-text source; any other media type is refused (Claude reads PDF and plain text).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zeph_providers.backends._convert import put_extra_body
from zeph_providers.config import ClaudeConfig
from zeph_providers.options import ChatOptions
from zeph_providers.structured import answer_tool, prompted_messages
from zeph_providers.types import (
    CachePointPart,
    CacheSettings,
    CacheTTL,
    DocumentPart,
    ImagePart,
    Message,
    RedactedThinkingPart,
    Role,
    TextPart,
    ThinkingPart,
    ToolDefinition,
    ToolResultPart,
    ToolUsePart,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "Structured",
    "build_request",
    "convert_messages",
    "convert_tool_choice",
    "convert_tools",
    "structured_tool",
]

DEFAULT_MAX_TOKENS = 4096
MAX_CACHE_BREAKPOINTS = 4
"""The Messages API's limit on `cache_control` breakpoints in one request."""
INTERLEAVED_THINKING_BETA = "interleaved-thinking-2025-05-14"


def _part_block(part: Any, role: str) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        # The API rejects empty text blocks.
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ImagePart):
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": part.mime_type, "data": part.base64},
        }
    if isinstance(part, ToolUsePart):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": dict(part.arguments)}
    if isinstance(part, ToolResultPart):
        return {
            "type": "tool_result",
            "tool_use_id": part.tool_call_id,
            "content": part.content,
            "is_error": part.is_error,
        }
    if isinstance(part, ThinkingPart):
        # Only the assistant thinks, and the API accepts a thinking block only with its signature.
        if role != "assistant" or not part.signature:
            return None
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    if isinstance(part, RedactedThinkingPart):
        return {"type": "redacted_thinking", "data": part.data} if role == "assistant" else None
    if isinstance(part, DocumentPart):
        return _document_block(part)
    raise TypeError(f"unknown message part {type(part).__name__}")


def _document_block(part: DocumentPart) -> dict[str, Any]:
    source: dict[str, Any]
    if part.text is not None:
        source = {"type": "text", "media_type": "text/plain", "data": part.text}
    elif part.mime_type == "application/pdf":
        source = {"type": "base64", "media_type": "application/pdf", "data": part.base64}
    elif part.mime_type.startswith("text/plain"):
        source = {"type": "text", "media_type": "text/plain", "data": (part.data or b"").decode("utf-8")}
    else:
        raise ValueError(f"Claude reads PDF and plain-text documents, not {part.mime_type!r}")
    block: dict[str, Any] = {"type": "document", "source": source}
    if part.title:
        block["title"] = part.title
    return block


@dataclass
class _Converted:
    system: str | None
    turns: list[dict[str, Any]]
    system_ttl: CacheTTL | None = None
    """A `CachePointPart` in a system message: the system prompt is a breakpoint with this TTL."""


def _convert(messages: Sequence[Message]) -> _Converted:
    system: list[str] = []
    out = _Converted(None, [])
    turns = out.turns
    for message in messages:
        if message.role == Role.SYSTEM:
            if message.text:
                system.append(message.text)
            for part in message.parts:
                if isinstance(part, CachePointPart):
                    if not system:
                        raise ValueError("a cache point in a system message must follow some system text")
                    out.system_ttl = part.ttl or out.system_ttl or "5m"
            continue
        role = "assistant" if message.role == Role.ASSISTANT else "user"
        if turns and turns[-1]["role"] == role:
            blocks: list[dict[str, Any]] = turns[-1]["content"]
        else:
            blocks = []
            turns.append({"role": role, "content": blocks})
        for part in message.parts:
            if isinstance(part, CachePointPart):
                before = blocks or (turns[-2]["content"] if len(turns) > 1 else [])
                if not before or before[-1]["type"] in ("thinking", "redacted_thinking"):
                    raise ValueError("a cache point must follow a cacheable content block (not thinking)")
                before[-1]["cache_control"] = {"type": "ephemeral", "ttl": part.ttl}  # ttl filled in later
                continue
            block = _part_block(part, role)
            if block is not None:
                blocks.append(block)
        if not blocks:
            turns.pop()
    for turn in turns:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    out.system = "\n\n".join(system) if system else None
    return out


def convert_messages(messages: Sequence[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """Neutral messages -> (`system`, `messages`) for the Messages API.

    System messages (wherever they are) are joined into the `system` parameter. Tool results
    become `tool_result` blocks in a user turn; consecutive turns of the same role are merged into
    one (the API wants alternating turns), with tool results first in a merged user turn.
    A `CachePointPart` marks the block before it (`cache_control`, TTL "5m" unless it names one).
    """
    converted = _convert(messages)
    _fill_ttls(converted.turns, "5m")
    return converted.system, converted.turns


def _fill_ttls(turns: list[dict[str, Any]], default: CacheTTL) -> list[CacheTTL]:
    """Give every message cache point its TTL; the TTLs in request order."""
    ttls: list[CacheTTL] = []
    for turn in turns:
        for block in turn["content"]:
            control = block.get("cache_control")
            if control is not None:
                control["ttl"] = control["ttl"] or default
                ttls.append(control["ttl"])
    return ttls


def cache_settings(config: ClaudeConfig, options: ChatOptions) -> CacheSettings | None:
    """The call's prompt caching: its `cache=`, else the config's; True means `CacheSettings()`."""
    value = options.cache if options.cache is not None else config.cache
    if value is True:
        return CacheSettings()
    return value or None


def convert_tools(tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    return [{"name": t.name, "description": t.description, "input_schema": dict(t.parameters)} for t in tools]


def convert_tool_choice(choice: str | None) -> dict[str, Any] | None:
    """Map "auto" / "none" / "required" (or "any") / a tool's name to the API's `tool_choice`."""
    if choice is None:
        return None
    if choice in ("auto", "none", "any"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    return {"type": "tool", "name": choice}


@dataclass(frozen=True)
class Structured:
    """The synthetic answer tool that carries structured output."""

    name: str
    wrapped: bool
    """The schema is not an object: it travels as `{"value": <schema>}`."""


def structured_tool(options: ChatOptions) -> tuple[Structured, dict[str, Any]] | None:
    """Claude's answer tool for `response_format` (the shared `structured.answer_tool`, in its shape)."""
    answer = answer_tool(options)
    if answer is None:
        return None
    tool = {"name": answer.name, "description": answer.description, "input_schema": answer.parameters}
    return Structured(name=answer.name, wrapped=answer.wrapped), tool


def build_request(
    config: ClaudeConfig, model: str, messages: Sequence[Message], options: ChatOptions
) -> dict[str, Any]:
    """The keyword arguments for `messages.create` (without `stream`/`timeout`).

    `structured_output = "prompted"`: no answer tool; the schema goes into the system prompt.
    """
    prompted = config.structured_output == "prompted" and options.response_format is not None
    if prompted:
        messages = prompted_messages(messages, options.json_schema() or {})
    converted = _convert(messages)
    system, turns = converted.system, converted.turns
    cache = cache_settings(config, options)
    max_tokens = options.max_tokens or config.max_tokens or DEFAULT_MAX_TOKENS
    params: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
    if system is not None:
        params["system"] = system
    if options.stop:
        params["stop_sequences"] = list(options.stop)
    thinking = _thinking(config, max_tokens)
    if thinking is not None:
        params["thinking"] = thinking
    if config.effort is not None:
        params["output_config"] = {"effort": config.effort}
    if config.interleaved_thinking:
        params["extra_headers"] = {"anthropic-beta": INTERLEAVED_THINKING_BETA}

    tools = convert_tools(options.tools)
    tool_choice = convert_tool_choice(options.tool_choice) if options.tools else None
    structured = None if prompted else structured_tool(options)
    if structured is not None:
        spec, tool = structured
        tools.append(tool)
        if options.tools:
            tool_choice = tool_choice or {"type": "any"}
        elif thinking is not None and thinking["type"] != "disabled":
            tool_choice = {"type": "any"}  # the API refuses a forced tool with extended thinking
        else:
            tool_choice = {"type": "tool", "name": spec.name}
    if tools:
        params["tools"] = tools
    if tool_choice is not None:
        params["tool_choice"] = tool_choice
    _place_cache_points(params, converted, cache)

    # anthropic 2.x takes no sampling arguments: they travel in `extra_body`, with `extra={...}`.
    temperature = options.temperature if options.temperature is not None else config.temperature
    put_extra_body(params, options.extra, temperature=temperature, top_p=options.top_p, top_k=options.top_k)
    return params


def _thinking(config: ClaudeConfig, max_tokens: int) -> dict[str, Any] | None:
    """The `thinking` parameter from the config (None: not sent, the model's default)."""
    mode = config.thinking or ("enabled" if config.thinking_budget_tokens else None)
    if mode is None:
        if config.thinking_display is not None:
            raise ValueError("thinking_display needs thinking enabled or adaptive")
        return None
    out: dict[str, Any] = {"type": mode}
    if mode == "enabled":
        budget = config.thinking_budget_tokens
        if not budget:
            raise ValueError('thinking = "enabled" needs thinking_budget_tokens')
        if budget >= max_tokens:
            raise ValueError(f"thinking_budget_tokens ({budget}) must be below max_tokens ({max_tokens})")
        out["budget_tokens"] = budget
    if config.thinking_display is not None:
        if mode == "disabled":
            raise ValueError("thinking_display needs thinking enabled or adaptive")
        out["display"] = config.thinking_display
    return out


def _place_cache_points(params: dict[str, Any], converted: _Converted, cache: CacheSettings | None) -> None:
    """Put the call's cache breakpoints on the request; refuse more than the API takes."""
    default: CacheTTL = cache.ttl if cache is not None else "5m"
    order: list[CacheTTL] = []  # the breakpoints' TTLs in prompt order: tools, system, messages
    tools = params.get("tools")
    if cache is not None and cache.tools and tools:
        tools[-1]["cache_control"] = {"type": "ephemeral", "ttl": default}
        order.append(default)
    system_ttl = converted.system_ttl or (default if cache is not None and cache.system else None)
    if system_ttl is not None and converted.system is not None:
        control = {"type": "ephemeral", "ttl": system_ttl}
        params["system"] = [{"type": "text", "text": converted.system, "cache_control": control}]
        order.append(system_ttl)
    order.extend(_fill_ttls(converted.turns, default))
    if cache is not None and cache.automatic:
        params["cache_control"] = {"type": "ephemeral", "ttl": default}
        order.append(default)  # the API puts it on the last cacheable block
    if len(order) > MAX_CACHE_BREAKPOINTS:
        raise ValueError(
            f"{len(order)} prompt-cache breakpoints; the Messages API takes at most {MAX_CACHE_BREAKPOINTS} "
            "(automatic caching, system, tools and each CachePointPart count one each)"
        )
    if "1h" in order and "5m" in order and order.index("5m") < len(order) - 1 - order[::-1].index("1h"):
        raise ValueError("a 1h cache breakpoint must come before every 5m one (tools, system, then messages)")


# ----- structured output read back (used by `claude.py`) -------------------------------------


def _split_trailing_json(text: str) -> tuple[str, Any] | None:
    """(preamble, value) when `text` ends with a JSON object or array, else None."""
    stripped = text.strip()
    decoder = json.JSONDecoder()
    for start, char in enumerate(stripped):
        if char not in "{[":
            continue
        try:
            value, end = decoder.raw_decode(stripped, start)
        except json.JSONDecodeError:
            continue
        if end == len(stripped):
            return stripped[:start], value
    return None


def _trailing_json(text: str) -> Any:
    """The JSON value that ends `text` (structured output after a preamble), or `text` itself."""
    split = _split_trailing_json(text)
    return text.strip() if split is None else split[1]
