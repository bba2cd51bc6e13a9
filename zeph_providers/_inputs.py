"""The one place where what a caller passes as `messages` becomes a list of `Message`s.

`chat()`, `chat_stream()` (async and blocking, routers included) accept a `MessageInput`:

- a `str`: one user message;
- a `Message`;
- an OpenAI-style dict: `{"role": "system" | "developer" | "user" | "assistant" | "tool",
  "content": ...}` where content is a string, None (an assistant turn with only tool calls) or a
  list of content parts (`{"type": "text", "text": ...}`, `{"type": "image_url", "image_url":
  {"url": "data:image/png;base64,..."}}`, our own `Part` objects, plain strings); an assistant's
  `tool_calls` (`[{"id", "type": "function", "function": {"name", "arguments"}}]`, arguments a JSON
  object as text or a dict) become `ToolUsePart`s, a `role: "tool"` message with `tool_call_id` a
  `ToolResultPart`. "developer" is OpenAI's newer name for "system". A dict in our own JSON shape
  (`{"role": ..., "parts": [...]}`, `Message.model_dump()`) is read back as it is;
- a list (or any iterable but a str / bytes / dict) mixing `Message`s and such dicts.

Decisions:
- Anything else is an `InvalidRequestError` naming the provider, the position and what is accepted;
  never an `AttributeError` or pydantic `ValidationError`.
- Nothing is dropped silently: an unknown key or part type is refused. Keys whose value is None or
  empty (`"refusal": None`, `"tool_calls": []`, as SDK objects' `model_dump()` gives) are ignored,
  they say nothing. `name` (a participant name) is refused: no backend here sends it.
- A string inside a list is refused (is it a user turn? a system prompt?): wrap it in
  `Message.user()` or a dict. Only a bare string means "one user message".
- Image URLs must be `data:` URLs (no backend here fetches an http URL for you).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from zeph_providers.errors import InvalidRequestError, clip
from zeph_providers.types import (
    PART_TYPES,
    ImagePart,
    Message,
    Part,
    Role,
    TextPart,
    ToolResultPart,
    ToolUsePart,
)

__all__ = ["ACCEPTED", "messages_from", "texts_from"]

ACCEPTED = (
    "a str (one user message), a Message, an OpenAI-style dict ({'role': 'user', 'content': '...'}), "
    "or a list of Messages and such dicts"
)

_ROLES = {
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "user": Role.USER,
    "assistant": Role.ASSISTANT,
    "tool": Role.TOOL,
}
_KEYS = {"role", "content", "tool_calls", "tool_call_id"}


class _Bad(Exception):
    """A problem inside one message; `messages_from` adds where and raises the typed error."""


def _show(value: object) -> str:
    return f"{type(value).__name__} {clip(repr(value), 80)}"


def messages_from(value: object, *, provider: str | None = None) -> list[Message]:
    """`value` (a `MessageInput`) as a list of messages; `InvalidRequestError` for anything else."""
    if isinstance(value, Message):
        return [value]
    if isinstance(value, str):
        return [Message.user(value)]
    if isinstance(value, Mapping):
        return [_one(value, "messages", provider)]
    if isinstance(value, bytes | bytearray) or not isinstance(value, Iterable):
        raise InvalidRequestError(f"messages must be {ACCEPTED}; got {_show(value)}", provider=provider)
    out: list[Message] = []
    for index, item in enumerate(value):
        where = f"messages[{index}]"
        if isinstance(item, Message):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(_one(item, where, provider))
        elif isinstance(item, str):
            raise InvalidRequestError(
                f"{where} is a str: inside a list, say whose turn it is with Message.user(...) or "
                f"{{'role': 'user', 'content': ...}} (a bare str, not in a list, is one user message)",
                provider=provider,
            )
        else:
            raise InvalidRequestError(
                f"{where} must be a Message or an OpenAI-style dict; got {_show(item)} (messages may be {ACCEPTED})",
                provider=provider,
            )
    return out


def texts_from(value: object, *, provider: str | None = None) -> list[str]:
    """`embed_batch`'s texts: a list (any iterable but a str) of str, else `InvalidRequestError`."""
    if isinstance(value, str | bytes | bytearray | Mapping) or not isinstance(value, Iterable):
        hint = " (for one text, use embed(text))" if isinstance(value, str) else ""
        raise InvalidRequestError(f"embed_batch() takes a list of str; got {_show(value)}{hint}", provider=provider)
    texts = list(value)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidRequestError(f"texts[{index}] must be a str; got {_show(text)}", provider=provider)
    return texts


def _one(data: Mapping[Any, Any], where: str, provider: str | None) -> Message:
    try:
        return _message(data)
    except _Bad as exc:
        raise InvalidRequestError(f"{where}: {exc}", provider=provider) from None


