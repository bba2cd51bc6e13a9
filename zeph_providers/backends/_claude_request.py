"""Claude's request: neutral messages, tools and options -> the Messages API's `messages.create` arguments.

Split from `claude.py` (which keeps capabilities, the stream translator and errors) because the
request conversion is pure: no SDK, no I/O, nothing the translator needs except `Structured`, the
description of the synthetic answer tool that carries structured output. `claude.py` re-exports
the public names (`convert_messages`, `convert_tools`, `convert_tool_choice`), so old imports work.
The shape shared with the OpenAI backend (`extra_body`) lives in `_convert.put_extra_body`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zeph_providers.backends._convert import put_extra_body
from zeph_providers.config import ClaudeConfig
from zeph_providers.options import ChatOptions
from zeph_providers.structured import prompted_messages
from zeph_providers.types import (
    ImagePart,
    Message,
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

_TOOL_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]")


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
    raise TypeError(f"unknown message part {type(part).__name__}")


def convert_messages(messages: Sequence[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """Neutral messages -> (`system`, `messages`) for the Messages API.

    System messages (wherever they are) are joined into the `system` parameter. Tool results
    become `tool_result` blocks in a user turn; consecutive turns of the same role are merged into
    one (the API wants alternating turns), with tool results first in a merged user turn.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == Role.SYSTEM:
            if message.text:
                system.append(message.text)
            continue
        role = "assistant" if message.role == Role.ASSISTANT else "user"
        blocks = [b for b in (_part_block(p, role) for p in message.parts) if b is not None]
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return ("\n\n".join(system) if system else None), turns


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
    schema = options.json_schema()
    if schema is None:
        return None
    name = _TOOL_NAME_BAD.sub("_", options.schema_name())[:64] or "response"
    taken = {t.name for t in options.tools}
    while name in taken:
        name = (name + "_answer")[-64:]
    kind = schema.get("type", "object" if "properties" in schema else None)
    wrapped = kind != "object"
    input_schema = (
        {"type": "object", "properties": {"value": schema}, "required": ["value"]} if wrapped else dict(schema)
    )
    description = str(schema.get("description") or "Give the final answer in exactly this structure.")
    tool = {"name": name, "description": description, "input_schema": input_schema}
    return Structured(name=name, wrapped=wrapped), tool


def build_request(
    config: ClaudeConfig, model: str, messages: Sequence[Message], options: ChatOptions
) -> dict[str, Any]:
    """The keyword arguments for `messages.create` (without `stream`/`timeout`).

    `structured_output = "prompted"`: no answer tool; the schema goes into the system prompt.
    """
    prompted = config.structured_output == "prompted" and options.response_format is not None
    if prompted:
        messages = prompted_messages(messages, options.json_schema() or {})
    system, turns = convert_messages(messages)
    max_tokens = options.max_tokens or config.max_tokens or DEFAULT_MAX_TOKENS
    params: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
    if system is not None:
        params["system"] = system
    if options.stop:
        params["stop_sequences"] = list(options.stop)
    thinking = config.thinking_budget_tokens
    if thinking:
        params["thinking"] = {"type": "enabled", "budget_tokens": thinking}

    tools = convert_tools(options.tools)
    tool_choice = convert_tool_choice(options.tool_choice) if options.tools else None
    structured = None if prompted else structured_tool(options)
    if structured is not None:
        spec, tool = structured
        tools.append(tool)
        if options.tools:
            tool_choice = tool_choice or {"type": "any"}
        elif thinking:
            tool_choice = {"type": "any"}  # the API refuses a forced tool with extended thinking
        else:
            tool_choice = {"type": "tool", "name": spec.name}
    if tools:
        params["tools"] = tools
    if tool_choice is not None:
        params["tool_choice"] = tool_choice

    # anthropic 2.x takes no sampling arguments: they travel in `extra_body`, with `extra={...}`.
    temperature = options.temperature if options.temperature is not None else config.temperature
    put_extra_body(params, options.extra, temperature=temperature, top_p=options.top_p, top_k=options.top_k)
    return params
