"""The shared remote layer against a real socket: bounded drain, decoded limits, hostile numbers,
in-stream errors, ambient credentials and deadlines (issue 10 items 5, 6, 7, 10, 11, 12, 14, 15, 16)."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.fakes import anthropic, ollama
from tests.fakes.openai import DONE, sse
from zeph_providers import Message
from zeph_providers.backends.claude import ClaudeProvider
from zeph_providers.backends.ollama import OllamaProvider
from zeph_providers.backends.openai import OpenAIProvider
from zeph_providers.config import ClaudeConfig, CompatibleConfig, OllamaConfig
from zeph_providers.errors import BadResponseError, InvalidRequestError, ProviderTimeoutError

HELLO = [Message.user("hi")]
Handler = Callable[["Request", asyncio.StreamWriter], Awaitable[None]]


class Request:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.path, self.headers, self.body = method, path, headers, body

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


class RawServer:
    """A real HTTP/1.1 socket whose handler writes the raw response (so it can hold or drip a body)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(method, path, headers, body)
                self.requests.append(request)
                await self.handler(request, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def head(content_type: str = "application/json", **extra: str) -> bytes:
    fields = {"content-type": content_type, "transfer-encoding": "chunked", **extra}
    return b"HTTP/1.1 200 OK\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in fields.items()) + b"\r\n"


def piece(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def whole(body: bytes, content_type: str = "application/json", **extra: str) -> bytes:
    return head(content_type, **extra) + piece(body) + b"0\r\n\r\n"


def oa_chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **top: Any) -> bytes:
    choices = [] if delta is None and finish is None else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return sse({"id": "c1", "model": "m", "choices": choices, **top})


def compatible(url: str, **fields: Any) -> OpenAIProvider:
    config = {"name": "c", "model": "m", "base_url": f"{url}/v1", "max_retries": 0, "timeout_secs": 5, **fields}
    return OpenAIProvider(CompatibleConfig(**config))


def claude(url: str, **fields: Any) -> ClaudeProvider:
    config = {"name": "a", "model": "m", "base_url": url, "api_key": "sk-ant-test", "max_retries": 0, "timeout_secs": 5}
    return ClaudeProvider(ClaudeConfig(**{**config, **fields}))


def ollama_provider(url: str, **fields: Any) -> OllamaProvider:
    config = {"name": "o", "model": "m", "base_url": url, "max_retries": 0, "timeout_secs": 5, **fields}
    return OllamaProvider(OllamaConfig(**config))


SHOW = json.dumps({"capabilities": ["completion", "tools"]}).encode()


def ollama_line(**part: Any) -> bytes:
    return ollama.line({"model": "m", "message": {"role": "assistant", "content": ""}, **part})


async def held_open(writer: asyncio.StreamWriter, data: bytes, content_type: str) -> None:
    """Everything of a complete reply, then the body is never ended."""
    writer.write(head(content_type) + piece(data))
    await writer.drain()
    await asyncio.sleep(3600)


# ----- item 7: the post-end drain is bounded and never fails a complete reply -------------------


async def test_openai_stream_complete_but_body_held_open() -> None:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        events = oa_chunk({"content": "hello"}) + oa_chunk({}, "stop") + oa_chunk(usage={"prompt_tokens": 1}) + DONE
        await held_open(writer, events, "text/event-stream")

    async with RawServer(handler) as server:
        provider = compatible(server.url)
        try:
            response = await provider.chat_stream(HELLO, timeout=5).collect()
        finally:
            await provider.aclose()
    assert response.text == "hello"
    assert response.finish_reason == "stop"


async def test_claude_stream_complete_but_body_held_open() -> None:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        events = [
            anthropic.message_start(input_tokens=2, model="m"),
            *anthropic.text_block(0, ["hello"]),
            anthropic.message_delta("end_turn", 1),
            anthropic.message_stop(),
        ]
        body = b"".join(events)
        await held_open(writer, body, "text/event-stream")

    async with RawServer(handler) as server:
        provider = claude(server.url)
        try:
            response = await provider.chat_stream(HELLO, timeout=5).collect()
        finally:
            await provider.aclose()
    assert response.text == "hello"
    assert response.finish_reason == "stop"


async def test_ollama_stream_complete_but_body_held_open() -> None:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        if request.path == "/api/show":
            writer.write(whole(SHOW))
            return
        lines = ollama_line(message={"role": "assistant", "content": "hello"}, done=False) + ollama_line(
            done=True, done_reason="stop", prompt_eval_count=1, eval_count=1
        )
        await held_open(writer, lines, "application/x-ndjson")

    async with RawServer(handler) as server:
        provider = ollama_provider(server.url)
        try:
            response = await provider.chat_stream(HELLO, timeout=5).collect()
        finally:
            await provider.aclose()
    assert response.text == "hello"
    assert response.finish_reason == "stop"


# ----- item 10: limits count decoded bytes ---------------------------------------------------


async def test_gzip_reply_cannot_bypass_the_line_limit() -> None:
    line = oa_chunk({"content": "x" * (20 * 1024 * 1024)})
    packed = gzip.compress(line + oa_chunk({}, "stop") + DONE)
    assert len(packed) < 200_000

    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(whole(packed, "text/event-stream", **{"content-encoding": "gzip"}))

    async with RawServer(handler) as server:
        provider = compatible(server.url)
        try:
            with pytest.raises(BadResponseError, match="exceeded"):
                await provider.chat_stream(HELLO).collect()
        finally:
            await provider.aclose()


async def test_gzip_reply_under_the_limit_is_decoded() -> None:
    packed = gzip.compress(oa_chunk({"content": "fine"}) + oa_chunk({}, "stop") + DONE)

    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(whole(packed, "text/event-stream", **{"content-encoding": "gzip"}))

    async with RawServer(handler) as server:
        provider = compatible(server.url)
        try:
            response = await provider.chat_stream(HELLO).collect()
        finally:
            await provider.aclose()
    assert response.text == "fine"


# ----- item 11: hostile numbers are BadResponseError -------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [
        oa_chunk(usage={"prompt_tokens": 1e400}),
        b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":' + b"9" * 5000 + b"}}\n\n",
        oa_chunk(usage={"prompt_tokens": 1, "completion_tokens": -5}),
        oa_chunk({"tool_calls": [{"index": -1, "id": "t", "function": {"name": "f", "arguments": "{}"}}]}),
    ],
    ids=["1e400", "5000-digits", "negative-count", "negative-index"],
)
async def test_hostile_numbers_are_bad_responses(tail: bytes) -> None:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(whole(oa_chunk({"content": "a"}) + tail + oa_chunk({}, "stop") + DONE, "text/event-stream"))

    async with RawServer(handler) as server:
        provider = compatible(server.url)
        try:
            with pytest.raises(BadResponseError):
                await provider.chat_stream(HELLO).collect()
        finally:
            await provider.aclose()


