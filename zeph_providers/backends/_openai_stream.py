"""The Chat Completions stream on the wire: its running state and its SSE body -> parsed payloads.

Split from `openai.py` (the provider and the chunk translator). `sse_payloads` mirrors the SDK's
stream without building an SDK model per chunk: `[DONE]` ends it (the rest is drained, bounded,
so the connection can be reused), an `error` object in the data (or an `event: error`) raises
`openai.APIError` (the provider types it by status / type), transport timeouts / failures raise
`APITimeoutError` / `APIConnectionError`, as the SDK's own stream does.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai

from zeph_providers.backends._convert import iter_sse
from zeph_providers.backends._tools import ToolCallAccumulator
from zeph_providers.backends._wire import drain, loads
from zeph_providers.types import Usage

__all__ = ["StreamState", "sse_payloads"]


@dataclass
class StreamState:
    """One reply's state while its chunks are translated (a stream, or the one replayed chunk)."""

    provider: str
    model: str = ""
    finish: str | None = None
    usage: Usage | None = None
    calls: ToolCallAccumulator = field(init=False)
    events: int = 0
    refused: bool = False
    """A `refusal` arrived: the reply finishes with "refusal"."""
    done: bool = False
    """`data: [DONE]` arrived: the stream is complete even without a finish_reason."""

    def __post_init__(self) -> None:
        self.calls = ToolCallAccumulator(provider=self.provider, id_seed=("",))

    @property
    def response_id(self) -> str:
        return str(self.calls.id_seed[0])


async def sse_payloads(response: httpx2.Response, state: StreamState, provider: str) -> AsyncIterator[Any]:
    """The raw SSE body -> each `data:` payload parsed with `json`; `[DONE]` sets `state.done`."""
    body = response.aiter_bytes()
    events = iter_sse(body)
    try:
        async for event, data in events:
            if data.startswith("[DONE]"):
                state.done = True
                break
            if not data and event is None:
                continue  # an empty event (a lone `id:` / `retry:`): nothing to parse
            value = loads(data, provider=provider, what="stream chunk")
            if isinstance(value, dict) and value.get("error"):
                raise openai.APIError("error in the stream", request=response.request, body=value["error"])
            if event == "error":
                raise openai.APIError("error in the stream", request=response.request, body=value)
            yield value
        else:
            return
    except httpx2.TimeoutException as exc:
        raise openai.APITimeoutError(request=response.request) from exc
    except (httpx2.RequestError, ssl.SSLError) as exc:
        raise openai.APIConnectionError(request=response.request) from exc
    finally:
        await events.aclose()
    await drain(body)
