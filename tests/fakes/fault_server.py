"""A real loopback HTTP/1.1 server that speaks OpenAI, Anthropic and Ollama and fails on request.

One asyncio server on 127.0.0.1 (a free port), run by its own event loop in a background thread.
It serves, by path:

- OpenAI: `POST /v1/chat/completions` (SSE `chat.completion.chunk` events ending in `[DONE]` when
  `"stream": true`, one `chat.completion` JSON object otherwise) and `POST /v1/embeddings`;
- Anthropic: `POST /v1/messages` (the Messages API event sequence `message_start`,
  `content_block_start`, `ping`, `content_block_delta`, `content_block_stop`, `message_delta`,
  `message_stop` when streaming; one `message` JSON object otherwise);
- Ollama: `POST /api/chat` (NDJSON), `POST /api/show`, `POST /api/embed`, `GET /api/version`.

Every reply echoes an id, the text of the request's last user message (for embeddings: the first
input): the answer text is `"echo:<id>"`, so a load test can match answers to requests.

What a request gets is its *fault plan*, chosen (first match wins) by

1. the `x-fault` request header;
2. the scripted queue (`server.script("500", "ok")`: one plan per chat request, in order);
3. the model name: `"fault:<plan>"`, e.g. `"fault:429:retry-after=0.3"` or `"fault:500,500,ok"`;
4. the model name `"chaos:p=0.3:seed=7"`: a fault drawn at random, deterministically from
   (seed, model, id, attempt), so concurrency does not change the draw (see `chaos_fault`);
5. otherwise `ok`.

A plan is one or more steps separated by commas; attempt *n* of a request (same path kind, model
and id) gets step *n* (the last step repeats). A step is a mode and `key=value` parameters joined by
colons. Modes:

==============  ==================================================================================
ok              a normal answer
429, 500, ...   that HTTP status with the wire format's error body (`retry-after=S` adds the header)
hang            read the request, never answer (until the client leaves or the server stops)
close           headers with the full Content-Length, part of the body (no complete event), close
reset           a normal stream up to its first content event, then a TCP reset (SO_LINGER 0)
reset0          a TCP reset right after the request, before any response byte
badjson         200 and the first event / the body is invalid JSON
bigline         one line of `mb=10` megabytes (a valid event, or non-streamed chat body, whose text is that long)
forever         a content event every `ms=5` milliseconds, never finishing (`secs=60` bound)
nested          JSON nested `depth=100000` levels deep, as the body (`where=body`) or as the text
                field (`where=content`)
==============  ==================================================================================

`server.attempts(id)` counts the requests seen for an id; `server.attempt_times(id)` gives when.
Ollama's `/api/show` always answers normally (it is model metadata, fetched once per provider);
it is counted under kind "show", not "chat".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fakes import anthropic, ollama, openai
from tests.fakes.embeddings import vector

__all__ = [
    "CHAOS_MODES",
    "FaultServer",
    "Step",
    "chaos_fault",
    "echo_text",
    "fault_server",
    "parse_plan",
]

CHAOS_MODES: tuple[str, ...] = ("500", "503", "429:retry-after=0", "badjson", "close", "reset0", "reset")
"""The faults `chaos:` draws from, equally likely."""

_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 64 * 1024 * 1024
_MAX_REQUESTS_PER_CONNECTION = 100_000
_FIRST_CHUNK_GRACE = 0.05
"""Seconds between the last byte sent and a reset, so the client reads what came before it."""


@dataclass(frozen=True)
class Step:
    mode: str
    params: dict[str, str] = field(default_factory=dict)

    def number(self, key: str, default: float) -> float:
        value = self.params.get(key)
        return default if value is None else float(value)


def parse_plan(spec: str) -> list[Step]:
    """`"429:retry-after=0.3,ok"` -> [Step("429", {"retry-after": "0.3"}), Step("ok")]."""
    steps: list[Step] = []
    for raw in spec.split(","):
        raw = raw.strip()
        if not raw:
            continue
        mode, *pairs = raw.split(":")
        params: dict[str, str] = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            params[key.strip()] = value.strip()
        steps.append(Step(mode.strip() or "ok", params))
    return steps or [Step("ok")]


def _draw(*parts: object) -> float:
    """A deterministic number in [0, 1) from `parts`."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def chaos_fault(model: str, request_id: str, attempt: int) -> Step:
    """The step a `chaos:p=P:seed=S` model serves for this request id's `attempt` (0-based)."""
    values = dict(item.partition("=")[::2] for item in model.removeprefix("chaos:").split(":"))
    rate = float(values.get("p", "0.3"))
    seed = values.get("seed", "0")
    if _draw(seed, model, request_id, attempt, "fail") >= rate:
        return Step("ok")
    index = int(_draw(seed, model, request_id, attempt, "mode") * len(CHAOS_MODES))
    return parse_plan(CHAOS_MODES[index])[0]


