"""The Chat Completions request: neutral messages, tools and options -> `chat.completions.create` arguments.

Split from `openai.py` (which keeps the model families and capabilities, the stream and chunk
translator, embeddings and errors) because the request conversion is pure: no SDK, no I/O.
`openai.py` re-exports what was public there. The pieces the Ollama backend writes the same way
(`function_tools`) and the Claude backend too (`put_extra_body`) live in `_convert`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zeph_providers.backends._convert import (
    function_tools,
    image_data_url,
    json_arguments,
    put_extra_body,
    schema_name,
    strict_json_schema,
    tool_result_text,
)
from zeph_providers.config import OpenAIConfig
from zeph_providers.options import ChatOptions
from zeph_providers.structured import answer_tool, prompted_messages
from zeph_providers.types import ImagePart, Message, Role, TextPart, ToolUsePart

__all__ = ["TOOL_CHOICES", "build_request", "convert_messages", "convert_response_format"]

TOOL_CHOICES = {"auto": "auto", "none": "none", "required": "required", "any": "required"}
"""Our `tool_choice` words -> the API's (any other value names a tool)."""


def convert_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages -> Chat Completions `messages` (tool results become role "tool" entries)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        # Tool results answer the preceding assistant turn, so they come first (a user message
        # may carry results and new text together, Claude-style).
        for result in message.tool_results:
            out.append({"role": "tool", "tool_call_id": result.tool_call_id, "content": tool_result_text(result)})
        if message.role == Role.SYSTEM:
            out.append({"role": "system", "content": message.text})
        elif message.role == Role.ASSISTANT:
            entry: dict[str, Any] = {"role": "assistant"}
            calls = [p for p in message.parts if isinstance(p, ToolUsePart)]
            text = message.text
            # Reasoning text is not sent back: OpenAI-style APIs reject or ignore it in history.
            entry["content"] = text if text or not calls else None
            if calls:
                entry["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": json_arguments(call.arguments)},
                    }
                    for call in calls
                ]
            out.append(entry)
        elif message.role == Role.USER:
            content = _user_content(message)
            if content is not None:
                out.append({"role": "user", "content": content})
    return out


def _user_content(message: Message) -> str | list[dict[str, Any]] | None:
    parts = [p for p in message.parts if isinstance(p, TextPart | ImagePart)]
    if not parts:
        return None if message.tool_results else ""
    if all(isinstance(p, TextPart) for p in parts):
        return message.text
    content: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        else:
            content.append({"type": "image_url", "image_url": {"url": image_data_url(part)}})
    return content


def convert_response_format(options: ChatOptions) -> dict[str, Any] | None:
    """`response_format` -> `{"type": "json_schema", ...}`, strict when the schema allows it."""
    schema = options.json_schema()
    if schema is None:
        return None
    strict_schema = strict_json_schema(schema)
    spec: dict[str, Any] = {
        "name": schema_name(options.schema_name()),
        "schema": strict_schema if strict_schema is not None else schema,
        "strict": strict_schema is not None,
    }
    return {"type": "json_schema", "json_schema": spec}


def add_structured(params: dict[str, Any], options: ChatOptions, mode: str) -> None:
    """The structured-output part of the request (`zeph_providers.structured` describes the modes).

    native: `response_format` json_schema. tool: one more function tool (the answer tool), forced
    when the caller gave no tools, else `tool_choice` "required" unless the caller named a tool.
    prompted: nothing here (the schema went into the system prompt).
    """
    if options.response_format is None or mode == "prompted":
        return
    if mode == "native":
        response_format = convert_response_format(options)
        if response_format is not None:
            params["response_format"] = response_format
        return
    tool = answer_tool(options)
    assert tool is not None
    strict = strict_json_schema(tool.parameters)
    function: dict[str, Any] = {
        "name": tool.name,
        "description": tool.description,
        "parameters": strict if strict is not None else tool.parameters,
    }
    if strict is not None:
        function["strict"] = True
    params.setdefault("tools", []).append({"type": "function", "function": function})
    forced = {"type": "function", "function": {"name": tool.name}}
    choice = params.get("tool_choice")
    if not options.tools or choice == "none":
        params["tool_choice"] = forced
    elif choice in (None, "auto"):
        params["tool_choice"] = "required"


def build_request(
    config: OpenAIConfig, messages: Sequence[Message], options: ChatOptions, *, max_completion_tokens: bool
) -> dict[str, Any]:
    """The keyword arguments for `chat.completions.create` (without `stream`/`timeout`).

    `max_completion_tokens`: send the token limit under that name (reasoning models) instead of
    `max_tokens`. `config.structured_output` picks how `response_format` is asked for (see
    `add_structured`).
    """
    mode = config.structured_output or "native"
    if mode == "prompted" and options.response_format is not None:
        messages = prompted_messages(messages, options.json_schema() or {})
    params: dict[str, Any] = {
        "model": config.model,
        "messages": convert_messages(messages),
        "stream_options": {"include_usage": True},
    }
    max_tokens = options.max_tokens if options.max_tokens is not None else config.max_tokens
    if max_tokens is not None:
        params["max_completion_tokens" if max_completion_tokens else "max_tokens"] = max_tokens
    temperature = options.temperature if options.temperature is not None else config.temperature
    if temperature is not None:
        params["temperature"] = temperature
    if options.top_p is not None:
        params["top_p"] = options.top_p
    if options.seed is not None:
        params["seed"] = options.seed
    if options.stop:
        params["stop"] = list(options.stop)
    if options.tools:
        params["tools"] = function_tools(options.tools)
        if options.tool_choice is not None:
            mapped = TOOL_CHOICES.get(options.tool_choice)
            params["tool_choice"] = mapped or {"type": "function", "function": {"name": options.tool_choice}}
    add_structured(params, options, mode)
    put_extra_body(params, options.extra, top_k=options.top_k)  # compatible servers take top_k there
    return params
