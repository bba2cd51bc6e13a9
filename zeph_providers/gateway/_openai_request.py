"""OpenAI Chat Completions / Embeddings request bodies -> our `Message`s and call keywords.

Nothing is dropped silently: a field that would change the reply and cannot be honoured is a 400
naming it. Ignored (they change nothing about the reply): `user`, `metadata`, `store`,
`service_tier`, `prompt_cache_key`, `safety_identifier`, a message's `name`, `stream_options`'s
`include_obfuscation`; `n`, `frequency_penalty`, `presence_penalty`, `logit_bias` and
`modalities` are accepted at their defaults (1, 0, 0, {}, ["text"]) and refused otherwise.
Images must be `data:` URLs (the gateway fetches nothing on a client's behalf).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from zeph_providers.gateway._context import GatewayContext
from zeph_providers.gateway._errors import BadRequest
from zeph_providers.types import ImagePart, Message, Part, Role, TextPart, ToolDefinition, ToolUsePart

__all__ = ["ChatRequest", "parse_chat", "parse_embeddings"]

_HANDLED = frozenset(
    {
        "model", "messages", "stream", "stream_options", "tools", "tool_choice", "response_format",
        "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
        "parallel_tool_calls", "logprobs", "top_logprobs", "reasoning_effort",
    }
)  # fmt: skip
_IGNORED = frozenset({"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"})
_AT_DEFAULT: dict[str, Any] = {
    "n": (1,),
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "logit_bias": ({},),
    "modalities": (["text"],),
}


@dataclass
class ChatRequest:
    model: str
    messages: list[Message]
    kwargs: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest(
            "`model` is required: the name of one of the gateway's providers (GET /v1/models)", param="model"
        )
    return model


def parse_chat(body: dict[str, Any], ctx: GatewayContext) -> ChatRequest:
    """Validate and translate one chat.completions body (400 `BadRequest` naming what is wrong)."""
    model = _model(body)
    unknown = sorted(k for k in body if k not in _HANDLED and k not in _IGNORED and k not in _AT_DEFAULT)
    if unknown:
        raise BadRequest(
            f"unsupported field(s) {', '.join(unknown)}: this gateway cannot honour them (nothing is dropped silently)",
            param=unknown[0],
        )
    for name, defaults in _AT_DEFAULT.items():
        if name in body and body[name] is not None and body[name] not in defaults:
            raise BadRequest(f"`{name}` = {json.dumps(body[name])} is not supported (only its default)", param=name)
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise BadRequest("`messages` must be a non-empty array", param="messages")
    messages = [_message(raw, i) for i, raw in enumerate(raw_messages)]

    kwargs: dict[str, Any] = {}
    max_tokens = body.get("max_tokens")
    max_completion = body.get("max_completion_tokens")
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        raise BadRequest("give one of `max_tokens` and `max_completion_tokens`, not two values", param="max_tokens")
    param = "max_completion_tokens" if max_completion is not None else "max_tokens"
    limit = ctx.check_max_tokens(max_completion if max_completion is not None else max_tokens, param=param)
    if limit is not None:
        kwargs["max_tokens"] = limit
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BadRequest(f"`{name}` must be a number", param=name)
            kwargs[name] = float(value)
    for name in ("seed", "top_logprobs"):
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadRequest(f"`{name}` must be an integer", param=name)
            kwargs[name] = value
    for name in ("parallel_tool_calls", "logprobs"):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, bool):
                raise BadRequest(f"`{name}` must be true or false", param=name)
            kwargs[name] = value
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in ("none", "minimal", "low", "medium", "high", "xhigh"):
            raise BadRequest(
                "`reasoning_effort` must be one of none, minimal, low, medium, high, xhigh", param="reasoning_effort"
            )
        kwargs["reasoning_effort"] = effort
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise BadRequest("`stop` must be a string or an array of strings", param="stop")
        if stop:
            kwargs["stop"] = stop
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise BadRequest("`tools` must be an array", param="tools")
        if tools:
            kwargs["tools"] = [_tool(raw, i) for i, raw in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None:
        kwargs["tool_choice"] = choice
    fmt = _response_format(body.get("response_format"))
    if fmt is not None:
        kwargs["response_format"] = fmt

    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("`stream` must be true or false", param="stream")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise BadRequest("`stream_options` must be an object", param="stream_options")
        extra = sorted(set(options) - {"include_usage", "include_obfuscation"})
        if extra:
            raise BadRequest(f"unsupported stream_options field(s): {', '.join(extra)}", param="stream_options")
        include_usage = options.get("include_usage") is True
    return ChatRequest(model=model, messages=messages, kwargs=kwargs, stream=stream, include_usage=include_usage)


def parse_embeddings(body: dict[str, Any]) -> tuple[str, list[str], int | None, str]:
    """(model, texts, dimensions, encoding_format) from an embeddings body."""
    model = _model(body)
    unknown = sorted(set(body) - {"model", "input", "dimensions", "encoding_format", "user"})
    if unknown:
        raise BadRequest(f"unsupported field(s) {', '.join(unknown)}", param=unknown[0])
    raw = body.get("input")
    texts: list[str]
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
        texts = list(raw)
    else:
        raise BadRequest(
            "`input` must be a string or a non-empty array of strings (token arrays are not supported)", param="input"
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise BadRequest("`dimensions` must be a positive integer", param="dimensions")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest("`encoding_format` must be float or base64", param="encoding_format")
    return model, texts, dimensions, encoding


# ----- pieces ------------------------------------------------------------------------------


def _text_of(content: Any, where: str) -> str:
    """A system/tool/assistant content: a string or an array of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
                raise BadRequest(f"{where}: only text content parts are accepted here", param="messages")
            texts.append(str(part.get("text", part.get("refusal", ""))))
        return "".join(texts)
    raise BadRequest(f"{where}: `content` must be a string or an array of parts", param="messages")