async def test_ollama_negative_token_count_is_a_bad_response() -> None:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        if request.path == "/api/show":
            writer.write(whole(SHOW))
        else:
            writer.write(whole(ollama_line(done=True, done_reason="stop", eval_count=-3), "application/x-ndjson"))

    async with RawServer(handler) as server:
        provider = ollama_provider(server.url)
        try:
            with pytest.raises(BadResponseError):
                await provider.chat_stream(HELLO).collect()
        finally:
            await provider.aclose()


# ----- item 12: shapes the other paths already refuse ------------------------------------------


async def test_claude_non_streamed_tool_input_not_an_object() -> None:
    message = {
        "type": "message",
        "model": "m",
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1},
        "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": "not an object"}],
    }

    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(whole(json.dumps(message).encode()))

    async with RawServer(handler) as server:
        provider = claude(server.url)
        try:
            with pytest.raises(BadResponseError, match="not a JSON object"):
                await provider.chat(HELLO)
        finally:
            await provider.aclose()


async def test_ollama_invalid_utf8_is_a_bad_response() -> None:
    bad = b'{"model":"m","message":{"role":"assistant","content":"caf\xe9"},"done":false}\n'

    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        if request.path == "/api/show":
            writer.write(whole(SHOW))
        else:
            writer.write(whole(bad + ollama_line(done=True, done_reason="stop"), "application/x-ndjson"))

    async with RawServer(handler) as server:
        provider = ollama_provider(server.url)
        try:
            with pytest.raises(BadResponseError):
                await provider.chat_stream(HELLO).collect()
        finally:
            await provider.aclose()


# ----- items 14, 15, 16: real compatible servers ------------------------------------------------


async def test_stream_reaching_done_with_usage_but_no_finish_is_complete() -> None:
    stream = oa_chunk({"content": "hi there"}) + oa_chunk(usage={"prompt_tokens": 3, "completion_tokens": 2}) + DONE
    body = {
        "id": "c1",
        "model": "m",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"}}],
    }

    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        if request.json().get("stream"):
            writer.write(whole(stream, "text/event-stream"))
        else:
            writer.write(whole(json.dumps(body).encode()))

    async with RawServer(handler) as server:
        provider = compatible(server.url)
        try:
            streamed = await provider.chat_stream(HELLO).collect()
            whole_reply = await provider.chat(HELLO)
        finally:
            await provider.aclose()
    assert streamed.text == "hi there"
    assert streamed.finish_reason == "stop"
    assert streamed == whole_reply


