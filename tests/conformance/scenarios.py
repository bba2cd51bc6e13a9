"""Backend-neutral scripted replies; each harness serves them in its own API's wire format.

A harness turns a list of scenarios into a provider whose server answers the i-th request with
the i-th scenario (the last one repeats). Remote harnesses do it with real payload shapes over
a mock transport; the mock harness with `MockReply`s; the local harness skips what a local model
cannot script.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from zeph_providers.protocol import LlmProvider
from zeph_providers.types import FinishReason


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
