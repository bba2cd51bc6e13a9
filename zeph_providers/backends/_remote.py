"""What the HTTP backends share: the retry loop, the deadline, URL safety and error mapping.

A remote backend subclasses `RemoteProvider` and implements `_attempt()` (one request as an async
generator of chunks, raising typed errors) and `_map_error()` (its SDK's exceptions -> typed).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

from zeph_providers.config import RemoteConfig
from zeph_providers.errors import (
    BadResponseError,
    ConfigError,
    LlmError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from zeph_providers.protocol import BaseProvider, Capabilities, ChatOptions
from zeph_providers.retry import RetryPolicy, retry_stream
from zeph_providers.types import Message, StreamChunk

__all__ = [
    "MAX_STREAM_LINE_BYTES",
    "RemoteProvider",
    "ResponseLineTooLongError",
    "check_url_safety",
    "httpx2_client",
    "httpx_client_kwargs",
    "is_loopback",
    "map_transport_error",
]

log = logging.getLogger("zeph_providers.remote")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url_safety(config: RemoteConfig, base_url: str | None, has_key: bool) -> None:
    """Refuse (or, when allowed, warn about) an API key sent over plain http off this machine."""
    if not base_url or not has_key:
        return
    parsed = urlparse(base_url)
    if parsed.scheme == "http" and not is_loopback(parsed.hostname):
        if not config.allow_insecure_http:
            raise ConfigError(
                f"refusing to send an API key over plain http to {parsed.hostname!r}; use https, "
                "or set allow_insecure_http = true if this network is trusted",
                provider=config.name,
            )
        log.warning("provider %r: sending an API key over plain http to %r", config.name, parsed.hostname)


def map_transport_error(exc: BaseException, provider: str) -> LlmError | None:
    """httpx / httpx2 transport failures (both packages share class names) -> typed errors."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if "TimeoutException" in names or "APITimeoutError" in names:
        return ProviderTimeoutError(f"request timed out ({text})", provider=provider)
    if names & {"ConnectError", "ConnectionRefusedError", "APIConnectionError"}:
        return ProviderUnavailableError(f"cannot connect to the server ({text})", provider=provider)
    if names & {"RemoteProtocolError", "ReadError", "WriteError", "NetworkError", "ConnectionResetError"}:
        return ProviderUnavailableError(f"the connection broke ({text})", provider=provider)
    if names & {"DecodingError", "JSONDecodeError", "UnicodeDecodeError"}:
        return BadResponseError(f"malformed response body ({text})", provider=provider)
    if isinstance(exc, ResponseLineTooLongError):
        return BadResponseError(f"a streamed line exceeded {exc.limit} bytes; refusing it", provider=provider)
    if isinstance(exc, RecursionError):  # json.loads on hostile, deeply nested JSON
        return BadResponseError(f"malformed response body: JSON nested too deeply ({text})", provider=provider)
    return None


MAX_STREAM_LINE_BYTES = 16 * 1024 * 1024
"""The longest line accepted in a streamed (SSE) response: a 10 MB event still passes, an endless one is cut."""

_UNLIMITED_PATHS = ("/embeddings", "/embed")
"""One-line JSON bodies that may legitimately be large (a batch of vectors): not line-limited."""


class ResponseLineTooLongError(Exception):
    """A response line grew past the limit: refused before it is buffered whole."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"a response line exceeded {limit} bytes")


@functools.cache
def _line_limited_stream_type() -> type[Any]:
    import httpx2

    class LineLimitedStream(httpx2.AsyncByteStream):
        """Passes the body through, raising once a line (bytes since the last newline) passes the limit."""

        def __init__(self, inner: Any, limit: int) -> None:
            self._inner = inner
            self._limit = limit

        async def __aiter__(self) -> AsyncIterator[bytes]:
            pending = 0
            async for chunk in self._inner:
                newline = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
                pending = len(chunk) - newline - 1 if newline >= 0 else pending + len(chunk)
                if pending > self._limit:
                    raise ResponseLineTooLongError(self._limit)
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    return LineLimitedStream


def _line_limit_hook(limit: int) -> Callable[[Any], Awaitable[None]]:
    """An httpx2 response hook bounding line length, so a runaway line cannot grow without limit."""

    async def hook(response: Any) -> None:
        if response.request.url.path.rstrip("/").endswith(_UNLIMITED_PATHS):
            return
        response.stream = _line_limited_stream_type()(response.stream, limit)

    return hook


def httpx2_client(config: RemoteConfig, *, transport: Any = None) -> Any:
    """An `httpx2.AsyncClient` (for the openai and anthropic SDKs) with this provider's limits."""
    import httpx2

    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(config.timeout_secs, connect=config.connect_timeout_secs),
        limits=httpx2.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=min(config.max_connections, 32),
        ),
        transport=transport,
        event_hooks={"response": [_line_limit_hook(MAX_STREAM_LINE_BYTES)]},
    )


