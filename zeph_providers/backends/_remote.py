"""What the HTTP backends share: the provider base (key, URL, clients, deadline, retries) and re-exports.

A remote backend subclasses `RemoteProvider[ItsConfig]` and implements `_attempt()` (one request
as an async generator of chunks, raising typed errors), `_map_error()` (its SDK's exceptions ->
typed) and, with embeddings, `_embed_attempt()`. The wire pieces live in `_wire` (bodies, lines,
drain, JSON), `_tools` (tool-call fragments) and `_errors` (status and error events -> typed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar
from urllib.parse import urlparse

from zeph_providers.backends._errors import map_transport_error
from zeph_providers.backends._wire import (
    ACCEPT_ENCODING,
    MAX_STREAM_LINE_BYTES,
    ResponseLineTooLongError,
    line_limit_hook,
)
from zeph_providers.base import BaseProvider
from zeph_providers.config import RemoteConfig
from zeph_providers.errors import (
    BadResponseError,
    ConfigError,
    LlmError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    UnsupportedCapabilityError,
    parse_retry_after,
    register_secret,
)
from zeph_providers.models_info import ModelInfo, ModelsCache, known_context_window
from zeph_providers.options import Capabilities, ChatOptions
from zeph_providers.retry import RetryPolicy, retry_stream
from zeph_providers.types import Message, StreamChunk

if TYPE_CHECKING:
    from zeph_providers.registry import Registry

__all__ = [
    "MAX_STREAM_LINE_BYTES",
    "RemoteProvider",
    "server_attributes",
    "ResponseLineTooLongError",
    "check_url_safety",
    "httpx2_client",
    "httpx_client_kwargs",
    "is_loopback",
    "map_transport_error",
]

log = logging.getLogger("zeph_providers.remote")

ConfigT = TypeVar("ConfigT", bound=RemoteConfig)
T = TypeVar("T")


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


def server_attributes(base_url: str | None) -> dict[str, Any]:
    """OpenTelemetry's `server.address` / `server.port` for a base URL: the host and the port (the
    scheme's default when the URL names none); never the path, query or any credentials in it."""
    if not base_url:
        return {}
    try:
        parsed = urlparse(base_url)
        host, port = parsed.hostname, parsed.port
    except ValueError:  # a malformed port: report nothing rather than fail the call
        return {}
    if not host:
        return {}
    if port is None:
        port = {"https": 443, "http": 80}.get(parsed.scheme.lower())
    attributes: dict[str, Any] = {"server.address": host}
    if port is not None:
        attributes["server.port"] = port
    return attributes


def _client_kwargs(
    module: Any, config: RemoteConfig, transport: Any, limit: int | None, on_response: Callable[[Any], None] | None
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "timeout": module.Timeout(config.timeout_secs, connect=config.connect_timeout_secs),
        "limits": module.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=min(config.max_connections, 32),
        ),
        "headers": {"accept-encoding": ACCEPT_ENCODING},
        "event_hooks": {"response": [line_limit_hook(limit, on_response=on_response)]},
    }
    if transport is not None:
        kwargs["transport"] = transport
    return kwargs


def httpx2_client(
    config: RemoteConfig,
    *,
    transport: Any = None,
    line_limit: int = MAX_STREAM_LINE_BYTES,
    on_response: Callable[[Any], None] | None = None,
) -> Any:
    """An `httpx2.AsyncClient` (for the openai and anthropic SDKs) with this provider's limits;
    `on_response` sees every response's status and headers first (`RemoteProvider.observe_response`)."""
    import httpx2

    return httpx2.AsyncClient(**_client_kwargs(httpx2, config, transport, line_limit, on_response))


