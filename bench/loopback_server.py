"""A fast canned-reply HTTP/1.1 server on 127.0.0.1 for the remote benchmarks.

One asyncio `Protocol` per connection, keep-alive, no framework. It answers:

- `POST /v1/chat/completions` (also `/chat/completions`): OpenAI chat.completions JSON, or an SSE
  stream of `chat.completion.chunk`s ending with a usage chunk and `data: [DONE]`;
- `POST /v1/messages`: Anthropic Messages JSON, or the Messages API event stream;
- `POST /api/chat`: Ollama NDJSON stream (or one JSON object with `"stream": false`);
- `POST /api/show`: an Ollama model card with `capabilities = ["completion"]`.

The reply has as many content pieces (one word each) as the request's `max_tokens`
(`options.num_predict` for Ollama), 8 when unset. Bodies are cached per (route, stream, n), so the
server does almost no work per request and the client process is what the benchmark measures.

Run it in its own process: `python bench/loopback_server.py --port-file PATH` writes the port and
serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The canned bodies come from the shared wire builders in tests/fakes (standard library only); this
# script runs as `python bench/loopback_server.py`, so put the repo root on the path first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes import anthropic, ollama, openai

MODEL = "bench-model"
WORDS = ("Hello", " there", "!", " How", " can", " I", " help", " you", " today", "?")


def _piece(i: int) -> str:
    return WORDS[i % len(WORDS)]


def _text(n: int) -> str:
    return "".join(_piece(i) for i in range(n))


# ----- OpenAI ----------------------------------------------------------------------------------

_OPENAI_IDS: dict[str, Any] = {"response_id": "chatcmpl-bench", "model": MODEL, "created": 1_760_000_000}


def openai_json(n: int) -> bytes:
    body = openai.completion(_text(n), prompt=12, completion_tokens=n, fingerprint="fp_bench", **_OPENAI_IDS)
    return json.dumps(body).encode()


def openai_sse(n: int) -> bytes:
    pieces = [_piece(i) for i in range(n)]
    role = {"role": "assistant", "content": ""}
    parts = openai.text_stream(
        pieces, prompt=12, completion_tokens=n, fingerprint="fp_bench", role_delta=role, **_OPENAI_IDS
    )
    return b"".join(parts)


# ----- Anthropic -------------------------------------------------------------------------------


def anthropic_json(n: int) -> bytes:
    body = anthropic.message(_text(n), input_tokens=12, output_tokens=n, model=MODEL, message_id="msg_bench")
    return json.dumps(body).encode()


def anthropic_sse(n: int) -> bytes:
    parts = anthropic.text_stream_head(input_tokens=12, model=MODEL, message_id="msg_bench")
    parts.extend(anthropic.text_delta(0, _piece(i)) for i in range(n))
    parts.extend(anthropic.text_stream_tail(output_tokens=n))
    return b"".join(parts)


# ----- Ollama ----------------------------------------------------------------------------------

_FINAL: dict[str, Any] = {
    "total_duration": 4_883_583_458,
    "load_duration": 1_334_875,
    "prompt_eval_count": 12,
    "prompt_eval_duration": 342_546_000,
    "eval_duration": 4_535_599_000,
}
_CREATED = "2026-11-01T12:00:00.000000Z"


def ollama_json(n: int) -> bytes:
    return json.dumps(ollama.final(MODEL, content=_text(n), created_at=_CREATED, **_FINAL, eval_count=n)).encode()


def ollama_ndjson(n: int) -> bytes:
    lines = [ollama.line(ollama.delta(MODEL, _piece(i), created_at=_CREATED)) for i in range(n)]
    lines.append(ollama.line(ollama.final(MODEL, created_at=_CREATED, **_FINAL, eval_count=n)))
    return b"".join(lines)


OLLAMA_SHOW = json.dumps(
    {
        "modelfile": "FROM bench-model",
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "135M",
            "quantization_level": "Q4_1",
        },
        "model_info": {"general.architecture": "llama"},
        "capabilities": ["completion"],
        "modified_at": _CREATED,
    }
).encode()

# ----- routing ---------------------------------------------------------------------------------

Builder = Callable[[int], bytes]
ROUTES: dict[str, tuple[Builder, Builder, bytes, bytes]] = {
    # path: (json body, stream body, json content type, stream content type)
    "/v1/chat/completions": (openai_json, openai_sse, b"application/json", b"text/event-stream; charset=utf-8"),
    "/chat/completions": (openai_json, openai_sse, b"application/json", b"text/event-stream; charset=utf-8"),
    "/v1/messages": (anthropic_json, anthropic_sse, b"application/json", b"text/event-stream; charset=utf-8"),
    "/api/chat": (ollama_json, ollama_ndjson, b"application/json; charset=utf-8", b"application/x-ndjson"),
}
_cache: dict[tuple[str, bool, int], bytes] = {}


def _response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: "
        + content_type
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: keep-alive\r\n\r\n"
        + body
    )


def respond(path: str, body: bytes) -> bytes:
    if path == "/api/show":
        return _response(b"200 OK", b"application/json; charset=utf-8", OLLAMA_SHOW)
    route = ROUTES.get(path)
    if route is None:
        return _response(b"404 Not Found", b"application/json", b'{"error": "not found"}')
    try:
        request = json.loads(body) if body else {}
    except ValueError:
        return _response(b"400 Bad Request", b"application/json", b'{"error": "bad json"}')
    if path == "/api/chat":
        stream = request.get("stream", True) is not False
        n = (request.get("options") or {}).get("num_predict") or 8
    else:
        stream = bool(request.get("stream", False))
        n = request.get("max_tokens") or request.get("max_completion_tokens") or 8
    key = (path, stream, int(n))
    cached = _cache.get(key)
    if cached is None:
        json_body, stream_body, json_type, stream_type = route
        cached = (
            _response(b"200 OK", stream_type, stream_body(n))
            if stream
            else _response(b"200 OK", json_type, json_body(n))
        )
        _cache[key] = cached
    return cached


class HttpProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1: request line + headers + Content-Length body, pipelined keep-alive."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            parts = lines[0].split(" ")
            path = parts[1].split("?", 1)[0] if len(parts) > 1 else "/"
            assert self.transport is not None
            self.transport.write(respond(path, body))


async def serve(port_file: Path | None, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HttpProtocol, "127.0.0.1", port, backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(bound))
        os.replace(tmp, port_file)
    else:
        print(bound, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    args = parser.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port_file, args.port))


if __name__ == "__main__":
    main()
