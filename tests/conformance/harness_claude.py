"""The Claude backend served through the conformance scenarios.

A fake Anthropic server behind `httpx2.MockTransport` answers `POST /v1/messages` with real
Messages API server-sent events (message_start, content_block_start, ping, content_block_delta,
content_block_stop, message_delta, message_stop: the shapes of Anthropic's streaming docs), error
bodies in Anthropic's `{"type": "error", "error": {...}}` shape with their status and headers, and
broken streams that die with `httpx2.ReadError`. The helpers here are reused by
`tests/backends/test_claude_wire.py`.

A request without `"stream": true` (what `chat()` sends) gets the API's unstreamed answer: the same
reply as one `message` object, folded from the scripted events (`fold_message`); an `error` event
becomes the error status and body the API would have sent; a stream that breaks or is malformed
gives a body that breaks or is malformed the same way (see `harness_openai.non_streamed`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx2
from pydantic import SecretStr

from tests.conformance.scenarios import (
    BrokenStream,
    ErrorReply,
    Scenario,
    Served,
    TextReply,
    ToolReply,
    split_fragments,
)
from tests.fakes.anthropic import (
    block_delta,
    block_start,
    block_stop,
    message_delta,
    message_start,
    message_stop,
    ping,
    text_block,
    thinking_block,
    tool_block,
)
from zeph_providers.backends.claude import ClaudeProvider
from zeph_providers.config import ClaudeConfig
from zeph_providers.protocol import LlmProvider
from zeph_providers.retry import RetryPolicy

TEST_KEY = "sk-ant-api03-conformance-secret-key-0123456789"
MODEL = "claude-sonnet-4-6"
SERVED_MODEL = "claude-sonnet-4-6-20260217"
"""The dated snapshot the fake server names in message_start."""

_NEUTRAL_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_use": "tool_use",
    "content_filter": "refusal",  # Claude has no content_filter: its nearest is `refusal`
    "error": "model_error_unknown_to_the_table",  # an unmapped stop reason is "error"
    "refusal": "refusal",
    "pause_turn": "pause_turn",
}

_STATUS_ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


# ----- SSE building blocks (tests.fakes.anthropic) ------------------------------------------


def text_events(reply: TextReply, *, cache_read: int | None = None, cache_write: int | None = None) -> list[bytes]:
    events = [message_start(input_tokens=reply.input_tokens, cache_read=cache_read, cache_write=cache_write)]
    index = 0
    if reply.thinking:
        events.extend(thinking_block(index, split_fragments(reply.thinking, 3)))
        index += 1
    events.append(block_start(index, {"type": "text", "text": ""}))
    events.append(ping())
    events.extend(block_delta(index, {"type": "text_delta", "text": c}) for c in reply.chunks)
    events.append(block_stop(index))
    events.append(message_delta(_NEUTRAL_TO_STOP[reply.finish], reply.output_tokens))
    events.append(message_stop())
    return events


def tool_events(reply: ToolReply) -> list[bytes]:
    events = [message_start(input_tokens=reply.input_tokens)]
    index = 0
    if reply.text_before:
        events.extend(text_block(index, [reply.text_before]))
        index += 1
    for call in reply.calls:
        events.extend(
            tool_block(index, call.id, call.name, split_fragments(json.dumps(call.arguments), reply.fragments))
        )
        index += 1
    events.append(message_delta("tool_use", reply.output_tokens))
    events.append(message_stop())
    return events


# ----- responses ----------------------------------------------------------------------------


async def _body(events: Sequence[bytes], *, fail: BaseException | None = None) -> AsyncIterator[bytes]:
    for event in events:
        yield event
    if fail is not None:
        raise fail


def sse_response(events: Sequence[bytes], *, fail: BaseException | None = None) -> httpx2.Response:
    """A 200 event stream; `fail` is raised after the events (a broken connection)."""
    return httpx2.Response(
        200,
        headers={"content-type": "text/event-stream; charset=utf-8", "request-id": "req_test"},
        content=_body(events, fail=fail),
    )


def error_response(
    status: int, message: str, *, error_type: str = "", retry_after: float | None = None
) -> httpx2.Response:
    headers = {"content-type": "application/json", "request-id": "req_error"}
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
    body = {
        "type": "error",
        "error": {"type": error_type or _STATUS_ERROR_TYPE.get(status, "api_error"), "message": message},
    }
    return httpx2.Response(status, headers=headers, json=body)


Responder = Scenario | httpx2.Response | Callable[[httpx2.Request], httpx2.Response]


def scenario_response(scenario: Scenario) -> httpx2.Response:
    if isinstance(scenario, TextReply):
        return sse_response(text_events(scenario))
    if isinstance(scenario, ToolReply):
        return sse_response(tool_events(scenario))
    if isinstance(scenario, ErrorReply):
        return error_response(
            scenario.status, scenario.message, error_type=scenario.error_type, retry_after=scenario.retry_after
        )
    if isinstance(scenario, BrokenStream):
        events = [message_start(input_tokens=5), block_start(0, {"type": "text", "text": ""})]
        events.extend(block_delta(0, {"type": "text_delta", "text": c}) for c in scenario.chunks)
        return sse_response(events, fail=httpx2.ReadError("connection reset by peer"))
    raise TypeError(scenario)


_ERROR_TYPE_TO_STATUS = {kind: status for status, kind in reversed(list(_STATUS_ERROR_TYPE.items()))}


class ErrorEventBody(Exception):
    """The scripted stream carries an `error` event: unstreamed, the API answers with that error."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error
        super().__init__(str(error))