def echo_text(request_id: str) -> str:
    """The answer text the server gives for `request_id`."""
    return f"echo:{request_id}"


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# ----- wire formats ---------------------------------------------------------------------------


class _Wire:
    """One API's payload shapes. `events()` is the normal streamed body, one bytes item per event."""

    kind = "chat"
    stream_type = "text/event-stream"
    path = ""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.model = str(body.get("model") or "")
        self.request_id = self._request_id()

    def _request_id(self) -> str:
        for message in reversed(self.body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""

    @property
    def streaming(self) -> bool:
        return self.body.get("stream") is True

    def pieces(self) -> list[str]:
        return ["echo:", self.request_id]

    # Overridden per format.
    def events(self) -> list[bytes]:
        raise NotImplementedError

    def json_body(self) -> Any:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> Any:
        return {"error": {"message": message, "type": "server_error", "param": None, "code": str(status)}}

    def content_event(self, text: str) -> bytes:
        raise NotImplementedError

    def raw_event(self, data: bytes) -> bytes:
        """`data` framed as one event (SSE `data:` line or one NDJSON line)."""
        return b"data: " + data + b"\n\n"

    def bad_json_event(self) -> bytes:
        return self.raw_event(b'{"id": "chatcmpl-broken", "choices": [{"delta": {"content": "x"')

    def content_json(self, text_json: bytes) -> bytes:
        """An event whose text field is the given raw JSON value."""
        raise NotImplementedError


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type") in ("text", None)
        )
    return ""


_OPENAI_ID = "chatcmpl-fault"


class _OpenAIChat(_Wire):
    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return openai.chunk(
            delta, finish=finish, response_id="chatcmpl-fault", model=self.model, fingerprint="fp_fault"
        )

    def _sse(self, payload: dict[str, Any]) -> bytes:
        return self.raw_event(json.dumps(payload).encode())

    def events(self) -> list[bytes]:
        out = [self._sse(self._chunk({"role": "assistant", "content": "", "refusal": None}))]
        out += [self.content_event(piece) for piece in self.pieces()]
        out.append(self._sse(self._chunk({}, "stop")))
        usage = openai.usage_chunk(7, 2, cached=None, response_id=_OPENAI_ID, model=self.model, fingerprint="fp_fault")
        out.append(self._sse(usage))
        out.append(openai.DONE)
        return out

    def content_event(self, text: str) -> bytes:
        return self._sse(self._chunk({"content": text}))

    def content_json(self, text_json: bytes) -> bytes:
        head = json.dumps(self._chunk({"content": None})).encode()
        return self.raw_event(head.replace(b'"content": null', b'"content": ' + text_json, 1))

    def json_body(self) -> Any:
        text = "".join(self.pieces())
        return openai.completion(text, prompt=7, completion_tokens=2, response_id=_OPENAI_ID, model=self.model)