def httpx_client_kwargs(config: RemoteConfig, *, transport: Any = None) -> dict[str, Any]:
    """Keyword arguments for an `httpx.AsyncClient` (the ollama SDK takes them directly)."""
    import httpx

    kwargs: dict[str, Any] = {
        "timeout": httpx.Timeout(config.timeout_secs, connect=config.connect_timeout_secs),
        "limits": httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=min(config.max_connections, 32),
        ),
    }
    if transport is not None:
        kwargs["transport"] = transport
    return kwargs


class RemoteProvider(BaseProvider):
    """Base for HTTP backends: one retry policy and one deadline around `_attempt()`."""

    def __init__(self, config: RemoteConfig, *, capabilities: Capabilities) -> None:
        super().__init__(
            config.name,
            config.model,
            capabilities=capabilities,
            max_concurrent=config.max_concurrent,
            default_timeout=config.timeout_secs,
        )
        self.config = config
        self.retry_policy = RetryPolicy(max_retries=config.max_retries)

    def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        timeout = options.timeout if options.timeout is not None else self.config.timeout_secs
        deadline = options.deadline if options.deadline is not None else time.monotonic() + timeout
        return retry_stream(
            lambda: self._mapped_attempt(messages, options, deadline),
            self.retry_policy,
            deadline=deadline,
            provider=self.name,
        )

    async def _mapped_attempt(
        self, messages: list[Message], options: ChatOptions, deadline: float
    ) -> AsyncIterator[StreamChunk]:
        try:
            async for chunk in self._attempt(messages, options, deadline):
                yield chunk
        except LlmError:
            raise
        except Exception as exc:
            raise self._map_error(exc) from exc

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        deadline = time.monotonic() + self.config.timeout_secs

        async def attempt() -> AsyncIterator[list[list[float]]]:
            try:
                yield await self._embed_attempt(texts, deadline)
            except LlmError:
                raise
            except Exception as exc:
                raise self._map_error(exc) from exc

        async for vectors in retry_stream(attempt, self.retry_policy, deadline=deadline, provider=self.name):
            return vectors
        raise BadResponseError("no embeddings in the response", provider=self.name)

    # ----- what each backend implements ---------------------------------------------

    def _attempt(self, messages: list[Message], options: ChatOptions, deadline: float) -> AsyncIterator[StreamChunk]:
        """One request, streamed as chunks. May raise SDK errors; `_map_error` types them."""
        raise NotImplementedError

    async def _embed_attempt(self, texts: list[str], deadline: float) -> list[list[float]]:
        raise NotImplementedError

    def _map_error(self, exc: BaseException) -> LlmError:
        mapped = map_transport_error(exc, self.name)
        if mapped is not None:
            return mapped
        return ProviderUnavailableError(f"unexpected {type(exc).__name__}: {exc}", provider=self.name)

    @staticmethod
    def remaining(deadline: float) -> float:
        return max(0.001, deadline - time.monotonic())

    @staticmethod
    def parse_json_arguments(raw: str, *, provider: str, tool: str) -> dict[str, Any]:
        """A tool call's accumulated JSON argument text -> dict, or a BadResponseError."""
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise BadResponseError(f"tool call {tool!r} has invalid JSON arguments: {exc}", provider=provider) from exc
        if not isinstance(value, dict):
            raise BadResponseError(f"tool call {tool!r} arguments are not a JSON object", provider=provider)
        return value
