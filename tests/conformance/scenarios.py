"""Backend-neutral scripted replies; each harness serves them in its own API's wire format.

A harness turns a list of scenarios into a provider whose server answers the i-th request with
the i-th scenario (the last one repeats). Remote harnesses do it with real payload shapes over
a mock transport; the mock harness with `MockReply`s; the local harness skips what a local model
cannot script.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from zeph_providers.protocol import LlmProvider
from zeph_providers.types import FinishReason, StreamChunk, ToolCall, ToolCallDeltaChunk, ToolUseChunk


@dataclass(frozen=True)
class TextReply:
    """A plain answer streamed as `chunks`; `finish` is the neutral finish reason to produce."""

    chunks: tuple[str, ...] = ("Hel", "lo, ", "world", "!")
    input_tokens: int = 11
    output_tokens: int = 4
    finish: FinishReason = "stop"
    thinking: str = ""

    @property
    def text(self) -> str:
        return "".join(self.chunks)


@dataclass(frozen=True)
class ToolCallSpec:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolReply:
    """Tool calls whose JSON arguments arrive split into `fragments` pieces each."""

    calls: tuple[ToolCallSpec, ...] = (ToolCallSpec("call_1", "get_weather", {"city": "Paris", "unit": "celsius"}),)
    text_before: str = ""
    fragments: int = 3
    input_tokens: int = 20
    output_tokens: int = 9


@dataclass(frozen=True)
class ErrorReply:
    status: int
    message: str = "scripted failure"
    retry_after: float | None = None
    error_type: str = ""
    """The API's own error type/code, where it has one (e.g. "context_length_exceeded")."""


@dataclass(frozen=True)
class BrokenStream:
    """Stream `chunks` then drop the connection without finishing the reply."""

    chunks: tuple[str, ...] = ("partial ", "answer")


Scenario = TextReply | ToolReply | ErrorReply | BrokenStream


@dataclass
class Served:
    """What the harness's server saw."""

    requests: list[dict[str, Any]] = field(default_factory=list)


class Harness(Protocol):
    name: str
    supports_tools: bool
    supports_scripted_errors: bool
    supports_retries: bool

    def provider(
        self, scenarios: list[Scenario], *, max_retries: int = 0
    ) -> AbstractAsyncContextManager[tuple[LlmProvider, Served]]: ...


def split_fragments(text: str, pieces: int) -> list[str]:
    """Cut `text` into `pieces` non-empty slices (fewer if it is shorter)."""
    pieces = max(1, min(pieces, len(text)))
    size = -(-len(text) // pieces)
    return [text[i : i + size] for i in range(0, len(text), size)]


async def aiter_list(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


def check_tool_deltas(chunks: Sequence[StreamChunk]) -> list[ToolCall]:
    """The streamed tool-call contract, on one stream's chunks; returns the calls, in stream order.

    The k-th `ToolUseChunk` is the call whose `ToolCallDeltaChunk`s have index k. For every call:
    at least one delta of its index arrives before its `ToolUseChunk` (none after it); the first
    delta names the call (the names of its deltas concatenate to the call's name); a delta's id,
    when it has one, is the call's id; and the argument fragments concatenate to JSON text whose
    `json.loads` equals the call's arguments. No delta has an index without a call. Backend-neutral:
    any harness (the local one included) can run it on a tool scenario's stream.
    """
    calls: list[ToolCall] = []
    deltas: dict[int, list[ToolCallDeltaChunk]] = {}
    for position, chunk in enumerate(chunks):
        if isinstance(chunk, ToolCallDeltaChunk):
            assert chunk.index >= 0, f"chunk {position}: negative delta index {chunk.index}"
            assert chunk.index >= len(calls), (
                f"chunk {position}: a delta for call {chunk.index} after that call's ToolUseChunk"
            )
            deltas.setdefault(chunk.index, []).append(chunk)
        elif isinstance(chunk, ToolUseChunk):
            index = len(calls)
            call = chunk.tool_call
            calls.append(call)
            mine = deltas.get(index, [])
            assert mine, f"ToolUseChunk {index} ({call.name!r}) came with no ToolCallDeltaChunk before it"
            assert mine[0].name, f"the first delta of call {index} does not name its tool"
            assert "".join(d.name for d in mine) == call.name, f"call {index}: delta names != {call.name!r}"
            ids = {d.id for d in mine if d.id}
            assert ids <= {call.id}, f"call {index}: delta ids {ids} != the call's id {call.id!r}"
            text = "".join(d.arguments for d in mine)
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise AssertionError(f"call {index}: the deltas' arguments {text!r} are not JSON ({exc})") from exc
            assert parsed == call.arguments, f"call {index}: deltas give {parsed!r}, the call has {call.arguments!r}"
    extra = sorted(set(deltas) - set(range(len(calls))))
    assert not extra, f"deltas for calls {extra} that never completed"
    return calls
