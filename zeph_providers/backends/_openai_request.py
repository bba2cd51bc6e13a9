"""The Chat Completions request: neutral messages, tools and options -> `chat.completions.create` arguments.

Split from `openai.py` (which keeps the model families and capabilities, the stream and chunk
translator, embeddings and errors; the reply's pieces are in `_openai_reply` / `_openai_stream`)
because the request conversion is pure: no SDK, no I/O.
`openai.py` re-exports what was public there. The pieces the Ollama backend writes the same way
(`function_tools`) and the Claude backend too (`put_extra_body`) live in `_convert`.

Typed OpenAI options (the provider checks them first, with its name in the errors):

- `reasoning_effort` (call, else config) is sent only when set; a model or server that does not
  take it answers 400, which becomes `InvalidRequestError`.
- `parallel_tool_calls` (call, else config) is sent only with tools (the API rejects it without).
- Strict tools: a tool is strict when `ToolDefinition.strict` says so, else when the config's
  `strict_tools` does. A strict tool is sent with `"strict": true` and its parameters made strict
  by `strict_json_schema` (the same function `response_format` uses: `additionalProperties: false`
  added). A schema with an optional property cannot be strict without changing its meaning (the
  model would have to send every argument): with the config default such a tool is sent
  non-strict, as `response_format` is; with `strict=True` on the tool the provider refuses it.
- `logprobs` / `top_logprobs` are sent as the API's `logprobs` / `top_logprobs`.
- `extra={...}` is sent as-is in the body (`extra_body`: server knobs such as `min_p`,
  `repetition_penalty`, `chat_template_kwargs`), except `EXTRA_REFUSED` keys, which would either
  produce replies we cannot return (`n` > 1, audio output) or bypass a typed option.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, get_args

from zeph_providers.backends._convert import (
    function_tools,
    image_data_url,
    json_arguments,
    put_extra_body,
    schema_name,
    strict_json_schema,
    tool_parameters,
    tool_result_text,
)
from zeph_providers.config import OpenAIConfig
from zeph_providers.errors import InvalidRequestError, UnsupportedCapabilityError
from zeph_providers.options import ChatOptions, ReasoningEffort
from zeph_providers.structured import answer_tool, prompted_messages
from zeph_providers.types import DocumentPart, ImagePart, Message, Role, TextPart, ToolDefinition, ToolUsePart

__all__ = [
    "EXTRA_REFUSED",
    "TOOL_CHOICES",
    "build_request",
    "check_options",
    "convert_messages",
    "convert_response_format",
    "convert_tools",
    "tool_is_strict",
]

TOOL_CHOICES = {"auto": "auto", "none": "none", "required": "required", "any": "required"}
"""Our `tool_choice` words -> the API's (any other value names a tool)."""

_REASONING_EFFORTS: tuple[str, ...] = get_args(ReasoningEffort)

EXTRA_REFUSED: dict[str, str] = {
    "n": "one reply per call is the protocol; make concurrent calls for several",
    "logprobs": "use the typed option logprobs=True",
    "top_logprobs": "use the typed option top_logprobs=N",
    "reasoning_effort": "use the typed option reasoning_effort=...",
    "parallel_tool_calls": "use the typed option parallel_tool_calls=...",
    "modalities": "audio output is not returned by this library",
    "audio": "audio output is not returned by this library",
    "stream": "the library decides streaming",
    "stream_options": "the library decides streaming",
    "messages": "pass messages as the first argument",
    "model": "the model is the provider's config",
}
"""`extra` keys the OpenAI backend refuses (the value: why, for the error) instead of sending them."""


def check_options(options: ChatOptions, *, provider: str) -> None:
    """The typed OpenAI options and `extra`: refuse what would be dropped or is malformed."""
    for key, why in EXTRA_REFUSED.items():
        if key in options.extra and not (key == "n" and options.extra[key] in (None, 1)):
            raise UnsupportedCapabilityError(f"extra[{key!r}]", provider=provider, detail=why)
    effort = options.reasoning_effort
    if effort is not None and effort not in _REASONING_EFFORTS:
        raise InvalidRequestError(
            f"reasoning_effort must be one of {', '.join(_REASONING_EFFORTS)}, not {effort!r}", provider=provider
        )
    for name in ("parallel_tool_calls", "logprobs"):
        value = getattr(options, name)
        if value is not None and not isinstance(value, bool):
            raise InvalidRequestError(f"{name} must be a bool, not {value!r}", provider=provider)
    top = options.top_logprobs
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
            raise InvalidRequestError(f"top_logprobs must be an int from 0 to 20, not {top!r}", provider=provider)
        if not options.logprobs:
            raise InvalidRequestError("top_logprobs needs logprobs=True", provider=provider)
    for tool in options.tools:
        if tool.strict and strict_json_schema(tool_parameters(tool)) is None:
            raise InvalidRequestError(
                f"tool {tool.name!r} asks for strict=True, but its schema cannot be made strict: every "
                "property must be required and additionalProperties false (make optional ones "
                "required with a null type, or set strict=False)",
                provider=provider,
            )


def tool_is_strict(tool: ToolDefinition, default: bool) -> bool:
    """Whether `tool` is asked to be strict: its own `strict`, else the provider's default."""
    return tool.strict if tool.strict is not None else default


def convert_tools(tools: Sequence[ToolDefinition], *, strict_default: bool) -> list[dict[str, Any]]:
    """Function tools; the strict ones (see the module doc) with `strict: true` and a strict schema."""
    out = function_tools(tools)
    for tool, entry in zip(tools, out, strict=True):
        if not tool_is_strict(tool, strict_default):
            continue
        function = entry["function"]
        schema = strict_json_schema(function["parameters"])
        if schema is not None:  # else: sent non-strict (the provider refused an explicit strict=True)
            function["parameters"] = schema
            function["strict"] = True
    return out


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
        params["tools"] = convert_tools(options.tools, strict_default=config.strict_tools)
        if options.tool_choice is not None:
            mapped = TOOL_CHOICES.get(options.tool_choice)
            params["tool_choice"] = mapped or {"type": "function", "function": {"name": options.tool_choice}}
        parallel = options.parallel_tool_calls
        if parallel is None:
            parallel = config.parallel_tool_calls
        if parallel is not None:
            params["parallel_tool_calls"] = parallel
    effort = options.reasoning_effort or config.reasoning_effort
    if effort is not None:
        params["reasoning_effort"] = effort
    if options.logprobs is not None:
        params["logprobs"] = options.logprobs
    if options.top_logprobs is not None:
        params["top_logprobs"] = options.top_logprobs
    add_structured(params, options, mode)
    put_extra_body(params, options.extra, top_k=options.top_k)  # compatible servers take top_k there
    return params
