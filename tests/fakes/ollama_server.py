"""A small, real HTTP server that speaks Ollama's REST API, for tests.

It listens on 127.0.0.1 on a free port (stdlib `http.server`, one thread per connection, HTTP/1.1
keep-alive, chunked NDJSON streaming) and follows Ollama's published API documentation
(docs/api.md): `POST /api/chat` (streamed NDJSON, or one JSON object with `"stream": false`),
`POST /api/embed`, `POST /api/show`, `GET /api/tags`, `GET /api/version`. Errors are
`{"error": "..."}` with the status Ollama uses (404 `model "x" not found, try pulling it first`).

Every test scripts its own replies::

    with OllamaServer(models={"qwen3:8b": ["completion", "tools", "thinking"]}) as server:
        server.script_chat(ChatReply(content=("Hel", "lo")), ErrorReply(503, "busy"))
        ...  # point a provider at server.url
        server.chat_requests  # the JSON bodies /api/chat received

Scripted replies are served in order; the last one repeats. Nothing is served from a model.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.fakes import ollama
from tests.fakes.embeddings import vector

__all__ = [
    "BrokenReply",
    "ChatReply",
    "EmbedReply",
    "ErrorReply",
    "HangReply",
    "OllamaServer",
    "RawReply",
    "RecordedRequest",
    "Reply",
    "ollama_server",
]

VERSION = "0.12.6"
DEFAULT_MODELS: dict[str, list[str]] = {
    "qwen3:8b": ["completion", "tools", "thinking"],
    "llava:7b": ["completion", "vision"],
    "gemma:2b": ["completion"],
    "nomic-embed-text:latest": ["embedding"],
}


@dataclass(frozen=True)
class ChatReply:
    """A normal reply: thinking deltas, content deltas, then tool-call chunks, then the final `done` chunk.

    `tool_calls` holds one list per chunk; each call is `{"function": {"name", "arguments"}}` with
    `arguments` a JSON object, as Ollama sends them (complete, no ids).
    """

    content: Sequence[str] = ("Hello", " from", " Ollama", "!")
    thinking: Sequence[str] = ()
    tool_calls: Sequence[Sequence[Mapping[str, Any]]] = ()
    done_reason: str = "stop"
    prompt_eval_count: int | None = 12
    eval_count: int | None = 4
    delay_secs: float = 0.0
    """Sleep between chunks."""
    model: str | None = None
    """The model named in the chunks (default: the requested one)."""


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error: `{"error": message}` with `status` and extra response `headers`."""

    status: int
    message: str = "scripted failure"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BrokenReply:
    """Stream `content` chunks, then drop the connection without ending the chunked body."""

    content: Sequence[str] = ("partial ", "answer")


@dataclass(frozen=True)
class HangReply:
    """Stream `content` chunks, then send nothing more until the server stops."""

    content: Sequence[str] = ()


@dataclass(frozen=True)
class RawReply:
    """Send these raw NDJSON body pieces as chunks (each is sent as given: add the newlines)."""

    pieces: Sequence[bytes]
    status: int = 200
    finish: bool = True
    """End the chunked body properly (False: drop the connection after the pieces)."""


@dataclass(frozen=True)
class EmbedReply:
    """Scripted `/api/embed` answer: explicit vectors (default: deterministic vectors per input)."""

    embeddings: Sequence[Sequence[float]] | None = None


Reply = ChatReply | ErrorReply | BrokenReply | HangReply | RawReply


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def fake_embedding(text: str, dim: int = 8) -> list[float]:
    """A deterministic unit vector for `text` (Ollama's /api/embed returns normalised vectors)."""
    return vector(text, dim)


class _Script:
    def __init__(self) -> None:
        self._items: list[Any] = []
        self._lock = threading.Lock()

    def set(self, items: Sequence[Any]) -> None:
        with self._lock:
            self._items = list(items)

    def next(self) -> Any | None:
        with self._lock:
            if not self._items:
                return None
            return self._items.pop(0) if len(self._items) > 1 else self._items[0]


