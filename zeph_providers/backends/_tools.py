"""Tool-call fragments -> argument deltas and complete tool calls: one accumulator for every backend.

A call arrives whole (Ollama, a non-streamed reply) or as fragments keyed by an index (OpenAI's
`tool_calls[].index`, Claude's content block index); servers that omit OpenAI's index start a new
call when a new id arrives. Arguments are JSON text fragments or a ready object; a call without
an id gets a stable generated one (same inputs, same id, so `chat()` equals a stream's response).

Deltas (`ToolCallDeltaChunk`) come out of the same place, so every backend streams them the same
way: `add()` returns the delta for its fragment and `finish()` the closing chunks of a call.

- The delta's `index` is the call's position among this reply's calls, in the order they start
  (0-based). The wire's keys are not positions (OpenAI may start at any index, Claude counts
  content blocks, text included), so each key is mapped to a position when its call opens.
- A call opens when its name is known: its first delta carries the name (and the id when the
  API sent one; a whole call without an id carries the stable id it will get). Argument text that
  arrived before the name is held and sent in that first delta. Later deltas carry argument text
  as received (a server that streams the name in pieces sends the rest in `name`; an id that
  arrives late rides on the next delta).
- A whole object (`arguments` a dict) is sent as one delta of `json.dumps` of it, whose
  `json.loads` is the object again. An empty object sends no text (Claude opens every tool block
  with `input: {}` and streams the real arguments after it).
- When a call ends and the text sent so far is blank (a tool without arguments), `finish()` sends
  a closing delta of `{}`, so the deltas of every call concatenate to JSON text whose
  `json.loads` equals `ToolCall.arguments`.
- A `silent` call (Claude's synthetic structured-output tool, which is the reply's text, not a
  tool call) takes no position and sends no deltas.
- `complete()` / `finish()` return calls in position order: a stream's k-th `ToolUseChunk` is the
  call whose deltas have index k.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from zeph_providers.backends._convert import stable_tool_call_id
from zeph_providers.backends._wire import count, loads
from zeph_providers.errors import BadResponseError
from zeph_providers.types import ToolCall, ToolCallDeltaChunk, ToolUseChunk

__all__ = ["ToolCallAccumulator", "arguments_text", "parse_arguments"]


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


def arguments_text(arguments: dict[str, Any]) -> str:
    """A whole arguments object as the JSON text a delta carries (`json.loads` gives it back)."""
    return json.dumps(arguments, ensure_ascii=False, default=str)


@dataclass
class _Pending:
    id: str | None = None
    name: str = ""
    fragments: list[str] = field(default_factory=list)
    whole: dict[str, Any] | None = None
    silent: bool = False
    position: int | None = None
    """Set when the call opens (its first delta); None while its name is unknown."""
    sent_id: bool = False
    sent_name: int = 0
    """How much of `name` the deltas have carried."""
    held: list[str] = field(default_factory=list)
    """Argument text not yet sent (it arrived before the name)."""
    sent_text: bool = False
    """Whether the deltas have carried any non-blank argument text."""


class ToolCallAccumulator:
    """Collects fragments by index; `add()` returns each fragment's delta, `finish()` the calls."""

    def __init__(self, *, provider: str | None, id_seed: tuple[object, ...] = ()) -> None:
        self._provider = provider
        self._calls: dict[int, _Pending] = {}
        self._last = -1
        self._positions = 0
        self.id_seed = id_seed
        """Prefix of the seed for generated ids (e.g. the response id)."""

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(
        self, index: Any, call_id: Any = None, name: Any = None, arguments: Any = None, *, silent: bool = False
    ) -> list[ToolCallDeltaChunk]:
        """One fragment; returns its delta (none when it says nothing new, or the call is silent).

        `index` None: the last call, or a new one when a new id arrives. `silent` (on a call's
        first fragment) keeps the call out of the deltas and the positions.
        """
        if index is None:
            index = self._last
            if call_id and (index < 0 or self._calls[index].id not in (None, call_id)):
                index += 1
            index = max(index, 0)
        index = count(index, "a tool call's index", provider=self._provider)
        pending = self._calls.get(index)
        if pending is None:
            pending = self._calls[index] = _Pending(silent=silent)
        self._last = index
        if call_id:
            pending.id = str(call_id)
        if name:
            name = str(name)
            pending.name = name if not pending.name or pending.name == name else pending.name + name
        text = ""
        if isinstance(arguments, dict):
            pending.whole = dict(arguments)
            text = arguments_text(pending.whole) if pending.whole else ""
        elif arguments is not None:
            if not isinstance(arguments, str):
                raise BadResponseError(
                    f"tool call #{index} arguments are neither JSON text nor an object", provider=self._provider
                )
            pending.fragments.append(arguments)
            text = arguments
        if pending.silent:
            return []
        if text:
            pending.held.append(text)
        return self._delta(index, pending)

    def _delta(self, index: int, pending: _Pending) -> list[ToolCallDeltaChunk]:
        """What the call has that its deltas have not carried yet, as one delta (if anything)."""
        if not pending.name:
            return []  # not open yet: a delta must name its call first
        first = pending.position is None
        if first:
            pending.position = self._positions
            self._positions += 1
            if pending.id is None and pending.whole is not None and not "".join(pending.fragments).strip():
                pending.id = self._generated_id(index, pending)  # a whole call: its id is known now
        call_id = pending.id if pending.id and not pending.sent_id else ""
        name = pending.name[pending.sent_name :]
        text = "".join(pending.held)
        if not (first or call_id or name or text):
            return []
        pending.held.clear()
        pending.sent_id = pending.sent_id or bool(call_id)
        pending.sent_name = len(pending.name)
        pending.sent_text = pending.sent_text or bool(text.strip())
        assert pending.position is not None
        return [ToolCallDeltaChunk(index=pending.position, id=call_id, name=name, arguments=text)]

    def _generated_id(self, index: int, pending: _Pending) -> str:
        raw = "".join(pending.fragments)
        if raw.strip() or pending.whole is None:
            seed_text = raw
        else:
            seed_text = json.dumps(pending.whole, sort_keys=True, ensure_ascii=False, default=str)
        return stable_tool_call_id(*self.id_seed, index, pending.name, seed_text)

    def _order(self, index: int | None) -> list[int]:
        if index is not None:
            return [index] if index in self._calls else []

        def key(i: int) -> tuple[int, int]:
            position = self._calls[i].position
            return (0 if position is not None else 1, position if position is not None else i)

        return sorted(self._calls, key=key)

    def _take(self, i: int) -> tuple[ToolCall, _Pending] | None:
        pending = self._calls.pop(i)
        raw = "".join(pending.fragments)
        if not pending.name:
            if pending.id is None and not raw.strip() and not pending.whole:
                return None
            raise BadResponseError(f"tool call #{i} arrived without a function name", provider=self._provider)
        if raw.strip() or pending.whole is None:
            arguments = parse_arguments(raw, provider=self._provider, tool=pending.name)
        else:
            arguments = pending.whole
        call_id = pending.id or self._generated_id(i, pending)
        return ToolCall(id=call_id, name=pending.name, arguments=arguments), pending

    def complete(self, index: int | None = None) -> list[ToolCall]:
        """The calls held (or the one at `index`), removed from the accumulator, in position order.

        An empty placeholder (no id, no name, no arguments) is not a call and is dropped.
        No closing deltas: for a silent call, or a caller that streams no deltas.
        """
        out: list[ToolCall] = []
        for i in self._order(index):
            taken = self._take(i)
            if taken is not None:
                out.append(taken[0])
        return out

    def finish(self, index: int | None = None) -> list[ToolCallDeltaChunk | ToolUseChunk]:
        """`complete()` as stream chunks: each call's last delta (when one is due), then its `ToolUseChunk`.

        A silent call gives no chunks (its caller handles it through `complete()`).
        """
        out: list[ToolCallDeltaChunk | ToolUseChunk] = []
        for i in self._order(index):
            pending = self._calls[i]
            if pending.silent:
                self._take(i)
                continue
            if pending.name:
                if not pending.sent_text and not "".join(pending.held).strip():
                    pending.held.append("{}")  # a call without arguments: its deltas still spell JSON
                out.extend(self._delta(i, pending))
            taken = self._take(i)
            if taken is not None:
                out.append(ToolUseChunk(tool_call=taken[0]))
        return out