class _OpenAIEmbed(_Wire):
    kind = "embed"

    def _request_id(self) -> str:
        raw = self.body.get("input")
        if isinstance(raw, list):
            return str(raw[0]) if raw else ""
        return str(raw or "")

    @property
    def streaming(self) -> bool:
        return False

    def json_body(self) -> Any:
        raw = self.body.get("input")
        inputs = raw if isinstance(raw, list) else [raw]
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector(str(text))} for i, text in enumerate(inputs)
            ],
            "model": self.model,
            "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
        }


class _Anthropic(_Wire):
    def raw_event(self, data: bytes) -> bytes:
        return b"event: content_block_delta\ndata: " + data + b"\n\n"

    def bad_json_event(self) -> bytes:
        return b'event: message_start\ndata: {"type": "message_start", "message": {"id": "msg_\n\n'

    def events(self) -> list[bytes]:
        out = anthropic.text_stream_head(input_tokens=7, model=self.model, message_id="msg_fault")
        out += [self.content_event(piece) for piece in self.pieces()]
        out += anthropic.text_stream_tail(output_tokens=2)
        return out

    def content_event(self, text: str) -> bytes:
        return anthropic.text_delta(0, text)

    def content_json(self, text_json: bytes) -> bytes:
        return self.raw_event(
            b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ' + text_json + b"}}"
        )

    def error_body(self, status: int, message: str) -> Any:
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            429: "rate_limit_error",
            529: "overloaded_error",
        }.get(status, "api_error")
        return anthropic.error_body(kind, message)

    def json_body(self) -> Any:
        text = "".join(self.pieces())
        return anthropic.message(text, input_tokens=7, output_tokens=2, model=self.model, message_id="msg_fault")


class _OllamaChat(_Wire):
    stream_type = "application/x-ndjson"

    @property
    def streaming(self) -> bool:
        return self.body.get("stream", True) is not False

    def _line(self, payload: dict[str, Any]) -> bytes:
        return ollama.line(payload)

    def raw_event(self, data: bytes) -> bytes:
        return data + b"\n"

    def bad_json_event(self) -> bytes:
        return b'{"model": "broken", "message": {"role": "assistant", "content": "x\n'

    def _delta(self, text: str) -> dict[str, Any]:
        return ollama.delta(self.model, text)

    def _final(self) -> dict[str, Any]:
        return ollama.final(self.model, total_duration=4_883_583, prompt_eval_count=7, eval_count=2)

    def events(self) -> list[bytes]:
        return [self.content_event(piece) for piece in self.pieces()] + [self._line(self._final())]

    def content_event(self, text: str) -> bytes:
        return self._line(self._delta(text))

    def content_json(self, text_json: bytes) -> bytes:
        head = json.dumps(self._delta("@@")).encode()
        return self.raw_event(head.replace(b'"@@"', text_json, 1))

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message}

    def json_body(self) -> Any:
        final = self._final()
        final["message"] = {"role": "assistant", "content": "".join(self.pieces())}
        return final


class _OllamaEmbed(_OllamaChat):
    kind = "embed"

    def _request_id(self) -> str:
        return _OpenAIEmbed._request_id(self)  # type: ignore[arg-type]

    @property
    def streaming(self) -> bool:
        return False

    def json_body(self) -> Any:
        raw = self.body.get("input")
        inputs = raw if isinstance(raw, list) else [raw]
        return {"model": self.model, "embeddings": [vector(str(text)) for text in inputs], "prompt_eval_count": 1}


class _OllamaShow(_OllamaChat):
    kind = "show"

    @property
    def streaming(self) -> bool:
        return False

    def json_body(self) -> Any:
        return {
            "modelfile": "# fault server\n",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": {"format": "gguf", "family": "llama", "parameter_size": "8B", "quantization_level": "Q4"},
            "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
            "capabilities": ["completion", "tools", "vision", "thinking"],
            "modified_at": "2025-09-01T12:00:00.000000+00:00",
        }


_ROUTES: dict[str, type[_Wire]] = {
    "/v1/chat/completions": _OpenAIChat,
    "/v1/embeddings": _OpenAIEmbed,
    "/v1/messages": _Anthropic,
    "/api/chat": _OllamaChat,
    "/api/embed": _OllamaEmbed,
    "/api/show": _OllamaShow,
}

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}