def httpx_client_kwargs(
    config: RemoteConfig,
    *,
    transport: Any = None,
    line_limit: int = MAX_STREAM_LINE_BYTES,
    on_response: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for an `httpx.AsyncClient` (the ollama SDK takes them directly)."""
    import httpx

    return _client_kwargs(httpx, config, transport, line_limit, on_response)


class RemoteProvider(BaseProvider, Generic[ConfigT]):
    """Base for HTTP backends: the key and URL checks, one retry policy and one deadline per call."""

    default_base_url: ClassVar[str | None] = None
    http_package: ClassVar[str] = "httpx2"
    """The HTTP package of this backend's SDK: `_timeout()` builds its `Timeout`."""

    def __init__(self, config: ConfigT, *, capabilities: Capabilities) -> None:
        super().__init__(
            config.name,
            config.model,
            capabilities=capabilities,
            max_concurrent=config.max_concurrent,
            default_timeout=config.timeout_secs,
            structured_retries=config.structured_retries,
        )
        self.config: ConfigT = config
        self.retry_policy = RetryPolicy(max_retries=config.max_retries)
        self._secret = config.secret()  # raises ConfigError when a required key is missing
        register_secret(self.api_key)
        self.base_url: str = (config.base_url or self.default_base_url or "").rstrip("/")
        check_url_safety(config, self.base_url, has_key=bool(self.api_key))
        self._server = server_attributes(self.base_url)
        self._closers: list[Callable[[], Awaitable[Any]]] = []
        self._closed = False
        self.models_cache = ModelsCache()
        """This provider's `list_models()` answer, reused for `models_info.MODELS_CACHE_SECS`."""
        self._fetched_window: int | None = None
        """The context window a request found out (`fetch_context_window()`), once known."""

    @property
    def api_key(self) -> str | None:
        """The key the config asked for (kept as a `SecretStr`, so `vars()` / repr never show it)."""
        return self._secret.get_secret_value() if self._secret is not None else None

    def call_attributes(self) -> dict[str, Any]:
        """`server.address` and `server.port` of the API this provider talks to (for spans)."""
        return dict(self._server)

    @classmethod
    def build(cls, config: Any, registry: Registry | None = None) -> Any:
        """The factory's entry: a provider for `config` (the registry is for backends that need one)."""
        factory: Any = cls  # subclasses take (config, *, transport=None)
        return factory(config)

    # ----- one call: deadline, retries, typed errors ----------------------------------

    def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        timeout = options.timeout if options.timeout is not None else self.config.timeout_secs
        deadline = options.deadline if options.deadline is not None else time.monotonic() + timeout
        return retry_stream(
            lambda: self._mapped(self._attempt(messages, options, deadline)),
            self.retry_policy,
            deadline=deadline,
            provider=self.name,
        )

    def observe_response(self, response: Any) -> None:
        """Every HTTP response's headers feed the rate limiter (`x-ratelimit-*`,
        `anthropic-ratelimit-*`; a 429's `Retry-After` blocks it until then)."""
        limiter = self.rate_limiter
        if limiter is None:
            return
        try:
            headers = response.headers
            limiter.observe_headers(headers)
            if response.status_code == 429:
                limiter.observe_retry_after(parse_retry_after(headers))
        except Exception as exc:  # feedback never fails a response
            log.debug("provider %r: rate-limit headers not read (%s)", self.name, type(exc).__name__)

    async def _mapped(self, source: AsyncIterator[T]) -> AsyncIterator[T]:
        try:
            async for item in source:
                yield item
        except LlmError as exc:
            if exc.provider is None:
                exc.provider = self.name
            if isinstance(exc, RateLimitError) and self.rate_limiter is not None:
                self.rate_limiter.observe_retry_after(exc.retry_after)  # also a 429 seen as an error event
            raise
        except Exception as exc:
            raise self._map_error(exc) from exc

    async def _embed_batch(
        self,
        texts: list[str],
        request: Callable[[list[str], float], Awaitable[list[list[float]]]] | None = None,
    ) -> list[list[float]]:
        """`request(texts, deadline)` (default `_embed_attempt`) under the retry policy and deadline."""
        deadline = time.monotonic() + self.config.timeout_secs
        send = request or self._embed_attempt

        async def attempt() -> AsyncIterator[list[list[float]]]:
            yield await self.within(deadline, send(texts, deadline))

        async for vectors in retry_stream(
            lambda: self._mapped(attempt()), self.retry_policy, deadline=deadline, provider=self.name
        ):
            return vectors
        raise BadResponseError("no embeddings in the response", provider=self.name)

    async def api_call(self, request: Callable[[float], Awaitable[T]]) -> T:
        """One metadata request (`request(deadline)`: list models, count tokens...), with the chat
        calls' deadline (`timeout_secs`), retry policy and typed errors."""
        deadline = time.monotonic() + self.config.timeout_secs

        async def attempt() -> AsyncIterator[T]:
            yield await self.within(deadline, request(deadline))

        async for value in retry_stream(
            lambda: self._mapped(attempt()), self.retry_policy, deadline=deadline, provider=self.name
        ):
            return value
        raise BadResponseError("no answer", provider=self.name)  # pragma: no cover - attempt always yields

    async def within(self, deadline: float, work: Awaitable[T]) -> T:
        """`work`, cut off at the deadline (a drip-fed reply never passes the SDK's read timeout)."""
        try:
            async with asyncio.timeout(self.remaining(deadline)):
                return await work
        except TimeoutError as exc:
            raise ProviderTimeoutError("no complete answer within the call's deadline", provider=self.name) from exc

    # ----- model metadata (`zeph_providers.models_info`) ------------------------------

    @property
    def context_window(self) -> int | None:
        """What a request found out (`fetch_context_window()`), else the maintained table's figure."""
        return self._fetched_window if self._fetched_window is not None else known_context_window(self.model)

    async def list_models(self, *, refresh: bool = False) -> list[ModelInfo]:
        """The server's model list (`_list_models`), cached for `models_info.MODELS_CACHE_SECS`."""
        return await self.models_cache.get(lambda: self.api_call(self._list_models), refresh=refresh)

    async def _list_models(self, deadline: float) -> list[ModelInfo]:
        raise UnsupportedCapabilityError("list_models", provider=self.name, detail="this backend lists no models")

    # ----- what each backend implements ---------------------------------------------

    def _attempt(self, messages: list[Message], options: ChatOptions, deadline: float) -> AsyncIterator[StreamChunk]:
        """One request, streamed as chunks. May raise SDK errors; `_map_error` types them."""
        raise NotImplementedError

    async def _embed_attempt(self, texts: list[str], deadline: float) -> list[list[float]]:
        raise NotImplementedError

    def _map_error(self, exc: BaseException) -> LlmError:
        cause = exc.__cause__ if type(exc).__name__ == "APIConnectionError" else None
        for candidate in (cause, exc):
            mapped = map_transport_error(candidate, self.name) if candidate is not None else None
            if mapped is not None:
                return mapped
        if isinstance(exc, ValueError | TypeError | KeyError | AttributeError):
            return BadResponseError(f"malformed response ({type(exc).__name__}: {exc})", provider=self.name)
        return ProviderUnavailableError(f"unexpected {type(exc).__name__}: {exc}", provider=self.name)

    # ----- helpers --------------------------------------------------------------------

    @staticmethod
    def remaining(deadline: float) -> float:
        return max(0.001, deadline - time.monotonic())

    def _timeout(self, deadline: float) -> Any:
        """The SDK's per-request timeout for what is left of the call."""
        module: Any = __import__(self.http_package)
        remaining = self.remaining(deadline)
        return module.Timeout(remaining, connect=min(remaining, self.config.connect_timeout_secs))

    def _on_close(self, close: Callable[[], Awaitable[Any]]) -> None:
        """Register a client's close for `aclose()` (run in order, each even if one fails)."""
        self._closers.append(close)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        for close in self._closers:
            try:
                await close()
            except Exception as exc:  # pragma: no cover - close the rest, report the first
                errors.append(exc)
        if errors:
            raise errors[0]
