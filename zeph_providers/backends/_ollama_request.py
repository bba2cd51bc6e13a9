"""Ollama's request: neutral messages, tools and options -> the `/api/chat` JSON body.

Split from `ollama.py` (which keeps capabilities, transport, embeddings and errors; the reply's
translator is `_ollama_reply`)
because building the body is pure: no SDK, no I/O. The body is built here in Ollama's documented
shape rather than through the SDK's models, which drop nested tool schemas (see `ollama.py`).
The tool shape shared with the OpenAI backend is `_convert.function_tools`.

Forced tools (`tool_choice` "required"/"any" or a tool's name), which Ollama's API cannot ask
for, are emulated with its schema-constrained `format` (Ollama compiles the JSON schema into a
grammar that constrains decoding; it does not show the schema to the model):

- `format` is the schema of one call object, `{"name": <the tool's name as an enum of one>,
  "arguments": <the tool's parameters schema>}`, both required, `name` first so the model picks
  the tool before writing its arguments. For "required" over several tools it is an `anyOf` of
  those per-tool objects, which ties each name to its own arguments (a name enum beside a union
  of all argument schemas would let the model pair a name with another tool's arguments).
  Ollama's `format` accepts a full JSON schema and converts it with llama.cpp's schema-to-grammar
  converter, which supports `anyOf`, `enum` and nested objects.
- `tools` is NOT sent: with tools the chat template tells the model to answer in its own
  tool-call syntax (`<tool_call>...`), which the grammar forbids, and Ollama's tool-call parser
  would watch the constrained text. Instead, as Ollama's structured-output guide advises, the
  schema is also put in the prompt: a system instruction naming each allowed tool, its description
  and its parameters schema (appended to the leading system message, or a new one first).
- The reply's text is that JSON object; `parse_forced_call` checks it and `_ollama_reply` turns it
  into a `ToolCall` (no text chunk). `check_forced` refuses what the emulation cannot do.
"""

from __future__ import annotations

import json
from typing import Any

from zeph_providers.backends._convert import function_tools, tool_result_text
from zeph_providers.backends._wire import loads
from zeph_providers.config import OllamaConfig
from zeph_providers.errors import BadResponseError, InvalidRequestError, UnsupportedCapabilityError
from zeph_providers.options import ChatOptions
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
    "chat_payload",
    "check_forced",
    "convert_messages",
    "forced_call_schema",
    "forced_instruction",
    "forced_tools",
    "parse_forced_call",
]

_NOT_FORCED = (None, "auto", "none")


def forced_tools(options: ChatOptions) -> list[ToolDefinition] | None:
    """The tools a forced `tool_choice` allows ("required"/"any": all; a name: that one), else None."""
    choice = options.tool_choice
    if choice in _NOT_FORCED or not options.tools:
        return None
    if choice in ("required", "any"):
        return list(options.tools)
    return [tool for tool in options.tools if tool.name == choice]


def _call_schema(tool: ToolDefinition) -> dict[str, Any]:
    parameters = dict(tool.parameters) if tool.parameters else {}
    if not parameters:
        parameters = {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"type": "string", "enum": [tool.name]}, "arguments": parameters},
        "required": ["name", "arguments"],
    }


def forced_call_schema(tools: list[ToolDefinition]) -> dict[str, Any]:
    """The `format` schema of one call object to one of `tools` (see the module docstring)."""
    if len(tools) == 1:
        return _call_schema(tools[0])
    return {"anyOf": [_call_schema(tool) for tool in tools]}


def forced_instruction(tools: list[ToolDefinition]) -> str:
    """The system instruction that shows the model the call it must write (the grammar enforces it)."""
    lines = [
        "Call a tool now. Reply with only a JSON object of the form "
        '{"name": <tool name>, "arguments": <the tool\'s arguments>}, nothing else.',
        "Tools:" if len(tools) > 1 else "The tool:",
    ]
    for tool in tools:
        description = f": {tool.description}" if tool.description else ""
        schema = json.dumps(tool.parameters or {"type": "object", "properties": {}}, ensure_ascii=False)
        lines.append(f"- {tool.name}{description}. Arguments (JSON schema): {schema}")
    return "\n".join(lines)


def check_forced(choice: str, options: ChatOptions, *, structured_output: bool, provider: str) -> None:
    """A forced tool (emulated with `format`): what it needs (tools, the model's `format`) and excludes."""
    if not options.tools:
        raise InvalidRequestError(f"tool_choice {choice!r} needs tools", provider=provider)
    if choice not in ("required", "any") and choice not in {tool.name for tool in options.tools}:
        raise InvalidRequestError(
            f"tool_choice {choice!r} is neither auto/none/required nor the name of a given tool",
            provider=provider,
        )
    if options.response_format is not None:
        raise UnsupportedCapabilityError(
            "tool_choice with response_format",
            provider=provider,
            detail=f"Ollama forces a tool (tool_choice={choice!r}) through its schema-constrained `format`, "
            "which response_format needs too; ask for one of them",
        )
    if not structured_output:
        raise UnsupportedCapabilityError(
            "tool_choice",
            provider=provider,
            detail=f"a forced tool (tool_choice={choice!r}) needs the model's schema-constrained `format`",
        )


def parse_forced_call(
    text: str, tools: list[ToolDefinition], reason: str | None, *, provider: str | None
) -> tuple[str, dict[str, Any]]:
    """The JSON reply to a forced tool (`{"name", "arguments"}`) -> the call's name and arguments.

    Anything else (not JSON, cut at the token limit, another shape, a tool not allowed) is a
    `BadResponseError` naming the provider.
    """
    cut = " (the reply was cut at the token limit: raise max_tokens)" if reason == "length" else ""
    try:
        value = loads(text, provider=provider, what="forced tool call")
    except BadResponseError as exc:
        raise BadResponseError(f"{exc.message}{cut}", provider=provider) from exc
    allowed = [tool.name for tool in tools]
    name = value.get("name") if isinstance(value, dict) else None
    arguments = value.get("arguments") if isinstance(value, dict) else None
    if not isinstance(name, str) or not isinstance(arguments, dict):
        raise BadResponseError(
            f'the reply to a forced tool call is not a {{"name", "arguments"}} object{cut}', provider=provider
        )
    if name not in allowed:
        raise BadResponseError(
            f"the reply to a forced tool call names {name!r}, not one of {allowed}", provider=provider
        )
    return name, arguments


def _with_instruction(messages: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{instruction}".lstrip("\n")
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


_TOP_LEVEL_EXTRA = ("think", "keep_alive")
"""`extra` keys sent as top-level request fields; every other key goes into `options`."""


def chat_payload(config: OllamaConfig, model: str, messages: list[Message], options: ChatOptions) -> dict[str, Any]:
    """The `/api/chat` body in Ollama's documented shape (posted as is, not through the SDK's models)."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": convert_messages(messages),
        "stream": options.stream,
    }
    forced = forced_tools(options)
    if forced is not None:  # emulated with `format`; no `tools` (see the module docstring)
        payload["messages"] = _with_instruction(payload["messages"], forced_instruction(forced))
        payload["format"] = forced_call_schema(forced)
    elif options.tools and options.tool_choice != "none":
        payload["tools"] = function_tools(options.tools)
    schema = options.json_schema()
    if schema is not None and forced is None:  # both at once is refused by the provider's checks
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
