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
from zeph_providers.types import DocumentPart, ImagePart, Message, Role, TextPart, ToolUsePart

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
    parts = [p for p in message.parts if isinstance(p, TextPart | ImagePart | DocumentPart)]
    if not parts:
        return None if message.tool_results else ""
    if all(isinstance(p, TextPart) for p in parts):
        return message.text
    content: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, DocumentPart):
            content.append(_document_content(part))
        else:
            content.append({"type": "image_url", "image_url": {"url": image_data_url(part)}})
    return content


def _document_content(part: DocumentPart) -> dict[str, Any]:
    """A document -> a `file` content part (inline `file_data`); a text document -> its text,
    under its title (Chat Completions' file input takes files, such as PDFs, not plain text)."""
    if part.text is not None:
        return {"type": "text", "text": f"{part.title}\n\n{part.text}" if part.title else part.text}
    filename = part.title or ("document.pdf" if part.mime_type == "application/pdf" else "document")
    return {"type": "file", "file": {"filename": filename, "file_data": f"data:{part.mime_type};base64,{part.base64}"}}


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


def build_request(
    config: OpenAIConfig, messages: Sequence[Message], options: ChatOptions, *, max_completion_tokens: bool
) -> dict[str, Any]:
    """The keyword arguments for `chat.completions.create` (without `stream`/`timeout`).

    `max_completion_tokens`: send the token limit under that name (reasoning models) instead of
    `max_tokens`.
    """
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
    response_format = convert_response_format(options)
    if response_format is not None:
        params["response_format"] = response_format
    put_extra_body(params, options.extra, top_k=options.top_k)  # compatible servers take top_k there
    return params
