"""Small, API-neutral conversion helpers that several backends share.

Nothing here imports an SDK: every function takes and returns our own types or plain JSON-able
values, so the OpenAI, Claude and Ollama backends can each wrap the result in their API's shape.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

from zeph_providers.types import (
    FinishReason,
    ImagePart,
    ToolDefinition,
    ToolResultPart,
    Usage,
)

__all__ = [
    "function_tools",
    "report_embedding_usage",
    "get_field",
    "iter_sse",
    "image_data_url",
    "json_arguments",
    "map_finish_reason",
    "put_extra_body",
    "schema_name",
    "stable_tool_call_id",
    "strict_json_schema",
    "tool_parameters",
    "tool_result_text",
]


def get_field(obj: Any, name: str, default: Any = None) -> Any:
    """A field of an SDK model or of a plain JSON dict alike; `default` when absent or null."""
    value = obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)
    return default if value is None else value


def image_data_url(part: ImagePart) -> str:
    """`data:<mime>;base64,<data>`: the inline form OpenAI-style APIs take for an image."""
    return f"data:{part.mime_type};base64,{part.base64}"


def tool_parameters(tool: ToolDefinition) -> dict[str, Any]:
    """The tool's parameters as an object JSON schema (`type` and `properties` always present)."""
    schema = dict(tool.parameters or {})
    schema.setdefault("type", "object")
    if schema.get("type") == "object":
        schema.setdefault("properties", {})
    return schema


def function_tools(tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    """Tool definitions in the `{"type": "function", "function": {...}}` shape (OpenAI, Ollama)."""
    return [
        {
            "type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool_parameters(tool)},
        }
        for tool in tools
    ]


def put_extra_body(params: dict[str, Any], extra: Mapping[str, Any], **values: Any) -> None:
    """Set the SDK's `extra_body`: the `values` that are not None, then the caller's `extra={...}`.

    What an SDK's typed arguments no longer take (Claude's sampling values, OpenAI's `top_k`) and
    whatever the caller passes as `extra` travel there; nothing is set when both are empty.
    """
    body = {key: value for key, value in values.items() if value is not None}
    body.update(extra)
    if body:
        params["extra_body"] = body


def json_arguments(arguments: dict[str, Any]) -> str:
    """Tool-call arguments as the compact JSON text OpenAI-style APIs carry in history."""
    return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))


def tool_result_text(part: ToolResultPart) -> str:
    """A tool result as plain text; APIs without an error flag get an `Error:` prefix instead."""
    if part.is_error and not part.content.startswith("Error"):
        return f"Error: {part.content}"
    return part.content


def stable_tool_call_id(*seed: object) -> str:
    """A deterministic id for a tool call a server sent without one (same inputs, same id)."""
    digest = hashlib.sha256("\x1f".join(str(s) for s in seed).encode("utf-8")).hexdigest()
    return f"call_{digest[:24]}"


_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")


def schema_name(name: str, *, default: str = "response") -> str:
    """A name allowed where APIs require `^[A-Za-z0-9_-]{1,64}$` (e.g. a json_schema name)."""
    cleaned = _NAME_BAD.sub("_", name).strip("_")[:64]
    return cleaned or default


def strict_json_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    """A copy usable with strict structured output, or None when strict mode would change meaning.

    Strict mode (OpenAI) needs every object to list all its properties as required and to forbid
    additional properties. A schema whose objects already require every property gets
    `additionalProperties: false` added where it is absent; a schema with an optional property or
    with `additionalProperties` allowed is returned as None (send it non-strict instead).
    """
    result = copy.deepcopy(schema)
    return result if _make_strict(result) else None


_LITERAL_KEYS = frozenset({"default", "const", "enum", "examples", "required"})


def _make_strict(node: Any) -> bool:
    if isinstance(node, list):
        return all(_make_strict(item) for item in node)
    if not isinstance(node, dict):
        return True
    is_object = node.get("type") == "object" or "properties" in node
    if is_object:
        properties = node.get("properties", {})
        if not isinstance(properties, dict):
            return False
        if set(node.get("required", [])) != set(properties):
            return False
        extra = node.get("additionalProperties", False)
        if extra is not False:
            return False
        node["additionalProperties"] = False
    for key, value in node.items():
        if key in ("properties", "$defs", "definitions", "patternProperties"):
            if isinstance(value, dict) and not all(_make_strict(v) for v in value.values()):
                return False
        elif key in _LITERAL_KEYS:
            continue
        elif isinstance(value, dict | list) and not _make_strict(value):
            return False
    return True


_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "eos": "stop",
    "eos_token": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "tool_use": "tool_use",
    "content_filter": "content_filter",
    "refusal": "refusal",  # Claude's stop_reason: the model declined
    "pause_turn": "pause_turn",  # Claude: a long server-tool turn paused; send the reply back to resume
    "model_context_window_exceeded": "length",  # Claude
    "load": "stop",  # Ollama: a request that only loaded / unloaded the model
    "unload": "stop",
}


def map_finish_reason(reason: str | None) -> FinishReason:
    """A server's finish/stop reason (OpenAI's, Claude's or Ollama's) -> ours; anything unknown is "error"."""
    if reason is None:
        return "error"
    return _FINISH.get(reason, "error")


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncGenerator[tuple[str | None, str], None]:
    """Raw SSE body bytes -> `(event, data)` per dispatched event, as the SDKs' own decoders do.

    Lines end at CR, LF or CRLF (only those: U+2028 inside a JSON string is data); `:` comments
    and unknown fields are skipped; several `data:` lines join with newlines; a blank line
    dispatches an event that has an `event`, some data, an `id` or a `retry`; an unterminated
    final event is dropped. `id` and `retry` are read and ignored.
    """
    event: str | None = None
    data: list[str] = []
    has_id = False
    has_retry = False
    pending: list[bytes] = []
    tail_cr = False  # the previous chunk ended in CR: a LF opening this one ends no new line
    async for chunk in chunks:
        if not chunk:
            continue
        if tail_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        tail_cr = False
        if b"\n" not in chunk and b"\r" not in chunk:
            pending.append(chunk)
            continue
        if pending:
            pending.append(chunk)
            chunk = b"".join(pending)
            pending = []
        lines = chunk.splitlines(keepends=True)
        last = lines[-1]
        if not last.endswith((b"\n", b"\r")):
            pending.append(lines.pop())
        elif last.endswith(b"\r"):
            tail_cr = True
        for raw in lines:
            line = raw.rstrip(b"\r\n").decode("utf-8")
            if not line:
                if event is None and not data and not has_id and not has_retry:
                    continue
                yield event, "\n".join(data)
                event, data, has_retry = None, [], False
                continue
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id":
                if "\0" not in value:
                    has_id = True
            elif name == "retry":
                has_retry = value.isdigit()
    if pending:
        b"".join(pending).decode("utf-8")  # a final unterminated line is decoded (and dropped)


def report_embedding_usage(prompt_tokens: Any, *, provider: str) -> None:
    """An embeddings reply's input token count, for the call's cost (`hooks.report_usage`); a server
    that sends none (or garbage) is simply not priced."""
    if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int) or prompt_tokens < 0:
        return
    from zeph_providers.hooks import report_usage

    report_usage(Usage(input_tokens=prompt_tokens))
