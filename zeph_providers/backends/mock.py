"""A scripted provider for tests and demos: replies, tool calls, errors and delays on cue.

```python
mock = MockProvider(replies=[MockReply(text="Hi"), MockReply(error=RateLimitError("slow down"))])
await mock.chat([Message.user("hello")])     # -> "Hi"
mock.requests[0].messages                   # what it was sent
```

In a config file, `responses` holds strings (text replies) and tables scripting tool calls:
`responses = [{ tool_calls = [{ name = "get_weather", arguments = { city = "Paris" } }] }, "Sunny."]`
(`zeph_providers.config.models.MockResponse`).

Scripted tool calls stream as a real backend's do: `ToolCallDeltaChunk`s (the name, then the JSON
arguments in `chunk_size` pieces) and then the `ToolUseChunk` carrying the scripted call itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zeph_providers.backends._tools import ToolCallAccumulator, arguments_text
from zeph_providers.base import BaseProvider
from zeph_providers.errors import LlmError
from zeph_providers.options import Capabilities, ChatOptions
from zeph_providers.types import (
    ContentChunk,
    EndChunk,
    FinishReason,
    Message,
    StreamChunk,
    ThinkingChunk,
    ToolCall,
    ToolDefinition,
    ToolUseChunk,
    Usage,
    UsageChunk,
)

if TYPE_CHECKING:
    from zeph_providers.config import MockConfig
    from zeph_providers.config.models import MockResponse
    from zeph_providers.models_info import ModelInfo
    from zeph_providers.registry import Registry

__all__ = ["MockProvider", "MockReply", "MockRequest", "build"]


@dataclass
class MockReply:
    """One scripted reply. `error` is raised after `error_after_chunks` chunks (0: before any)."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    thinking: str = ""
    usage: Usage | None = None
    finish_reason: FinishReason | None = None
    delay_secs: float = 0.0
    error: LlmError | None = None
    error_after_chunks: int = 0


@dataclass
class MockRequest:
    messages: list[Message]
    options: ChatOptions


class MockProvider(BaseProvider):
    """Replays its script in order (the last reply repeats), recording every request."""

    backend = "mock"

    def __init__(
        self,
        name: str = "mock",
        model: str = "mock-1",
        *,
        replies: Sequence[MockReply | str] = (),
        chunk_size: int = 4,
        delay_secs: float = 0.0,
        embedding_dim: int = 8,
        capabilities: Capabilities | None = None,
        max_concurrent: int | None = None,
    ) -> None:
        super().__init__(
            name,
            model,
            capabilities=capabilities
            or Capabilities(
                streaming=True, embeddings=True, tools=True, vision=True, structured_output=True, thinking=True
            ),
            max_concurrent=max_concurrent,
        )
        self._script = [MockReply(text=r) if isinstance(r, str) else r for r in replies]
        self._chunk_size = chunk_size
        self._delay = delay_secs
        self._embedding_dim = embedding_dim
        self._calls = 0
        self.requests: list[MockRequest] = []
        self.chunks_sent = 0
        self.closed = False

    def push(self, *replies: MockReply | str) -> None:
        """Append replies to the script."""
        self._script.extend(MockReply(text=r) if isinstance(r, str) else r for r in replies)

    def _next_reply(self) -> MockReply:
        if not self._script:
            return MockReply(text="Hello from the mock provider.")
        index = min(self._calls, len(self._script) - 1)
        self._calls += 1
        return self._script[index]

    async def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        self.requests.append(MockRequest(messages=messages, options=options))
        reply = self._next_reply()
        chunks: list[StreamChunk] = []
        if reply.thinking:
            chunks.append(ThinkingChunk(text=reply.thinking))
        text = reply.text
        size = self._chunk_size
        chunks.extend(ContentChunk(text=text[i : i + size]) for i in range(0, len(text), size))
        chunks.extend(self._tool_chunks(reply.tool_calls))
        prompt_words = sum(len(m.text.split()) for m in messages)
        usage = reply.usage or Usage(input_tokens=prompt_words, output_tokens=len(text.split()))
        finish = reply.finish_reason or ("tool_use" if reply.tool_calls else "stop")
        delay = reply.delay_secs or self._delay
        for sent, chunk in enumerate(chunks):
            if reply.error is not None and sent == reply.error_after_chunks:
                raise reply.error
            if delay:
                await asyncio.sleep(delay)
            self.chunks_sent += 1
            yield chunk
        if reply.error is not None:
            raise reply.error
        yield UsageChunk(usage=usage)
        yield EndChunk(finish_reason=finish, model=self.model)

    def _tool_chunks(self, calls: Sequence[ToolCall]) -> list[StreamChunk]:
        """Each call as a real stream sends it: its name, its JSON arguments in `chunk_size` pieces
        (`ToolCallDeltaChunk`s, through the accumulator every backend uses), then the whole call."""
        accumulator = ToolCallAccumulator(provider=self.name)
        chunks: list[StreamChunk] = []
        size = max(1, self._chunk_size)
        for index, call in enumerate(calls):
            text = arguments_text(dict(call.arguments))
            chunks.extend(accumulator.add(index, call.id, call.name, ""))
            for start in range(0, len(text), size):
                chunks.extend(accumulator.add(index, None, None, text[start : start + size]))
            closing = accumulator.finish(index)
            # The scripted call itself, not its JSON round trip (a script may hold non-JSON values).
            chunks.extend(ToolUseChunk(tool_call=call) if isinstance(c, ToolUseChunk) else c for c in closing)
        return chunks

    async def list_models(self, *, refresh: bool = False) -> list[ModelInfo]:
        """Its one model."""
        from zeph_providers.models_info import ModelInfo

        return [ModelInfo(id=self.model, provider=self.name)]

    async def count_tokens(self, messages: Sequence[Message], *, tools: Sequence[ToolDefinition] = ()) -> int:
        """Words, as its `usage.input_tokens` counts them."""
        return sum(len(m.text.split()) for m in messages)

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        from zeph_providers.hooks import report_usage

        report_usage(Usage(input_tokens=sum(len(text.split()) for text in texts)))  # words, as chat counts them
        return [self._vector(text) for text in texts]

    def _vector(self, text: str) -> list[float]:
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        raw = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(self._embedding_dim)]
        norm = math.sqrt(sum(v * v for v in raw)) or 1.0
        return [v / norm for v in raw]

    async def aclose(self) -> None:
        self.closed = True


def _scripted(index: int, entry: str | MockResponse) -> MockReply | str:
    """One `responses` entry of the config as a reply (a table's calls get `call_<reply>_<call>` ids)."""
    if isinstance(entry, str):
        return entry
    calls = [
        ToolCall(id=call.id or f"call_{index}_{position}", name=call.name, arguments=dict(call.arguments))
        for position, call in enumerate(entry.tool_calls)
    ]
    return MockReply(text=entry.text, tool_calls=calls, thinking=entry.thinking, finish_reason=entry.finish_reason)


def build(config: MockConfig, registry: Registry) -> MockProvider:
    return MockProvider(
        config.name,
        config.model,
        replies=[_scripted(index, entry) for index, entry in enumerate(config.responses)],
        chunk_size=config.chunk_size,
        delay_secs=config.delay_secs,
        embedding_dim=config.embedding_dim,
        max_concurrent=config.max_concurrent,
    )
