"""The Ollama backend, on the official `ollama` SDK's `AsyncClient`.

- `chat_stream()` streams on the wire (`/api/chat`, NDJSON). `chat()` (options.stream False) asks
  for one non-streamed reply (`"stream": false`: one JSON object, the final message whole) and
  converts it with the same code as a stream's parts, so `chat()` equals `chat_stream().response`.
  `message.content` deltas become `ContentChunk`s, `message.thinking` `ThinkingChunk`s, and the
  complete `tool_calls` Ollama sends (without ids) one `ToolCallDeltaChunk` each (the whole
  arguments as JSON text) and then their `ToolUseChunk`s, with deterministic ids.
- Forced tools (`tool_choice` "required" or a tool's name), which Ollama's API cannot ask for, are
  emulated with its schema-constrained `format` (the schema of one call object; see
  `_ollama_request`): the reply's JSON text is not streamed as text but parsed into the call,
  finish reason "tool_use"; a malformed reply is `BadResponseError`. Together with
  `response_format` (which needs `format` too) it is refused with `UnsupportedCapabilityError`.
- The request body is built here in Ollama's documented shape and posted through the SDK's
  request machinery (`AsyncClient._request`): the SDK's public `chat()` re-validates tools through
  a narrow pydantic model that drops nested object schemas, `anyOf` and `additionalProperties`,
  which would silently change what the model is told. A stream is read the way the SDK's
  `_request(stream=True)` reads it (same httpx client, status check, `error` lines), but each NDJSON
  line is parsed into a plain dict and shape-checked here, without a `ChatResponse` model per line.
- Capabilities come from `/api/show` (`capabilities`: completion, tools, vision, thinking,
  embedding), fetched once before the first chat and cached; `refresh_capabilities()` re-reads them.
- The provider owns the httpx client: its timeouts, pool limits and transport (tests pass one).
  A thin transport wrapper records each response's headers (for `Retry-After`, which the SDK's
  `ResponseError` does not carry) and bounds an NDJSON line's length, so a runaway line fails
  with `BadResponseError` instead of growing without limit.

Layout: capabilities (`/api/show`), then the request (its body built in `_ollama_request`; every
non-streamed call goes through one `_post()`, which records headers and types the SDK's errors),
the stream (the message-object -> chunk translator lives in `_ollama_reply`), embeddings, and
errors (what a forced tool needs and excludes is `_ollama_request.check_forced`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import ollama
from pydantic import ValidationError

from zeph_providers.backends._convert import report_embedding_usage
from zeph_providers.backends._errors import error_event, status_error
from zeph_providers.backends._models import ollama_context_length, ollama_models
from zeph_providers.backends._ollama_reply import chat_chunks
from zeph_providers.backends._ollama_request import chat_payload, check_forced, forced_tools
from zeph_providers.backends._remote import RemoteProvider, httpx_client_kwargs
from zeph_providers.backends._wire import drain, iter_lines, loads
from zeph_providers.config import OllamaConfig
from zeph_providers.errors import (
    BadResponseError,
    ConfigError,
    InvalidRequestError,
    LlmError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnsupportedCapabilityError,
)
from zeph_providers.models_info import ModelInfo
from zeph_providers.options import Capabilities, ChatOptions
from zeph_providers.types import (
    Message,
    StreamChunk,
    ToolDefinition,
)

__all__ = ["DEFAULT_MAX_LINE_BYTES", "OllamaProvider", "build"]

log = logging.getLogger("zeph_providers.ollama")

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
"""The longest NDJSON line accepted from `/api/chat` (a token or one tool call per line)."""

_META_KEY = "zeph_providers.ollama.meta"


# ----- response headers (for Retry-After, which the SDK's ResponseError does not carry) --------


@dataclasses.dataclass
class _ResponseMeta:
    """Filled by the response hook for one request: the response's status and headers."""

    status: int | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def _record(response: httpx.Response) -> None:
    meta = response.request.extensions.get(_META_KEY)
    if isinstance(meta, _ResponseMeta):
        meta.status = response.status_code
        meta.headers = {k.lower(): v for k, v in response.headers.items()}


# ----- the provider -----------------------------------------------------------------------