def _image(part: dict[str, Any], where: str) -> ImagePart:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url.startswith("data:"):
        raise BadRequest(
            f"{where}: images must be `data:` URLs (base64); the gateway fetches no URLs", param="messages"
        )
    head, _, data = url.partition(",")
    mime = head[5:].split(";")[0] or "image/png"
    if ";base64" not in head:
        raise BadRequest(f"{where}: image data URLs must be base64", param="messages")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: the image's base64 is malformed", param="messages") from None
    return ImagePart(data=raw, mime_type=mime)


def _user_parts(content: Any, where: str) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (TextPart(text=content),)
    if not isinstance(content, list):
        raise BadRequest(f"{where}: `content` must be a string or an array of parts", param="messages")
    parts: list[Part] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(TextPart(text=part["text"]))
        elif kind == "image_url":
            parts.append(_image(part, f"{where}.content[{index}]"))
        else:
            raise BadRequest(f"{where}.content[{index}]: unsupported content part type {kind!r}", param="messages")
    return tuple(parts)


def _message(raw: Any, index: int) -> Message:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object", param="messages")
    role = raw.get("role")
    if role in ("system", "developer"):
        return Message(role=Role.SYSTEM, parts=(TextPart(text=_text_of(raw.get("content"), where)),))
    if role == "user":
        return Message(role=Role.USER, parts=_user_parts(raw.get("content"), where))
    if role == "tool":
        call_id = raw.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise BadRequest(f"{where}: a tool message needs `tool_call_id`", param="messages")
        return Message.tool_result(call_id, _text_of(raw.get("content"), where))
    if role == "assistant":
        parts: list[Part] = []
        text = _text_of(raw.get("content"), where)
        if text:
            parts.append(TextPart(text=text))
        calls = raw.get("tool_calls") or []
        if not isinstance(calls, list):
            raise BadRequest(f"{where}: `tool_calls` must be an array", param="messages")
        for number, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise BadRequest(f"{where}.tool_calls[{number}] needs a `function` with a `name`", param="messages")
            arguments = function.get("arguments") or "{}"
            try:
                parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
            except ValueError:
                raise BadRequest(
                    f"{where}.tool_calls[{number}]: `arguments` is not valid JSON", param="messages"
                ) from None
            if not isinstance(parsed, dict):
                raise BadRequest(f"{where}.tool_calls[{number}]: `arguments` must be a JSON object", param="messages")
            parts.append(
                ToolUsePart(id=str(call.get("id") or f"call_{index}_{number}"), name=function["name"], arguments=parsed)
            )
        return Message(role=Role.ASSISTANT, parts=tuple(parts))
    raise BadRequest(f"{where}: unsupported role {role!r} (system, developer, user, assistant, tool)", param="messages")


def _tool(raw: Any, index: int) -> ToolDefinition:
    where = f"tools[{index}]"
    if not isinstance(raw, dict) or raw.get("type") != "function" or not isinstance(raw.get("function"), dict):
        raise BadRequest(
            f"{where}: only {{'type': 'function', 'function': {{...}}}} tools are supported", param="tools"
        )
    function = raw["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}: the function needs a `name`", param="tools")
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}: `parameters` must be a JSON schema object", param="tools")
    strict = function.get("strict")
    return ToolDefinition(
        name=name,
        description=str(function.get("description") or ""),
        parameters=parameters,
        strict=strict if isinstance(strict, bool) else None,
    )


def _tool_choice(raw: Any) -> str | None:
    if raw is None:
        return None
    if raw in ("auto", "none", "required"):
        return str(raw)
    if isinstance(raw, dict) and raw.get("type") == "function":
        function = raw.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return str(function["name"])
    raise BadRequest(
        '`tool_choice` must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}',
        param="tool_choice",
    )


def _response_format(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = raw.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise BadRequest(
                "`response_format.json_schema.schema` must be a JSON schema object", param="response_format"
            )
        name = spec.get("name") if isinstance(spec, dict) else None
        if isinstance(name, str) and name and "title" not in schema:
            schema = {**schema, "title": name}
        return schema
    raise BadRequest("`response_format.type` must be text, json_object or json_schema", param="response_format")
