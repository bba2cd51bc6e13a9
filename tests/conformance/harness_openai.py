"""The OpenAI backend served through the conformance scenarios.

Each scenario becomes a real Chat Completions wire reply: `data: {chat.completion.chunk}` SSE events
ending in `data: [DONE]`, error bodies shaped `{"error": {"message", "type", "param", "code"}}`,
`Retry-After` headers, and broken streams that raise `httpx2.ReadError` mid-body, all served by an
`httpx2.MockTransport` behind the official SDK.

A request without `"stream": true` (what `chat()` sends) gets what the API answers then: the same
reply as one `chat.completion` object (`non_streamed()` folds the scripted events into it, as the
server would have built it). A scripted stream that breaks, or is malformed, gives a body that
breaks, or is malformed, the same way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import httpx2

from tests.conformance.scenarios import (
    BrokenStream,
    ErrorReply,
    Scenario,
    Served,
    TextReply,
    ToolReply,
    split_fragments,
)
from tests.fakes.openai import DONE, chunk, error_body, sse, usage_chunk
from zeph_providers.backends.openai import OpenAIProvider
from zeph_providers.config import OpenAIConfig
from zeph_providers.protocol import LlmProvider
from zeph_providers.retry import RetryPolicy
from zeph_providers.types import FinishReason

MODEL = "gpt-4o-mini"
SERVED_MODEL = "gpt-4o-mini-2024-07-18"
TEST_KEY = "sk-conformance-test-key-0123456789"

_FINISH: dict[FinishReason, str] = {
    "stop": "stop",
    "length": "length",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
}


# ----- real Chat Completions payload shapes (builders in tests.fakes.openai) ---------------


def text_events(
    pieces: Iterable[str],
    *,
    thinking: str = "",
    finish: str = "stop",
    prompt: int = 11,
    completion: int = 4,
    cached: int = 0,
) -> list[bytes]:
    events = [sse(chunk({"role": "assistant", "content": "", "refusal": None}))]
    if thinking:
        events.extend(sse(chunk({"reasoning_content": part})) for part in split_fragments(thinking, 2))
    events.extend(sse(chunk({"content": piece})) for piece in pieces)
    events.append(sse(chunk(finish=finish)))
    events.append(sse(usage_chunk(prompt, completion, cached=cached)))
    events.append(DONE)
    return events


def tool_events(reply: ToolReply) -> list[bytes]:
    events = [sse(chunk({"role": "assistant", "content": None}))]
    if reply.text_before:
        events.append(sse(chunk({"content": reply.text_before})))
    for index, call in enumerate(reply.calls):
        opening = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        events.append(sse(chunk({"tool_calls": [opening]})))
        for fragment in split_fragments(json.dumps(call.arguments), reply.fragments):
            events.append(sse(chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})))
    events.append(sse(chunk(finish="tool_calls")))
    events.append(sse(usage_chunk(reply.input_tokens, reply.output_tokens)))
    events.append(DONE)
    return events


class EventStream(httpx2.AsyncByteStream):
    """A response body produced by an async generator (it may sleep, or raise mid-way)."""

    def __init__(self, source: Callable[[], AsyncIterator[bytes]]) -> None:
        self._source = source

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._source():
            yield part


def sse_response(events: list[bytes], *, fail_after: int | None = None) -> httpx2.Response:
    """200 text/event-stream; with `fail_after`, the connection resets after that many events."""

    async def body() -> AsyncIterator[bytes]:
        for sent, event in enumerate(events):
            if fail_after is not None and sent == fail_after:
                raise httpx2.ReadError("connection reset by peer")
            yield event
        if fail_after is not None:
            raise httpx2.ReadError("connection reset by peer")

    return httpx2.Response(
        200,
        headers={"content-type": "text/event-stream", "x-request-id": "req_conf"},
        stream=EventStream(body),
    )


def scenario_response(scenario: Scenario) -> httpx2.Response:
    if isinstance(scenario, TextReply):
        return sse_response(
            text_events(
                scenario.chunks,
                thinking=scenario.thinking,
                finish=_FINISH[scenario.finish],
                prompt=scenario.input_tokens,
                completion=scenario.output_tokens,
            )
        )
    if isinstance(scenario, ToolReply):
        return sse_response(tool_events(scenario))
    if isinstance(scenario, ErrorReply):
        headers = {"x-request-id": "req_err"}
        if scenario.retry_after is not None:
            headers["retry-after"] = f"{scenario.retry_after:g}"
        return httpx2.Response(scenario.status, json=error_body(scenario.message, scenario.error_type), headers=headers)
    if isinstance(scenario, BrokenStream):
        events = [sse(chunk({"role": "assistant", "content": ""}))]
        events.extend(sse(chunk({"content": piece})) for piece in scenario.chunks)
        return sse_response(events, fail_after=len(events))
    raise TypeError(scenario)


# ----- non-streamed replies ------------------------------------------------------------------


def _sse_data(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    out: list[str] = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].lstrip() for line in block.split("\n") if line.startswith("data:")]
        if data:
            out.append("\n".join(data))
    return out


def fold_completion(raw: bytes) -> dict[str, Any]:
    """A `chat.completion.chunk` SSE body -> the `chat.completion` object the API returns unstreamed.

    Raises ValueError (or a JSON error) for a body no complete reply can be built from: cut before
    its finish_reason, or carrying an unparseable event. An `{"error": ...}` event becomes the body.
    """
    completion: dict[str, Any] = {"id": "", "object": "chat.completion", "created": 0, "model": "", "choices": []}
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    for data in _sse_data(raw):
        if data == "[DONE]":
            break
        event = json.loads(data)
        if "error" in event:
            return {"error": event["error"]}
        for key in ("id", "created", "model", "system_fingerprint"):
            if event.get(key) and not completion.get(key):
                completion[key] = event[key]
        if event.get("usage"):
            completion["usage"] = event["usage"]
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            for key in ("content", "refusal", "reasoning_content", "reasoning"):
                if delta.get(key):
                    message[key] = (message.get(key) or "") + delta[key]
            for position, call in enumerate(delta.get("tool_calls") or ()):
                empty = {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                pending = calls.setdefault(call.get("index", position), empty)
                pending["id"] = call.get("id") or pending["id"]
                function = call.get("function") or {}
                pending["function"]["name"] += function.get("name") or ""
                pending["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    if finish is None:
        raise ValueError("the scripted stream has no finish_reason: no complete reply to return")
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    completion["choices"] = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}]
    return completion


async def non_streamed(response: httpx2.Response, fold: Callable[[bytes], Any]) -> httpx2.Response:
    """The scripted event-stream response as the unstreamed reply a server would give instead.

    Not an event stream (an error, a JSON body): unchanged. A stream that fails mid-way: a body
    that fails the same way after its first bytes. One that cannot be folded: a truncated body.
    """
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return response
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")}
    received = bytearray()
    failure: BaseException | None = None
    try:
        async for part in response.stream:  # type: ignore[union-attr]
            received.extend(part)
    except Exception as exc:
        failure = exc
    try:
        body = json.dumps(fold(bytes(received))).encode()
    except (ValueError, TypeError, KeyError, AttributeError):  # malformed events: a malformed body
        body = b'{"id": "truncated", "choices": [{"index": 0, "message": {"content": "'
    if failure is not None:
        broken = failure

        async def breaks() -> AsyncIterator[bytes]:
            yield body[: len(body) // 2]
            raise broken

        return httpx2.Response(
            response.status_code, headers={**headers, "content-type": "application/json"}, stream=EventStream(breaks)
        )
    return httpx2.Response(response.status_code, headers={**headers, "content-type": "application/json"}, content=body)


def wants_stream(request: httpx2.Request) -> bool:
    try:
        return json.loads(request.content or b"{}").get("stream") is True
    except (ValueError, AttributeError):
        return False


def answering_unstreamed(
    handler: Callable[[httpx2.Request], Any], fold: Callable[[bytes], Any] = fold_completion
) -> Callable[[httpx2.Request], Any]:
    """Wrap a scripted handler: requests without `stream: true` get `non_streamed()` replies."""

    async def handle(request: httpx2.Request) -> httpx2.Response:
        response = handler(request)
        if hasattr(response, "__await__"):
            response = await response
        if wants_stream(request):
            return response  # type: ignore[no-any-return]
        return await non_streamed(response, fold)

    return handle


class ScriptedServer:
    """Answers the i-th request with the i-th response factory (the last repeats); records bodies."""

    def __init__(self, responders: list[Callable[[httpx2.Request], httpx2.Response]]) -> None:
        self._responders = responders
        self.requests: list[dict[str, Any]] = []
        self.raw: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        index = min(len(self.raw), len(self._responders) - 1)
        self.raw.append(request)
        self.requests.append(json.loads(request.content or b"{}"))
        return self._responders[index](request)

    @classmethod
    def of(cls, scenarios: list[Scenario]) -> ScriptedServer:
        return cls([lambda _req, s=s: scenario_response(s) for s in scenarios])  # type: ignore[misc]


def make_provider(
    handler: Callable[[httpx2.Request], Any],
    *,
    max_retries: int = 0,
    base_delay: float = 0.01,
    **config: Any,
) -> OpenAIProvider:
    settings: dict[str, Any] = {
        "name": "openai-conf",
        "model": MODEL,
        "api_key": TEST_KEY,
        "base_url": "https://api.openai.test/v1",
        "max_retries": max_retries,
    }
    settings.update(config)
    transport = httpx2.MockTransport(answering_unstreamed(handler))
    provider = OpenAIProvider(OpenAIConfig(**settings), transport=transport)
    provider.retry_policy = RetryPolicy(max_retries=max_retries, base_delay=base_delay)
    return provider


class OpenAIHarness:
    name = "openai"
    supports_tools = True
    supports_scripted_errors = True
    supports_retries = True

    @asynccontextmanager
    async def provider(
        self, scenarios: list[Scenario], *, max_retries: int = 0
    ) -> AsyncIterator[tuple[LlmProvider, Served]]:
        server = ScriptedServer.of(scenarios)
        provider = make_provider(server, max_retries=max_retries)
        served = Served(requests=server.requests)
        try:
            yield provider, served
        finally:
            await provider.aclose()


HARNESS = OpenAIHarness()