async def test_empty_legacy_function_call_placeholder_is_not_a_call() -> None:
    body = {
        "id": "c1",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": "just text",
                    "function_call": {"name": "", "arguments": ""},
                },
            }
        ],
    }

    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(whole(json.dumps(body).encode()))

    async with RawServer(handler) as server:
        provider = compatible(server.url)
        try:
            response = await provider.chat(HELLO)
        finally:
            await provider.aclose()
    assert response.text == "just text"
    assert response.tool_calls == []
    assert response.finish_reason == "stop"


@pytest.mark.parametrize("framing", ["error-object", "event-error"])
async def test_in_stream_invalid_request_error_is_typed_and_not_retried(framing: str) -> None:
    error = {"type": "invalid_request_error", "code": "bad_param", "status_code": 400, "message": "nope"}
    event = sse({"error": error}) if framing == "error-object" else anthropic.sse("error", error)

    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(whole(event, "text/event-stream"))

    async with RawServer(handler) as server:
        provider = compatible(server.url, max_retries=2)
        try:
            with pytest.raises(InvalidRequestError, match="nope") as info:
                await provider.chat_stream(HELLO).collect()
        finally:
            await provider.aclose()
    assert not info.value.retryable
    assert len(server.requests) == 1


# ----- item 5: ambient credentials stay home -------------------------------------------------


async def test_ollama_api_key_from_the_environment_is_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", "ollama-ambient-secret-1234")

    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        if request.path == "/api/show":
            writer.write(whole(SHOW))
        else:
            writer.write(whole(ollama_line(message={"role": "assistant", "content": "ok"}, done=True)))

    async with RawServer(handler) as server:
        provider = ollama_provider(server.url)
        try:
            await provider.chat(HELLO)
        finally:
            await provider.aclose()
        asked = ollama_provider(server.url, api_key_env="OLLAMA_API_KEY")
        try:
            await asked.chat(HELLO)
        finally:
            await asked.aclose()
    sent = [r.headers.get("authorization") for r in server.requests]
    assert sent[:2] == [None, None]
    assert sent[2:] == ["Bearer ollama-ambient-secret-1234"] * 2


async def test_anthropic_custom_headers_are_not_sent_to_a_custom_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_CUSTOM_HEADERS", "X-Ambient-Secret: hush-0000")
    message = {
        "type": "message",
        "model": "m",
        "stop_reason": "end_turn",
        "usage": {},
        "content": [{"type": "text", "text": "ok"}],
    }

    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(whole(json.dumps(message).encode()))

    async with RawServer(handler) as server:
        provider = claude(server.url)
        try:
            await provider.chat(HELLO)
        finally:
            await provider.aclose()
    assert "x-ambient-secret" not in server.requests[0].headers


# ----- item 6: embeddings and the capability probe obey the call's deadline ----------------------


async def drip(request: Request, writer: asyncio.StreamWriter) -> None:
    """Headers, then one byte of a JSON body every 0.1 s, forever: no read ever times out."""
    writer.write(head())
    await writer.drain()
    while True:
        writer.write(piece(b" "))
        await writer.drain()
        await asyncio.sleep(0.1)


def _bounded(work: Awaitable[Any]) -> Awaitable[Any]:
    return asyncio.wait_for(work, 20)  # a hang fails the test instead of the suite


@pytest.mark.parametrize("backend", ["compatible", "ollama"])
async def test_embeddings_obey_the_deadline_against_a_drip_fed_server(backend: str) -> None:
    async with RawServer(drip) as server:
        if backend == "compatible":
            provider: Any = compatible(server.url, embedding_model="e", timeout_secs=1)
        else:
            provider = ollama_provider(server.url, embedding_model="e", timeout_secs=1)
        try:
            with pytest.raises(ProviderTimeoutError):
                await _bounded(provider.embed("x"))
            with pytest.raises(ProviderTimeoutError):
                await _bounded(provider.embed_batch(["x", "y"]))
        finally:
            await provider.aclose()


async def test_ollama_capability_probe_obeys_the_deadline() -> None:
    async with RawServer(drip) as server:
        provider = ollama_provider(server.url, timeout_secs=1)
        try:
            with pytest.raises(ProviderTimeoutError):
                await _bounded(provider.refresh_capabilities())
        finally:
            await provider.aclose()