class _Reset(Exception):
    """Abort the connection with a TCP reset."""


class _Close(Exception):
    """Close the connection (FIN) without finishing the response."""


# ----- the server -----------------------------------------------------------------------------


@dataclass
class Seen:
    """One request the server received."""

    kind: str
    path: str
    model: str
    request_id: str
    attempt: int
    mode: str
    at: float


class FaultServer:
    """`with FaultServer() as server:` (or `start()` / `stop()`); `server.url` is its base URL."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}
        self.seen: list[Seen] = []
        self._script: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping: asyncio.Event | None = None
        self.port = 0
        self.open_connections = 0
        self.peak_connections = 0
        self.total_connections = 0
        """Connections accepted since start: with keep-alive, sequential requests share one."""

    # ----- inspection and scripting -----------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *plans: str) -> None:
        """The next chat requests get these plans, one each, in order (then the model decides again)."""
        with self._lock:
            self._script = list(plans)

    def requests(self, request_id: str | None = None, *, kind: str = "chat", model: str | None = None) -> list[Seen]:
        """The requests seen of this kind (chat, embed, show), for this id and model when given."""
        with self._lock:
            return [
                s
                for s in self.seen
                if s.kind == kind
                and (request_id is None or s.request_id == request_id)
                and (model is None or s.model == model)
            ]

    def attempts(self, request_id: str, *, kind: str = "chat", model: str | None = None) -> int:
        """How many `kind` requests carried this id (sent to this model, when given)."""
        return len(self.requests(request_id, kind=kind, model=model))

    def attempt_times(self, request_id: str, *, kind: str = "chat", model: str | None = None) -> list[float]:
        """When each of those requests arrived (`time.monotonic()`)."""
        return [s.at for s in self.requests(request_id, kind=kind, model=model)]

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
            self.seen.clear()
            self._script.clear()

    # ----- lifecycle --------------------------------------------------------------------------

    def start(self) -> FaultServer:
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._open())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault server did not start")
        return self

    async def _open(self) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(
            self._connection, "127.0.0.1", 0, limit=_MAX_HEADER_BYTES, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_all(self) -> None:
        assert self._stopping is not None and self._server is not None
        self._stopping.set()
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=5)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close_all(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = None
        self._thread = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----- one connection ---------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            self.open_connections += 1
            self.total_connections += 1
            self.peak_connections = max(self.peak_connections, self.open_connections)
        reset = False
        try:
            for _ in range(_MAX_REQUESTS_PER_CONNECTION):
                if not await self._one_request(reader, writer):
                    break
        except _Reset:
            reset = True
        except (_Close, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            with self._lock:
                self.open_connections -= 1
            self._tasks.discard(task)
            if reset:
                _abort_with_reset(writer)
            else:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), timeout=1)

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection should close."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = [*lines[0].split(" ", 2), "", ""][:3]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if length > _MAX_BODY_BYTES:
            await self._send(writer, 413, {"error": "request too large"}, close=True)
            return False
        raw = await reader.readexactly(length) if length else b""
        keep_alive = headers.get("connection", "").lower() != "close"
        path = path.split("?", 1)[0]
        if method == "GET" and path == "/api/version":
            await self._send(writer, 200, {"version": "0.12.6"})
            return keep_alive
        wire_type = _ROUTES.get(path)
        if method != "POST" or wire_type is None:
            await self._send(writer, 404, {"error": f"no route {method} {path}"})
            return keep_alive
        try:
            body = json.loads(raw) if raw else {}
        except (ValueError, RecursionError):
            await self._send(writer, 400, {"error": "invalid JSON in the request body"})
            return keep_alive
        wire = wire_type(body if isinstance(body, dict) else {})
        wire.path = path
        step = self._plan(wire, headers)
        return await self._serve(wire, step, reader, writer) and keep_alive

    def _plan(self, wire: _Wire, headers: dict[str, str]) -> Step:
        key = (wire.kind, wire.model, wire.request_id)
        with self._lock:
            attempt = self._counts.get(key, 0)
            self._counts[key] = attempt + 1
            scripted = self._script.pop(0) if wire.kind == "chat" and self._script else None
        spec = headers.get("x-fault") or scripted
        if spec is None and wire.kind != "show":
            if wire.model.startswith("fault:"):
                spec = wire.model.removeprefix("fault:")
            elif wire.model.startswith("chaos:"):
                step = chaos_fault(wire.model, wire.request_id, attempt)
                self._note(wire, attempt, step)
                return step
        steps = parse_plan(spec or "ok")
        step = steps[min(attempt, len(steps) - 1)]
        self._note(wire, attempt, step)
        return step

    def _note(self, wire: _Wire, attempt: int, step: Step) -> None:
        with self._lock:
            self.seen.append(
                Seen(wire.kind, wire.path, wire.model, wire.request_id, attempt, step.mode, time.monotonic())
            )

    # ----- replies ----------------------------------------------------------------------------

    async def _serve(self, wire: _Wire, step: Step, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        mode = step.mode
        if mode.isdigit():
            status = int(mode)
            extra: dict[str, str] = {}
            if "retry-after" in step.params:
                extra["retry-after"] = step.params["retry-after"]
            await self._send(writer, status, wire.error_body(status, f"injected HTTP {status}"), headers=extra)
            return True
        if mode == "hang":
            assert self._stopping is not None
            closed = asyncio.ensure_future(reader.read(1))
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({closed, stopping}, timeout=step.number("secs", 120), return_when="FIRST_COMPLETED")
            finally:
                closed.cancel()
                stopping.cancel()
            raise _Close
        if mode == "reset0":
            raise _Reset
        if mode == "close":
            full = b"".join(wire.events()) if wire.streaming else json.dumps(wire.json_body()).encode()
            first = wire.events()[0] if wire.streaming else full
            cut = max(1, min(len(first) // 2, len(full) // 2))
            ctype = wire.stream_type if wire.streaming else "application/json"
            writer.write(_head(200, {"content-type": ctype, "content-length": str(len(full))}))
            writer.write(full[:cut])
            await writer.drain()
            raise _Close
        if mode == "nested":
            depth = int(step.number("depth", 100_000))
            nested = _nested(depth)
            if step.params.get("where", "body") == "content" and wire.streaming:
                payload = wire.content_json(nested)
            elif wire.streaming:
                payload = wire.raw_event(nested)
            elif step.params.get("where", "body") == "content":
                payload = b'{"embeddings": ' + nested + b', "data": ' + nested + b"}"
            else:
                payload = nested
            return await self._send_stream_or_body(wire, writer, [payload])
        if mode == "badjson":
            if wire.streaming:
                return await self._send_stream_or_body(wire, writer, [wire.bad_json_event()])
            await self._send_raw(writer, 200, b'{"object": "list", "data": [{"embedding": [0.1, ', "application/json")
            return True
        if mode == "bigline":
            size = int(step.number("mb", 10) * 1024 * 1024)
            if wire.streaming:
                await self._big_event(wire, writer, size)
                return True
            if wire.kind == "chat":  # a valid reply whose text is that long, as the stream's would be
                await self._big_body(wire, writer, size)
                return True
            await self._send_raw(writer, 200, b'{"data": "' + b"x" * size + b'"}', "application/json")
            return True
        if mode == "forever":
            await self._forever(wire, writer, step)
            return False
        if mode == "reset":
            if not wire.streaming:
                data = json.dumps(wire.json_body()).encode()
                writer.write(_head(200, {"content-type": "application/json", "content-length": str(len(data))}))
                writer.write(data[: len(data) // 2])
                await writer.drain()
                await asyncio.sleep(_FIRST_CHUNK_GRACE)
                raise _Reset
            events = wire.events()
            first_content = next(i for i, e in enumerate(events) if b"echo:" in e)
            writer.write(_head(200, {"content-type": wire.stream_type, "transfer-encoding": "chunked"}))
            for event in events[: first_content + 1]:
                writer.write(_chunked(event))
            await writer.drain()
            await asyncio.sleep(_FIRST_CHUNK_GRACE)
            raise _Reset
        # ok (and any unknown mode)
        if wire.streaming:
            return await self._send_stream_or_body(wire, writer, wire.events())
        await self._send(writer, 200, wire.json_body())
        return True

    async def _send_stream_or_body(self, wire: _Wire, writer: asyncio.StreamWriter, events: Sequence[bytes]) -> bool:
        if not wire.streaming:
            await self._send_raw(writer, 200, b"".join(events), "application/json")
            return True
        writer.write(_head(200, {"content-type": wire.stream_type, "transfer-encoding": "chunked"}))
        for event in events:
            writer.write(_chunked(event))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _big_event(self, wire: _Wire, writer: asyncio.StreamWriter, size: int) -> None:
        """One event whose text field is `size` bytes of "x", sent in 1 MiB chunks, then the normal end."""
        writer.write(_head(200, {"content-type": wire.stream_type, "transfer-encoding": "chunked"}))
        events = wire.events()
        marker = b"\x00MARK\x00"
        template = wire.content_json(b'"' + marker + b'"')
        before, _, after = template.partition(marker)
        first_content = next(i for i, e in enumerate(events) if b"echo:" in e)
        for event in events[:first_content]:
            writer.write(_chunked(event))
        writer.write(_chunked(before))
        block = b"x" * (1024 * 1024)
        sent = 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            writer.write(_chunked(piece))
            sent += len(piece)
            await writer.drain()
        writer.write(_chunked(after))
        for event in events[first_content:]:
            writer.write(_chunked(event))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _big_body(self, wire: _Wire, writer: asyncio.StreamWriter, size: int) -> None:
        """The non-streamed reply, its text `size` bytes of "x" then the echo, sent in 1 MiB chunks."""
        before, _, after = json.dumps(wire.json_body()).encode().partition(b'"echo:')
        writer.write(_head(200, {"content-type": "application/json", "transfer-encoding": "chunked"}))
        writer.write(_chunked(before + b'"'))
        block = b"x" * (1024 * 1024)
        sent = 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            writer.write(_chunked(piece))
            sent += len(piece)
            await writer.drain()
        writer.write(_chunked(b"echo:" + after))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _forever(self, wire: _Wire, writer: asyncio.StreamWriter, step: Step) -> None:
        assert self._stopping is not None
        interval = step.number("ms", 5) / 1000.0
        until = time.monotonic() + step.number("secs", 60)
        events = wire.events()
        writer.write(_head(200, {"content-type": wire.stream_type, "transfer-encoding": "chunked"}))
        if len(events) > 1 and b"echo:" not in events[0]:
            writer.write(_chunked(events[0]))  # the stream's opening event(s)
        if isinstance(wire, _Anthropic):
            for event in events[1:3]:
                writer.write(_chunked(event))
        tick = wire.content_event("tick ")
        while time.monotonic() < until and not self._stopping.is_set():
            writer.write(_chunked(tick))
            await writer.drain()
            await asyncio.sleep(interval)
        raise _Close

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: Any,
        *,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        data = json.dumps(body).encode()
        extra = dict(headers or {})
        if close:
            extra["connection"] = "close"
        await self._send_raw(writer, status, data, "application/json", extra)

    async def _send_raw(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        data: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        all_headers = {"content-type": content_type, "content-length": str(len(data)), "request-id": "req_fault"}
        all_headers.update(headers or {})
        writer.write(_head(status, all_headers))
        writer.write(data)
        await writer.drain()


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _abort_with_reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.fixture(scope="module")
def fault_server() -> Iterator[FaultServer]:
    """One running `FaultServer` per test module."""
    with FaultServer() as server:
        yield server