def _message(data: Mapping[Any, Any]) -> Message:
    role_name = data.get("role")
    if not isinstance(role_name, str) or role_name not in _ROLES:
        raise _Bad(f"'role' must be one of {', '.join(map(repr, _ROLES))}; got {_show(role_name)}")
    if "parts" in data:  # our own JSON shape (Message.model_dump())
        try:
            return Message.model_validate(dict(data))
        except ValidationError as exc:
            raise _Bad(f"not a valid Message: {clip(str(exc), 300)}") from None
    extra = sorted(str(k) for k, v in data.items() if k not in _KEYS and v not in (None, [], {}, ""))
    if extra:
        raise _Bad(f"unsupported key(s) {', '.join(map(repr, extra))}; a message dict takes {', '.join(sorted(_KEYS))}")
    role = _ROLES[role_name]
    content = data.get("content")
    calls = data.get("tool_calls") or []
    call_id = data.get("tool_call_id")
    if calls and role is not Role.ASSISTANT:
        raise _Bad("only an assistant message has 'tool_calls'")
    if role is Role.TOOL:
        if not isinstance(call_id, str) or not call_id:
            raise _Bad("a 'tool' message needs 'tool_call_id' (the id of the call it answers)")
        text = "".join(p.text if isinstance(p, TextPart) else _not_text(p) for p in _parts(content))
        return Message(role=role, parts=(ToolResultPart(tool_call_id=call_id, content=text),))
    if call_id is not None:
        raise _Bad("only a 'tool' message has 'tool_call_id'")
    parts = _parts(content)
    if not isinstance(calls, list):
        raise _Bad(f"'tool_calls' must be a list; got {_show(calls)}")
    parts.extend(_tool_call(call, i) for i, call in enumerate(calls))
    return Message(role=role, parts=tuple(parts))


def _not_text(part: Part) -> str:
    raise _Bad(f"a 'tool' message's content is text; got a {part.type} part")


def _parts(content: object) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(text=content)] if content else []
    if not isinstance(content, list | tuple):
        raise _Bad(f"'content' must be a str, None or a list of content parts; got {_show(content)}")
    return [_part(item, i) for i, item in enumerate(content)]


def _part(item: object, index: int) -> Part:
    where = f"content[{index}]"
    if isinstance(item, str):
        return TextPart(text=item)
    if isinstance(item, PART_TYPES):
        return item
    if not isinstance(item, Mapping):
        raise _Bad(f"{where} must be a content-part dict or a Part; got {_show(item)}")
    kind = item.get("type")
    if kind == "text":
        text = item.get("text")
        if not isinstance(text, str):
            raise _Bad(f"{where}: a text part needs 'text' (a str); got {_show(text)}")
        _no_extra(item, {"type", "text"}, where)
        return TextPart(text=text)
    if kind == "image_url":
        _no_extra(item, {"type", "image_url"}, where)
        return _image(item.get("image_url"), where)
    raise _Bad(f"{where}: unsupported content part type {_show(kind)}; use 'text' or 'image_url' (a data: URL)")


def _no_extra(item: Mapping[Any, Any], allowed: set[str], where: str) -> None:
    extra = sorted(str(k) for k, v in item.items() if k not in allowed and v is not None)
    if extra:
        raise _Bad(f"{where}: unsupported key(s) {', '.join(map(repr, extra))}")


def _image(spec: object, where: str) -> ImagePart:
    if isinstance(spec, Mapping):
        detail = spec.get("detail")
        if detail not in (None, "auto"):
            raise _Bad(f"{where}: image 'detail' {detail!r} is not supported (leave it out, or 'auto')")
        _no_extra(spec, {"url", "detail"}, where)
        spec = spec.get("url")
    if not isinstance(spec, str) or not spec.startswith("data:"):
        shown = _show(spec) if not isinstance(spec, str) else repr(clip(spec, 60))
        raise _Bad(f"{where}: 'image_url' must be a data: URL (data:image/png;base64,...); got {shown}")
    header, sep, payload = spec[5:].partition(",")
    mime, _, encoding = header.partition(";")
    if not sep or encoding != "base64" or not mime.startswith("image/"):
        raise _Bad(f"{where}: 'image_url' must be a base64 image data URL (data:image/png;base64,...)")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _Bad(f"{where}: the image data URL is not valid base64") from None
    return ImagePart(data=data, mime_type=mime)


def _tool_call(call: object, index: int) -> ToolUsePart:
    where = f"tool_calls[{index}]"
    if not isinstance(call, Mapping):
        raise _Bad(f"{where} must be a dict {{'id', 'type': 'function', 'function': {{'name', 'arguments'}}}}")
    if call.get("type", "function") != "function":
        raise _Bad(f"{where}: only 'function' tool calls are supported; got {_show(call.get('type'))}")
    function = call.get("function")
    call_id = call.get("id")
    if not isinstance(function, Mapping) or not isinstance(call_id, str) or not call_id:
        raise _Bad(f"{where} needs 'id' (a str) and 'function' ({{'name', 'arguments'}})")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise _Bad(f"{where}: 'function.name' must be a non-empty str")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise _Bad(f"{where}: 'function.arguments' is not valid JSON: {clip(arguments, 80)!r}") from None
    if not isinstance(arguments, dict):
        raise _Bad(f"{where}: 'function.arguments' must be a JSON object; got {_show(arguments)}")
    return ToolUsePart(id=call_id, name=name, arguments=arguments)
