"""Bytes and JSON on the wire, shared by the HTTP backends (httpx for Ollama, httpx2 for the SDKs).

- One line-limited body for both HTTP packages, installed as a response hook: it decodes the body
  itself (gzip / deflate), so the limit counts DECODED bytes and a small compressed reply cannot
  unpack into an endless line; CR, LF and CRLF all end a line.
- One bounded post-end drain: after the final event, what is left of the body is read (so the
  connection is reused) for at most `DRAIN_BYTES` and `DRAIN_SECONDS`, and never fails the reply.
- One JSON reader: invalid JSON, non-finite or over-long numbers, invalid UTF-8 and hostile nesting
  are `BadResponseError`; `count()` checks token counts and indexes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import json
import math
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from zeph_providers.errors import BadResponseError

__all__ = [
    "ACCEPT_ENCODING",
    "DRAIN_BYTES",
    "DRAIN_SECONDS",
    "MAX_STREAM_LINE_BYTES",
    "ResponseLineTooLongError",
    "count",
    "drain",
    "iter_lines",
    "line_limit_hook",
    "loads",
]

MAX_STREAM_LINE_BYTES = 16 * 1024 * 1024
"""The longest (decoded) line accepted in a response: a 10 MB event still passes, an endless one is cut."""

ACCEPT_ENCODING = "gzip, deflate"
"""What we ask servers for: the encodings this module decodes (and so can bound) itself."""

DRAIN_BYTES = 1 << 20
"""Bytes read past the end of a reply to reuse the connection; more and the connection is closed."""

DRAIN_SECONDS = 0.5
"""How long the post-end drain waits for the body's end; a server holding it open loses the connection."""

_UNLIMITED_PATHS = ("/embeddings", "/embed")
"""One-line JSON bodies that may legitimately be large (a batch of vectors): not line-limited."""

_DECODE_STEP = 64 * 1024


class ResponseLineTooLongError(Exception):
    """A response line grew past the limit: refused before it is buffered whole."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"a response line exceeded {limit} bytes")


def _decompressor(encoding: str) -> Any:
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if encoding == "deflate":
        return _Deflate()
    return None


class _Deflate:
    """`deflate` as servers send it: zlib-wrapped, or (wrongly, but commonly) raw."""

    def __init__(self) -> None:
        self._inner: Any = None
        self.unconsumed_tail = b""
        self.eof = False

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        if self._inner is None:
            self._inner = zlib.decompressobj()
            try:
                out: bytes = self._inner.decompress(data, max_length)
            except zlib.error:
                self._inner = zlib.decompressobj(-zlib.MAX_WBITS)
                out = self._inner.decompress(data, max_length)
        else:
            out = self._inner.decompress(data, max_length)
        self.unconsumed_tail = self._inner.unconsumed_tail
        self.eof = self._inner.eof
        return out


async def _decoded(raw: AsyncIterator[bytes], encoding: str) -> AsyncIterator[bytes]:
    """Decompress in bounded steps, so one small compressed chunk never becomes one huge buffer."""
    codec = _decompressor(encoding)
    if codec is None:
        async for chunk in raw:
            yield chunk
        return
    try:
        async for chunk in raw:
            data = chunk
            while data:
                out = codec.decompress(data, _DECODE_STEP)
                data = codec.unconsumed_tail
                if out:
                    yield out
    except zlib.error as exc:
        raise BadResponseError(f"malformed {encoding} response body ({exc})") from exc


class _LineCounter:
    """Bytes since the last line end (CR or LF); raises once a line passes the limit."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.pending = 0

    def check(self, chunk: bytes) -> None:
        if self.limit is None:
            return
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
        self.pending = len(chunk) - end - 1 if end >= 0 else self.pending + len(chunk)
        if self.pending > self.limit:
            raise ResponseLineTooLongError(self.limit)


@functools.cache
def _limited_stream_type(package: str) -> type[Any]:
    """The body wrapper as a subclass of `package.AsyncByteStream` (httpx and httpx2 alike)."""
    base: Any = importlib.import_module(package).AsyncByteStream

    class LineLimitedStream(base):  # type: ignore[misc]
        """Yields the decoded body, raising once a decoded line passes the limit."""

        def __init__(self, inner: Any, limit: int | None, encoding: str) -> None:
            self._inner = inner
            self._counter = _LineCounter(limit)
            self._encoding = encoding

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in _decoded(self._inner.__aiter__(), self._encoding):
                self._counter.check(chunk)
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    return LineLimitedStream


def line_limit_hook(
    limit: int | None = MAX_STREAM_LINE_BYTES, *, on_response: Callable[[Any], None] | None = None
) -> Callable[[Any], Awaitable[None]]:
    """A response hook (httpx or httpx2) that decodes the body here and bounds its lines.

    The `content-encoding` header is removed once the body is decoded, so the client does not
    decode it a second time. `on_response` sees every response first (e.g. to record headers).
    """

    async def hook(response: Any) -> None:
        if on_response is not None:
            on_response(response)
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding and _decompressor(encoding) is None and encoding != "identity":
            return  # not asked for (see ACCEPT_ENCODING): left to the client, as before
        unlimited = response.request.url.path.rstrip("/").endswith(_UNLIMITED_PATHS)
        package = type(response).__module__.split(".")[0]
        response.stream = _limited_stream_type(package)(response.stream, None if unlimited else limit, encoding)
        if encoding:
            del response.headers["content-encoding"]

    return hook


async def drain(body: AsyncIterator[bytes], *, seconds: float = DRAIN_SECONDS, limit: int = DRAIN_BYTES) -> None:
    """Read what is left of a finished reply (normally nothing) so the connection can be reused.

    Bounded in bytes and time, and silent: a body that stays open or breaks after the end of a
    complete reply only costs the connection, never the reply.
    """
    drained = 0
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            async for chunk in body:
                drained += len(chunk)
                if drained > limit:
                    break


async def iter_lines(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """NDJSON: the non-blank lines of a byte stream (LF or CRLF), undecoded."""
    pending = b""
    async for chunk in body:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:32]}")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def loads(data: str | bytes, *, provider: str | None, what: str = "response") -> Any:
    """Parse JSON from a server; anything a hostile body can do is `BadResponseError`."""
    try:
        return json.loads(data, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError as exc:
        raise BadResponseError(f"malformed {what}: JSON nested too deeply", provider=provider) from exc
    except (ValueError, OverflowError) as exc:  # JSONDecodeError, UnicodeDecodeError, >4300 digits
        raise BadResponseError(f"malformed {what} ({type(exc).__name__}: {str(exc)[:200]})", provider=provider) from exc


def count(value: Any, what: str, *, provider: str | None) -> int:
    """A token count or an index: a non-negative integer (None -> 0); anything else is `BadResponseError`."""
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.isdigit() and len(value) < 20:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 63:
        raise BadResponseError(f"malformed response: {what} is not a non-negative integer", provider=provider)
    return value