def _sse_events(raw: bytes) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        name = ""
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if name or data:
            out.append((name, "\n".join(data)))
    return out


def fold_message(raw: bytes) -> dict[str, Any]:
    """A Messages API event stream -> the `message` object the API returns unstreamed.

    Raises ValueError (a JSON error included) when no complete message can be built (no
    message_stop, an unparseable event), `ErrorEventBody` for an `error` event.
    """
    message: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    stopped = False
    for name, data in _sse_events(raw):
        if name == "ping" or not data:
            continue
        event = json.loads(data)
        kind = event.get("type")
        if kind == "error" or name == "error":
            raise ErrorEventBody(event.get("error") or {})
        if kind == "message_start":
            message = dict(event["message"])
            message["usage"] = dict(message.get("usage") or {})
        elif kind == "content_block_start":
            blocks[event["index"]] = dict(event["content_block"])
        elif kind == "content_block_delta":
            block, delta = blocks[event["index"]], event["delta"]
            if delta.get("type") == "text_delta":
                block["text"] = block.get("text", "") + delta["text"]
            elif delta.get("type") == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta["thinking"]
            elif delta.get("type") == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta.get("type") == "input_json_delta":
                partial[event["index"]] = partial.get(event["index"], "") + delta["partial_json"]
        elif kind == "content_block_stop":
            index = event["index"]
            if index in partial:
                blocks[index]["input"] = json.loads(partial.pop(index)) if partial[index].strip() else {}
        elif kind == "message_delta" and message is not None:
            message.update({k: v for k, v in (event.get("delta") or {}).items()})
            message["usage"].update(event.get("usage") or {})
        elif kind == "message_stop":
            stopped = True
            break
    if message is None or not stopped:
        raise ValueError("the scripted stream has no message_stop: no complete message to return")
    message["content"] = [blocks[index] for index in sorted(blocks)]
    return message


def unstreamed(response: httpx2.Response) -> Any:
    """`harness_openai.non_streamed` for the Messages API (an `error` event -> its error response)."""
    from tests.conformance.harness_openai import non_streamed

    async def convert() -> httpx2.Response:
        try:
            return await non_streamed(response, fold_message)
        except ErrorEventBody as exc:
            kind = str(exc.error.get("type") or "api_error")
            return error_response(
                _ERROR_TYPE_TO_STATUS.get(kind, 500), str(exc.error.get("message") or ""), error_type=kind
            )

    return convert()


class FakeAnthropic:
    """Answers the i-th `POST /v1/messages` with the i-th responder (the last one repeats)."""

    def __init__(self, responders: Sequence[Responder]) -> None:
        self.responders = list(responders)
        self.served = Served()
        self.raw_requests: list[httpx2.Request] = []

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return self.served.requests

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.raw_requests.append(request)
        if request.method != "POST" or request.url.path != "/v1/messages":
            return error_response(404, f"no route {request.method} {request.url.path}")
        self.served.requests.append(json.loads(request.content))
        index = min(len(self.raw_requests) - 1, len(self.responders) - 1)
        responder = self.responders[index]
        if isinstance(responder, httpx2.Response):
            return responder
        if callable(responder):
            return responder(request)
        return scenario_response(responder)

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        from tests.conformance.harness_openai import wants_stream

        response = self.handler(request)
        if wants_stream(request):
            return response
        return await unstreamed(response)  # type: ignore[no-any-return]

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.handle)


def make_provider(
    server: FakeAnthropic, *, max_retries: int = 0, name: str = "claude-conf", **config: Any
) -> ClaudeProvider:
    config.setdefault("model", MODEL)
    cfg = ClaudeConfig(name=name, api_key=SecretStr(TEST_KEY), max_retries=max_retries, **config)
    provider = ClaudeProvider(cfg, transport=server.transport())
    # Same policy, shorter waits, so retry tests stay fast.
    provider.retry_policy = RetryPolicy(max_retries=max_retries, base_delay=0.01, max_delay=0.05)
    return provider


class ClaudeHarness:
    name = "claude"
    supports_tools = True
    supports_scripted_errors = True
    supports_retries = True

    @asynccontextmanager
    async def provider(
        self, scenarios: list[Scenario], *, max_retries: int = 0
    ) -> AsyncIterator[tuple[LlmProvider, Served]]:
        server = FakeAnthropic(scenarios)
        provider = make_provider(server, max_retries=max_retries)
        try:
            # BaseProvider satisfies LlmProvider at run time; mypy cannot see it through **options.
            yield cast(LlmProvider, provider), server.served
        finally:
            await provider.aclose()


HARNESS = ClaudeHarness()