class OllamaServer:
    """The server; a context manager (`with OllamaServer() as server:`) or `start()`/`stop()`."""

    def __init__(self, models: Mapping[str, Sequence[str]] | None = None, *, embedding_dim: int = 8) -> None:
        self.models: dict[str, list[str]] = {
            _canonical(k): list(v) for k, v in (models if models is not None else DEFAULT_MODELS).items()
        }
        self.embedding_dim = embedding_dim
        self.requests: list[RecordedRequest] = []
        self._chat = _Script()
        self._embed = _Script()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----- scripting and inspection -------------------------------------------------------

    def script_chat(self, *replies: Reply) -> None:
        """Answer the next `/api/chat` requests with these, in order; the last repeats."""
        self._chat.set(replies)

    def script_embed(self, *replies: EmbedReply | ErrorReply) -> None:
        self._embed.set(replies)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    @property
    def chat_requests(self) -> list[Any]:
        """The JSON bodies `/api/chat` received, in order."""
        return [r.body for r in self.requests_to("/api/chat")]

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # ----- lifecycle ----------------------------------------------------------------------

    def start(self) -> OllamaServer:
        handler = type("_BoundHandler", (_Handler,), {"owner": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> OllamaServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----- used by the handler ------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _known(self, name: str) -> bool:
        return _canonical(name) in self.models


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: OllamaServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # ----- plumbing -----------------------------------------------------------------------

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            self.owner._record(RecordedRequest(self.command, self.path, headers, raw.decode("utf-8", "replace")))
            raise
        self.owner._record(RecordedRequest(self.command, self.path, headers, body))
        return body

    def _send_json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        self._send_json(status, {"error": message}, headers)

    def _start_stream(self, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _line(self, obj: Any) -> None:
        self._chunk(json.dumps(obj).encode() + b"\n")

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    # ----- routes -------------------------------------------------------------------------

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.owner._record(RecordedRequest(self.command, self.path, headers, None))
        if self.path == "/api/version":
            self._send_json(200, {"version": VERSION})
        elif self.path == "/api/tags":
            self._send_json(200, {"models": [self._model_entry(name) for name in self.owner.models]})
        elif self.path == "/":
            data = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._send_error(404, "404 page not found")

    def do_POST(self) -> None:
        try:
            try:
                body = self._read_json()
            except json.JSONDecodeError as exc:
                self._send_error(400, f"invalid character in request body: {exc}")
                return
            if self.path == "/api/chat":
                self._chat(body)
            elif self.path == "/api/embed":
                self._embed(body)
            elif self.path == "/api/show":
                self._show(body)
            else:
                self._send_error(404, "404 page not found")
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    # ----- /api/chat ----------------------------------------------------------------------

    def _chat(self, body: Any) -> None:
        model = body.get("model", "")
        if not model:
            self._send_error(400, "model is required")
            return
        reply = self.owner._chat.next() or ChatReply()
        if isinstance(reply, ErrorReply):
            self._send_error(reply.status, reply.message, reply.headers)
            return
        if not self.owner._known(model):
            self._send_error(404, f'model "{model}" not found, try pulling it first')
            return
        stream = body.get("stream", True) is not False
        if isinstance(reply, RawReply):
            self._start_stream(reply.status)
            for piece in reply.pieces:
                self._chunk(piece)
            if reply.finish:
                self._end_stream()
            else:
                self._drop()
            return
        if isinstance(reply, BrokenReply | HangReply):
            self._start_stream()
            for text in reply.content:
                self._line(self._delta(model, content=text))
            if isinstance(reply, BrokenReply):
                self._drop()
            else:
                while not self.owner._stopping.wait(0.05):
                    pass
                self._drop()
            return
        assert isinstance(reply, ChatReply)
        served = reply.model or model
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.content)}
            if reply.thinking:
                message["thinking"] = "".join(reply.thinking)
            calls = [call for group in reply.tool_calls for call in group]
            if calls:
                message["tool_calls"] = calls
            self._send_json(200, {"model": served, "created_at": _now(), "message": message, **self._final(reply)})
            return
        self._start_stream()
        for text in reply.thinking:
            self._line(self._delta(served, content="", thinking=text))
            self._pause(reply)
        for text in reply.content:
            self._line(self._delta(served, content=text))
            self._pause(reply)
        for group in reply.tool_calls:
            self._line(self._delta(served, content="", tool_calls=list(group)))
            self._pause(reply)
        final = {"model": served, "created_at": _now(), "message": {"role": "assistant", "content": ""}}
        self._line({**final, **self._final(reply)})
        self._end_stream()

    @staticmethod
    def _pause(reply: ChatReply) -> None:
        if reply.delay_secs:
            time.sleep(reply.delay_secs)

    @staticmethod
    def _delta(model: str, *, content: str, thinking: str | None = None, tool_calls: Any = None) -> dict[str, Any]:
        message: dict[str, Any] = {}
        if thinking is not None:
            message["thinking"] = thinking
        if tool_calls is not None:
            message["tool_calls"] = tool_calls
        return ollama.delta(model, content, created_at=_now(), **message)

    @staticmethod
    def _final(reply: ChatReply) -> dict[str, Any]:
        final: dict[str, Any] = {
            "done": True,
            "done_reason": reply.done_reason,
            "total_duration": 4_883_583_458,
            "load_duration": 1_334_875,
        }
        if reply.prompt_eval_count is not None:
            final["prompt_eval_count"] = reply.prompt_eval_count
            final["prompt_eval_duration"] = 342_546_000
        if reply.eval_count is not None:
            final["eval_count"] = reply.eval_count
            final["eval_duration"] = 4_535_599_000
        return final

    # ----- /api/embed ---------------------------------------------------------------------

    def _embed(self, body: Any) -> None:
        model = body.get("model", "")
        reply = self.owner._embed.next()
        if isinstance(reply, ErrorReply):
            self._send_error(reply.status, reply.message, reply.headers)
            return
        if not self.owner._known(model):
            self._send_error(404, f'model "{model}" not found, try pulling it first')
            return
        raw_input = body.get("input", [])
        inputs = [raw_input] if isinstance(raw_input, str) else list(raw_input)
        if isinstance(reply, EmbedReply) and reply.embeddings is not None:
            vectors = [list(v) for v in reply.embeddings]
        else:
            vectors = [fake_embedding(text, self.owner.embedding_dim) for text in inputs]
        self._send_json(
            200,
            {
                "model": model,
                "embeddings": vectors,
                "total_duration": 14_143_917,
                "load_duration": 1_019_500,
                "prompt_eval_count": sum(max(1, len(text.split())) for text in inputs),
            },
        )

    # ----- /api/show ----------------------------------------------------------------------

    def _show(self, body: Any) -> None:
        name = body.get("model") or body.get("name") or ""
        if not self.owner._known(name):
            self._send_error(404, f"model '{name}' not found")
            return
        capabilities = self.owner.models[_canonical(name)]
        self._send_json(
            200,
            {
                "modelfile": f"# Modelfile generated by the test server\nFROM {name}\n",
                "parameters": 'stop                           "<|im_end|>"',
                "template": "{{ .System }}\n{{ .Prompt }}",
                "details": self._details(),
                "model_info": {
                    "general.architecture": "llama",
                    "general.parameter_count": 8_030_261_248,
                    "llama.context_length": 8192,
                },
                "capabilities": capabilities,
                "modified_at": "2025-09-01T12:00:00.000000+00:00",
            },
        )

    @staticmethod
    def _details() -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "8.0B",
            "quantization_level": "Q4_K_M",
        }

    def _model_entry(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": "2025-09-01T12:00:00.000000+00:00",
            "size": 4_920_753_328,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": self._details(),
        }


@pytest.fixture
def ollama_server() -> Iterator[OllamaServer]:
    """A running `OllamaServer` with the default models; stopped after the test."""
    with OllamaServer() as server:
        yield server
