"""Ollama's request: neutral messages, tools and options -> the `/api/chat` JSON body.

Split from `ollama.py` (which keeps capabilities, the NDJSON translator, embeddings and errors)
because building the body is pure: no SDK, no I/O. The body is built here in Ollama's documented
shape rather than through the SDK's models, which drop nested tool schemas (see `ollama.py`).
The tool shape shared with the OpenAI backend is `_convert.function_tools`.
"""

from __future__ import annotations

from typing import Any

from zeph_providers.backends._convert import function_tools, tool_result_text
from zeph_providers.config import OllamaConfig
from zeph_providers.options import ChatOptions
from zeph_providers.types import ImagePart, Message, Role, TextPart, ThinkingPart, ToolResultPart, ToolUsePart

__all__ = ["chat_payload", "convert_messages"]

_TOP_LEVEL_EXTRA = ("think", "keep_alive")
"""`extra` keys sent as top-level request fields; every other key goes into `options`."""


def chat_payload(config: OllamaConfig, model: str, messages: list[Message], options: ChatOptions) -> dict[str, Any]:
    """The `/api/chat` body in Ollama's documented shape (posted as is, not through the SDK's models)."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": convert_messages(messages),
        "stream": options.stream,
    }
    if options.tools and options.tool_choice != "none":
        payload["tools"] = function_tools(options.tools)
    schema = options.json_schema()
    if schema is not None:
        payload["format"] = schema
    extra = dict(options.extra)
    top_level = {key: extra.pop(key) for key in _TOP_LEVEL_EXTRA if key in extra}
    if config.think is not None:
        payload["think"] = config.think
    if config.keep_alive is not None:
        payload["keep_alive"] = config.keep_alive
    payload.update(top_level)
    model_options: dict[str, Any] = {}
    max_tokens = options.max_tokens if options.max_tokens is not None else config.max_tokens
    temperature = options.temperature if options.temperature is not None else config.temperature
    for key, value in (
        ("num_predict", max_tokens),
        ("temperature", temperature),
        ("top_p", options.top_p),
        ("top_k", options.top_k),
        ("seed", options.seed),
    ):
        if value is not None:
            model_options[key] = value
    if options.stop:
        model_options["stop"] = list(options.stop)
    model_options.update(extra)  # repeat_penalty, num_ctx, min_p, ... (Ollama's own option names)
    if model_options:
        payload["options"] = model_options
    return payload


def convert_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Our messages -> Ollama's: tool results become role "tool" messages naming their tool."""
    tool_names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        text: list[str] = []
        thinking: list[str] = []
        images: list[str] = []
        calls: list[dict[str, Any]] = []
        results: list[ToolResultPart] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                text.append(part.text)
            elif isinstance(part, ImagePart):
                images.append(part.base64)
            elif isinstance(part, ThinkingPart):
                thinking.append(part.text)
            elif isinstance(part, ToolUsePart):
                tool_names[part.id] = part.name
                calls.append({"function": {"name": part.name, "arguments": dict(part.arguments)}})
            elif isinstance(part, ToolResultPart):
                results.append(part)
        for result in results:
            entry: dict[str, Any] = {"role": "tool", "content": tool_result_text(result)}
            name = tool_names.get(result.tool_call_id)
            if name:
                entry["tool_name"] = name
            out.append(entry)
        if results and not (text or images or calls or thinking):
            continue
        entry = {"role": message.role.value, "content": "".join(text)}
        if thinking and message.role == Role.ASSISTANT:
            entry["thinking"] = "".join(thinking)
        if images:
            entry["images"] = images
        if calls:
            entry["tool_calls"] = calls
        out.append(entry)
    return out