class OllamaProvider(RemoteProvider[OllamaConfig]):
    """An Ollama server (`/api/chat`, `/api/embed`, `/api/show`) through the official SDK."""

    backend = "ollama"
    http_package = "httpx"

    def __init__(
        self,
        config: OllamaConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        embeddings = config.embedding_model is not None
        # What the base's synchronous checks use until /api/show answers: optimistic about vision
        # (checked again once known); `capabilities` reports vision False until then.
        super().__init__(
            config,
            capabilities=Capabilities(
                streaming=True, embeddings=embeddings, tools=True, vision=True, structured_output=True
            ),
        )
        self._reported = Capabilities(streaming=True, embeddings=embeddings, tools=True, structured_output=True)
        self._caps_known = False
        self._caps_lock = asyncio.Lock()
        self._completion = True

        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        kwargs = httpx_client_kwargs(config, transport=transport, line_limit=max_line_bytes, on_response=_record)
        extra_headers = kwargs.pop("headers")
        self._client = ollama.AsyncClient(host=config.base_url, headers=headers or None, **kwargs)
        if not hasattr(self._client, "_request"):  # pragma: no cover - guards a future SDK change
            raise ConfigError("this version of the ollama SDK is not supported (no AsyncClient._request)")
        http = self._client._client
        http.headers.update(extra_headers)
        if not self.api_key:
            # The SDK sends OLLAMA_API_KEY from the environment to whatever host is configured;
            # only a key the config asked for (api_key / api_key_env) may leave the process.
            http.headers.pop("authorization", None)
        self.base_url = str(http.base_url).rstrip("/")
        self._on_close(http.aclose)

    # ----- capabilities -----------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities if self._caps_known else self._reported

    async def refresh_capabilities(self) -> Capabilities:
        """Read the model's capabilities from `/api/show` now (also done once, lazily, before the first chat)."""
        deadline = time.monotonic() + self.config.timeout_secs
        try:
            async with self._caps_lock:
                await self.within(deadline, self._fetch_capabilities(deadline))
        except LlmError:
            raise
        except Exception as exc:
            raise self._map_error(exc) from exc
        return self.capabilities

    async def _ensure_capabilities(self, deadline: float) -> None:
        if self._caps_known:
            return
        async with self._caps_lock:
            if not self._caps_known:
                await self.within(deadline, self._fetch_capabilities(deadline))

    async def _fetch_capabilities(self, deadline: float) -> None:
        try:
            shown = await self._post("/api/show", {"model": self.model}, deadline, response_type=ollama.ShowResponse)
        except LlmError as exc:
            cause = exc.__cause__
            if isinstance(cause, ollama.ResponseError) and cause.status_code in (405, 501):
                # A proxy or server without /api/show: keep the defaults rather than refuse every call.
                log.warning("provider %r: /api/show failed (%s); not restricting requests", self.name, cause)
                self._caps_known = True
                return
            raise
        except ValidationError as exc:
            log.warning("provider %r: unexpected /api/show answer (%s); not restricting requests", self.name, exc)
            self._caps_known = True
            return
        self._fetched_window = ollama_context_length(shown.modelinfo)  # `<arch>.context_length`
        names = shown.capabilities
        embeddings = self.config.embedding_model is not None
        if names is None:
            # An older server that does not list capabilities: do not refuse anything it may support.
            log.info("provider %r: /api/show lists no capabilities; not restricting requests", self.name)
            self._capabilities = Capabilities(
                streaming=True, embeddings=embeddings, tools=True, vision=True, structured_output=True
            )
        else:
            listed = set(names)
            self._capabilities = Capabilities(
                streaming=True,
                embeddings=embeddings,
                tools="tools" in listed,
                vision="vision" in listed,
                structured_output="completion" in listed,
                thinking="thinking" in listed,
            )
            self._completion = "completion" in listed
        self._caps_known = True

    # ----- model metadata (wire shapes in `_models`; see `zeph_providers.models_info`) ----

    async def fetch_context_window(self) -> int | None:
        """The model's trained window from `/api/show` (read with the capabilities). Ollama runs a
        model with `num_ctx` tokens (its own default is smaller), settable per call: `extra={"num_ctx": N}`."""
        if not self._caps_known:
            await self.refresh_capabilities()
        return self._fetched_window

    @property
    def context_window(self) -> int | None:
        return self._fetched_window  # no table for Ollama's model names: known once /api/show answered

    async def _list_models(self, deadline: float) -> list[ModelInfo]:
        """`GET /api/tags`: the models pulled on this server (their windows: `fetch_context_window()`)."""
        response = await self._post("/api/tags", None, deadline, method="GET")
        return ollama_models(loads(response.content, provider=self.name), self.name)

    async def count_tokens(self, messages: Sequence[Message], *, tools: Sequence[ToolDefinition] = ()) -> int:
        detail = "Ollama's API has no tokenize endpoint; its replies report prompt_eval_count after the fact"
        raise UnsupportedCapabilityError("count_tokens", provider=self.name, detail=detail)

    # ----- request checks ---------------------------------------------------------------

    def _check_request(self, messages: list[Message], options: ChatOptions) -> None:
        choice = options.tool_choice
        if choice not in (None, "auto", "none"):
            check_forced(choice, options, structured_output=self._capabilities.structured_output, provider=self.name)
            # Emulated with `format`: the model's own tool support is not needed, structured output is.
            options = dataclasses.replace(options, tools=())
        if choice == "none":
            options = dataclasses.replace(options, tools=())
        super()._check_request(messages, options)

    # ----- chat (the request body: `_ollama_request.chat_payload`) ------------------------

    async def _attempt(
        self, messages: list[Message], options: ChatOptions, deadline: float
    ) -> AsyncIterator[StreamChunk]:
        await self._ensure_capabilities(deadline)
        if not self._completion:
            raise UnsupportedCapabilityError(
                "chat", provider=self.name, detail=f"{self.model!r} is not a completion model"
            )
        self._check_request(messages, options)  # again, now that the model's capabilities are known
        payload = chat_payload(self.config, self.model, messages, options)
        forced = forced_tools(options)
        meta = _ResponseMeta()
        if not options.stream:
            for chunk in await self._complete(payload, meta, deadline, forced):
                yield chunk
            return
        try:
            parts = self._stream_parts(payload, meta, deadline)
            try:
                async for chunk in chat_chunks(parts, forced, self.name):
                    yield chunk
            finally:
                await _aclose(parts)
        except ollama.ResponseError as exc:
            raise self._response_error(exc, meta) from exc

    async def _complete(
        self, payload: dict[str, Any], meta: _ResponseMeta, deadline: float, forced: list[ToolDefinition] | None
    ) -> list[StreamChunk]:
        """One non-streamed `/api/chat` request, converted whole before the first chunk (retryable).

        The body is one JSON object; a server that streams NDJSON anyway is read line by line, the
        same as a stream. An `{"error": ...}` object is typed as the same error line in a stream.
        """
        response = await self._post("/api/chat", payload, deadline, meta=meta)
        content = response.content
        try:
            bodies = [loads(content, provider=self.name)]
        except BadResponseError:  # NDJSON after all (or not JSON: then each line's error says why)
            bodies = [loads(line, provider=self.name) for line in content.splitlines() if line.strip()]
        parts: list[dict[str, Any]] = []
        for body in bodies:
            if not isinstance(body, dict):
                raise BadResponseError("malformed response (the body is not a JSON object)", provider=self.name)
            if error := body.get("error"):
                raise self._response_error(ollama.ResponseError(str(error)), meta)
            parts.append(body)

        async def replay() -> AsyncIterator[dict[str, Any]]:
            for part in parts:
                yield part

        return [chunk async for chunk in chat_chunks(replay(), forced, self.name)]

    async def _stream_parts(
        self, payload: dict[str, Any], meta: _ResponseMeta, deadline: float
    ) -> AsyncIterator[dict[str, Any]]:
        """The SDK's streamed `/api/chat` request (its own `_request(stream=True)`, line for line),
        yielding each NDJSON line as a plain dict instead of building a `ChatResponse` model."""
        async with self._client._client.stream(
            "POST", "/api/chat", json=payload, timeout=self._timeout(deadline), extensions={_META_KEY: meta}
        ) as response:
            try:
                response.raise_for_status()
            except httpx.HTTPStatusError as exc:
                await exc.response.aread()
                raise ollama.ResponseError(exc.response.text, exc.response.status_code) from None
            body = response.aiter_bytes()
            async for line in iter_lines(body):
                part = loads(line, provider=self.name, what="line")  # invalid UTF-8 is refused, not replaced
                if not isinstance(part, dict):
                    raise BadResponseError("the server sent a line that is not a JSON object", provider=self.name)
                if err := part.get("error"):
                    raise ollama.ResponseError(err)
                if part.get("done") is True:
                    # Read on to the end of the body (bounded; normally nothing follows the done
                    # line), so the connection returns to the pool.
                    await drain(body)
                yield part

    # ----- embeddings ---------------------------------------------------------------------

    async def _embed_attempt(self, texts: list[str], deadline: float) -> list[list[float]]:
        body: dict[str, Any] = {"model": self.config.embedding_model or self.model, "input": texts}
        if self.config.keep_alive is not None:
            body["keep_alive"] = self.config.keep_alive
        result = await self._post("/api/embed", body, deadline, response_type=ollama.EmbedResponse, model=body["model"])
        vectors = [list(vector) for vector in result.embeddings]
        if len(vectors) != len(texts):
            raise BadResponseError(
                f"asked for {len(texts)} embeddings, the server returned {len(vectors)}", provider=self.name
            )
        report_embedding_usage(getattr(result, "prompt_eval_count", None), provider=self.name)
        return vectors

    # ----- errors -------------------------------------------------------------------------

    async def _post(
        self,
        path: str,
        body: dict[str, Any] | None,
        deadline: float,
        *,
        response_type: Any = None,
        meta: _ResponseMeta | None = None,
        model: str | None = None,
        method: str = "POST",
    ) -> Any:
        """One non-streamed request through the SDK (`/api/show`, `/api/chat`, `/api/embed`).

        Returns the SDK's `response_type` model, or the raw `httpx.Response` when none is given.
        The response's status and headers are recorded in `meta` (for `Retry-After`); the SDK's
        `ConnectionError` and `ResponseError` become typed errors, with `model` named in a 404.
        """
        meta = meta if meta is not None else _ResponseMeta()
        options: dict[str, Any] = {"json": body, "timeout": self._timeout(deadline), "extensions": {_META_KEY: meta}}
        try:
            if response_type is None:
                request_raw: Any = self._client._request_raw  # the SDK leaves it untyped
                return await request_raw(method, path, **options)
            return await self._client._request(response_type, method, path, **options)
        except ConnectionError as exc:
            raise self._connection_error(exc) from _sdk_cause(exc)
        except ollama.ResponseError as exc:
            raise self._response_error(exc, meta, model=model) from exc

    def _response_error(self, exc: ollama.ResponseError, meta: _ResponseMeta, *, model: str | None = None) -> LlmError:
        status = exc.status_code
        message = str(exc.error)
        lowered = message.lower()
        model = model or self.model
        if status == 404 and "not found" in lowered:
            return InvalidRequestError(
                f"HTTP 404: {message}; the model {model!r} is not on the Ollama server at {self.base_url}: "
                f"run `ollama pull {model}`",
                provider=self.name,
            )
        if status < 0:  # an {"error": ...} line inside a 200 stream
            return error_event(message, provider=self.name)
        return status_error(status, message, provider=self.name, headers=meta.headers)

    def _connection_error(self, exc: ConnectionError) -> LlmError:
        """The SDK turns httpx's ConnectError into a bare ConnectionError `from None`; type the original."""
        return self._map_error(_sdk_cause(exc))

    def _map_error(self, exc: BaseException) -> LlmError:
        if isinstance(exc, json.JSONDecodeError):
            return BadResponseError(f"the server sent a line that is not valid JSON ({exc})", provider=self.name)
        if isinstance(exc, ValidationError):
            return BadResponseError(
                f"the server sent a message of an unexpected shape ({exc.error_count()} problems)", provider=self.name
            )
        if isinstance(exc, httpx.TimeoutException):
            return ProviderTimeoutError(
                f"no answer from Ollama at {self.base_url} in time ({type(exc).__name__})", provider=self.name
            )
        if isinstance(exc, httpx.ConnectError | ConnectionError):
            return ProviderUnavailableError(
                f"cannot connect: is Ollama running at {self.base_url}? ({type(exc).__name__}: {exc})",
                provider=self.name,
            )
        return super()._map_error(exc)


def _sdk_cause(exc: BaseException) -> BaseException:
    """The exception the SDK replaced (its `raise ... from None` keeps it only as `__context__`)."""
    context = exc.__context__
    return context if isinstance(context, Exception) else exc


async def _aclose(source: AsyncIterator[Any]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        # A broken connection may fail to close; the error that matters has already surfaced.
        with contextlib.suppress(Exception):
            await aclose()


build = OllamaProvider.build
