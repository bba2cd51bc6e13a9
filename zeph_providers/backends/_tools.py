"""Tool-call fragments -> complete tool calls: one accumulator for OpenAI, Claude and Ollama.

A call arrives whole (Ollama, a non-streamed reply) or as fragments keyed by an index (OpenAI's
`tool_calls[].index`, Claude's content block index); servers that omit OpenAI's index start a new
call when a new id arrives. Arguments are JSON text fragments or a ready object; a call without
an id gets a stable generated one (same inputs, same id, so `chat()` equals a stream's response).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from zeph_providers.backends._convert import stable_tool_call_id
from zeph_providers.backends._wire import count, loads
from zeph_providers.errors import BadResponseError
from zeph_providers.types import ToolCall

__all__ = ["ToolCallAccumulator", "parse_arguments"]


def parse_arguments(raw: str, *, provider: str | None, tool: str) -> dict[str, Any]:
    """A tool call's accumulated JSON argument text -> dict, or a BadResponseError."""
    if not raw.strip():
        return {}
    try:
        value = loads(raw, provider=provider)
    except BadResponseError as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise BadResponseError(f"tool call {tool!r} has invalid JSON arguments: {cause}", provider=provider) from exc
    if not isinstance(value, dict):
        raise BadResponseError(f"tool call {tool!r} arguments are not a JSON object", provider=provider)
    return value


@dataclass
class _Pending:
    id: str | None = None
    name: str = ""
    fragments: list[str] = field(default_factory=list)
    whole: dict[str, Any] | None = None


class ToolCallAccumulator:
    """Collects fragments by index; `complete()` turns what it holds into tool calls, in index order."""

    def __init__(self, *, provider: str | None, id_seed: tuple[object, ...] = ()) -> None:
        self._provider = provider
        self._calls: dict[int, _Pending] = {}
        self._last = -1
        self.id_seed = id_seed
        """Prefix of the seed for generated ids (e.g. the response id)."""

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, index: Any, call_id: Any = None, name: Any = None, arguments: Any = None) -> int:
        """One fragment. `index` None: the last call, or a new one when a new id arrives."""
        if index is None:
            index = self._last
            if call_id and (index < 0 or self._calls[index].id not in (None, call_id)):
                index += 1
            index = max(index, 0)
        index = count(index, "a tool call's index", provider=self._provider)
        pending = self._calls.setdefault(index, _Pending())
        self._last = index
        if call_id:
            pending.id = str(call_id)
        if name:
            name = str(name)
            pending.name = name if not pending.name or pending.name == name else pending.name + name
        if isinstance(arguments, dict):
            pending.whole = dict(arguments)
        elif arguments is not None:
            if not isinstance(arguments, str):
                raise BadResponseError(
                    f"tool call #{index} arguments are neither JSON text nor an object", provider=self._provider
                )
            pending.fragments.append(arguments)
        return int(index)

    def complete(self, index: int | None = None) -> list[ToolCall]:
        """The calls held (or the one at `index`), removed from the accumulator.

        An empty placeholder (no id, no name, no arguments) is not a call and is dropped.
        """
        indexes = sorted(self._calls) if index is None else [index] if index in self._calls else []
        out: list[ToolCall] = []
        for i in indexes:
            pending = self._calls.pop(i)
            raw = "".join(pending.fragments)
            if not pending.name:
                if pending.id is None and not raw.strip() and not pending.whole:
                    continue
                raise BadResponseError(f"tool call #{i} arrived without a function name", provider=self._provider)
            if raw.strip() or pending.whole is None:
                arguments = parse_arguments(raw, provider=self._provider, tool=pending.name)
                seed_text = raw
            else:
                arguments = pending.whole
                seed_text = json.dumps(arguments, sort_keys=True, ensure_ascii=False, default=str)
            call_id = pending.id or stable_tool_call_id(*self.id_seed, i, pending.name, seed_text)
            out.append(ToolCall(id=call_id, name=pending.name, arguments=arguments))
        return out
