"""`BaseProvider`: the shared behaviour every built-in backend (and most plugins) builds on.

A backend implements one method, `stream_chunks(messages, options)`, an async generator of stream
chunks. The base turns it into `chat_stream()` (an async iterator and async context manager) and
`chat()`, which assembles the very same chunks, so streamed and non-streamed results are equal by
construction. The base also enforces capabilities, the per-call deadline, `max_concurrent` and
structured output.

Extension points for backend (and plugin) authors, each with a working default:

- `stream_chunks(messages, options)`: one reply as chunks (required for chat). `options.deadline`
  is the call's monotonic deadline: pass what is left of it to any SDK timeout.
- `embed_texts(texts)`: a batch of embeddings (a non-empty list); only called when
  `capabilities.embeddings` is set.
- `embed_texts_dimensions(texts, dimensions)`: embeddings of a given length, for a class that sets
  `embedding_dimensions = True` (others refuse `dimensions=` with `UnsupportedCapabilityError`).
- `check_request(messages, options)`: refuse, with a typed error, what the backend would drop. The
  default also refuses the typed options only some APIs have (`options.PROVIDER_OPTIONS`, and
  `ToolDefinition.strict=True` as "strict_tools") unless the class lists them in `accepted_options`.
- `structured_payload(response, options)` / `finalize(response, options)`: how a reply becomes
  the structured-output value (`response.parsed`); a reply that does not parse or validate raises
  `StructuredOutputError`, which `chat()` answers by re-asking (`zeph_providers.structured`).
- `start_try(messages, options)`: one try of a `chat()` call that the structured-output repair loop
  may repeat (a router routes each try once; the default is one `stream_chunks()` run).
- `call_attributes()`: facts about this provider for hook subscribers (e.g. `server.address`).
- `replay_finalize(response, options)`: how a reply replayed from the response cache is made final
  (`finalize` by default; `cached_source` puts the cache in front of a call's chunk source).
- Model metadata (`zeph_providers.models_info`): `list_models()` and `count_tokens()` raise
  `UnsupportedCapabilityError` by default, `context_window` is None (unknown) and
  `fetch_context_window()` returns it; a backend overrides what its API can answer.

Every call is reported to the provider's `hooks` (then its registry's, then the process's:
`zeph_providers.hooks`) from here and from `ChatStream`, so no backend fires an event itself.

The private names the built-in backends use (`_stream`, `_embed_batch`, `_check_request`,
`_structured_payload`, `_finalize`) keep working: each public hook calls its private twin by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Unpack

from zeph_providers._inputs import messages_from, texts_from
from zeph_providers.errors import (
    InferenceError,
    InvalidRequestError,
    LlmError,
    ProviderTimeoutError,
    UnsupportedCapabilityError,
)
from zeph_providers.hooks import Call, Hooks, Operation, global_hooks
from zeph_providers.limits import chat_estimate, estimate_tokens
from zeph_providers.options import Capabilities, ChatKwargs, ChatOptions
from zeph_providers.stream import AttemptClock, ChatStream
from zeph_providers.structured import Finalize, Repair, parse_reply
from zeph_providers.types import (
    ChatResponse,
    DocumentPart,
    ImagePart,
    Message,
    MessageInput,
    StreamChunk,
    ToolDefinition,
    Usage,
    UsageChunk,
)

if TYPE_CHECKING:
    from zeph_providers.cache import ResponseCache
    from zeph_providers.limits import RateLimiter, Reservation
    from zeph_providers.models_info import ModelInfo

__all__ = ["BaseProvider", "check_dimensions"]


def check_dimensions(dimensions: object, provider: str) -> None:
    """`dimensions` must be a positive int (a typed error naming the provider otherwise)."""
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
        raise InvalidRequestError(f"dimensions must be a positive integer, not {dimensions!r}", provider=provider)


class BaseProvider:
    """Shared behaviour for every backend; subclasses implement `stream_chunks()` (see the module doc)."""

    backend: ClassVar[str] = "base"
    accepted_options: ClassVar[frozenset[str]] = frozenset()
    """Which of `options.PROVIDER_OPTIONS` (reasoning_effort, logprobs, ...) this backend honours;
    `_check_request` refuses the others when a call sets them."""
    embedding_dimensions: ClassVar[bool] = False
    """Whether `embed_batch(..., dimensions=N)` is honoured (`embed_texts_dimensions`)."""
    rate_limiter: RateLimiter | None = None
    """Client-side rpm/tpm limits (`zeph_providers.limits`), set by the registry from the config."""
    response_cache: ResponseCache | None = None
    """The exact/semantic response cache (`zeph_providers.cache`), set by the registry from the config."""

    def __init__(
        self,
        name: str,
        model: str,
        *,
        capabilities: Capabilities | None = None,
        max_concurrent: int | None = None,
        default_timeout: float | None = None,
        structured_retries: int = 1,
    ) -> None:
        self._name = name
        self.structured_retries = structured_retries
        """`chat()`'s re-asks after a reply that does not match `response_format` (config `structured_retries`)."""
        self._model = model
        self._capabilities = capabilities or Capabilities()
        self._semaphore = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        self._default_timeout = default_timeout
        self._hooks = Hooks(parent=global_hooks())

    @property
    def hooks(self) -> Hooks:
        """This provider's hooks; a registry sets their parent to its own (`registry.hooks`)."""
        hooks: Hooks | None = getattr(self, "_hooks", None)
        if hooks is None:  # a subclass that skipped __init__
            hooks = self._hooks = Hooks(parent=global_hooks())
        return hooks

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def default_timeout(self) -> float | None:
        """Seconds a call may take when it names no `timeout` (None: no limit)."""
        return self._default_timeout

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self._name!r} model={self._model!r}>"

    # ----- public API -----------------------------------------------------------------

    def chat_stream(self, messages: MessageInput, **kwargs: Unpack[ChatKwargs]) -> ChatStream:
        """Start a streamed reply. Nothing is sent until the stream is iterated.

        `messages` is a `MessageInput`: a str, a `Message`, an OpenAI-style dict or a list of them
        (`zeph_providers._inputs`); anything else is an `InvalidRequestError`.

        A stream never re-asks (delivered text cannot be taken back): a reply that does not match
        `response_format` raises `StructuredOutputError` at its end, and `structured_retries` > 0
        is refused here. Use `chat()` for the repair loop.
        """
        message_list = messages_from(messages, provider=self._name)
        options = ChatOptions.from_kwargs(kwargs)
        if options.structured_retries:
            raise InvalidRequestError(
                "chat_stream() cannot re-ask for structured output (text already delivered cannot be taken "
                "back); use chat() for structured_retries, or pass structured_retries=0",
                provider=self._name,
            )
        return self.open_stream(message_list, options)

    async def chat(self, messages: MessageInput, **kwargs: Unpack[ChatKwargs]) -> ChatResponse:
        """One complete reply: the same chunks as `chat_stream`, assembled.

        The options carry `stream=False`, so a remote backend may fetch the reply with one
        non-streamed request; it still yields the same chunk vocabulary, which the same
        `ResponseAssembler` folds, so the result equals `chat_stream(...).response`.
        With `response_format`, a reply that does not match it is re-asked for up to
        `structured_retries` times (`zeph_providers.structured`). `messages` as for `chat_stream`.
        """
        messages = messages_from(messages, provider=self._name)
        options = ChatOptions.from_kwargs(kwargs, stream=False)
        retries = self._structured_retries(options)
        if options.response_format is None or not retries:
            stream = self.open_stream(messages, options)
        else:
            stream = self.open_repairing_stream(messages, options, retries)
        async with stream:
            return await stream.collect()

    def _structured_retries(self, options: ChatOptions) -> int:
        retries = options.structured_retries
        if retries is None:
            retries = getattr(self, "structured_retries", 1)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise InvalidRequestError(f"structured_retries must be an int >= 0, not {retries!r}", provider=self._name)
        return retries

    def open_repairing_stream(self, messages: Sequence[Message], options: ChatOptions, retries: int) -> ChatStream:
        """`open_stream()` whose source re-asks up to `retries` times for a reply matching
        `response_format` (each try from `start_try`); what `chat()` uses (`zeph_providers.structured`)."""
        options = options.started(self._default_timeout)
        message_list = list(messages)
        self.check_request(message_list, options)
        repair = Repair(
            provider=self._name,
            model=self._model,
            messages=message_list,
            options=options,
            retries=retries,
            start=lambda try_messages: self.start_try(try_messages, options),
        )
        source, finalize = self.cached_source(message_list, options, repair.chunks, repair.finalize)
        return ChatStream(
            source,
            provider=self._name,
            model=self._model,
            options=options,
            finalize=finalize,
            timed=self.timed_stream,
            call=self.new_call("chat", options=options, messages=message_list),
        )

    timed_stream: ClassVar[bool] = True
    """Whether this provider's `ChatStream`s enforce the deadline themselves (a router leaves it to
    its members' streams)."""

    def start_try(self, messages: list[Message], options: ChatOptions) -> tuple[AsyncIterator[StreamChunk], Finalize]:
        """One try of a repairing `chat()` call: its chunk source and the finalize that validates it."""
        return self._guarded_stream(messages, options), lambda response: self.finalize(response, options)

    def open_stream(self, messages: Sequence[Message], options: ChatOptions) -> ChatStream:
        """`chat_stream()` with ready-made options (`options.stream` False: the caller wants one reply).

        What `chat()` and the router use. The call's deadline is fixed here, once: a `None` timeout
        takes `default_timeout`, and a deadline already set (by a router) is kept.
        """
        options = options.started(self._default_timeout)
        message_list = list(messages)
        self.check_request(message_list, options)

        def own_finalize(response: ChatResponse) -> ChatResponse:
            return self.finalize(response, options)

        source, finalize = self.cached_source(
            message_list,
            options,
            lambda: self._guarded_stream(message_list, options),
            own_finalize,
            validate=own_finalize,
        )
        return ChatStream(
            source,
            provider=self._name,
            model=self._model,
            options=options,
            finalize=finalize,
            call=self.new_call("chat", options=options, messages=message_list),
        )

    def cached_source(
        self,
        messages: list[Message],
        options: ChatOptions,
        source: Callable[[], AsyncIterator[StreamChunk]],
        finalize: Finalize,
        *,
        validate: Finalize | None = None,
    ) -> tuple[AsyncIterator[StreamChunk], Finalize]:
        """`source()` and `finalize` behind `response_cache` unless the call bypasses it: a hit replays
        the stored chunks (`source` never starts; `replay_finalize` parses), a miss stores a complete
        reply (that `validate` accepts). See `zeph_providers.cache`."""
        cache = self.response_cache
        if cache is None:
            if options.response_cache:
                raise UnsupportedCapabilityError(
                    "response_cache",
                    provider=self._name,
                    detail="this provider has no [llm.providers.response_cache] table",
                )
            return source(), finalize
        if options.bypasses_response_cache:
            return source(), finalize
        lookup = cache.begin(self._name, self._model, messages, options)
        return lookup.chunks(source, validate), lookup.finalize(
            finalize, lambda response: self.replay_finalize(response, options)
        )

    def replay_finalize(self, response: ChatResponse, options: ChatOptions) -> ChatResponse:
        """A reply replayed from the response cache made final: `finalize` (parsed again)."""
        return self.finalize(response, options)

    async def embed(self, text: str, *, dimensions: int | None = None) -> list[float]:
        if not isinstance(text, str):
            hint = " (for several texts, use embed_batch)" if isinstance(text, list | tuple) else ""
            raise InvalidRequestError(
                f"embed() takes one str; got {type(text).__name__}{hint}", provider=self._name
            )
        vectors = await self.embed_batch([text], dimensions=dimensions)
        return vectors[0]

    async def embed_batch(self, texts: Sequence[str], *, dimensions: int | None = None) -> list[list[float]]:
        """Embeddings of `texts`; `dimensions` asks for vectors of that length (models that take it,
        e.g. OpenAI's text-embedding-3: elsewhere a typed `UnsupportedCapabilityError`)."""
        if not self._capabilities.embeddings:
            raise UnsupportedCapabilityError("embeddings", provider=self._name)
        if dimensions is not None:
            check_dimensions(dimensions, self._name)
            if not self.embedding_dimensions:
                raise UnsupportedCapabilityError(
                    "embedding dimensions", provider=self._name, detail=f"{self.backend} backend"
                )
        text_list = texts_from(texts, provider=self._name)
        if not text_list:
            return []
        if dimensions is None:
            return await self.observe_embedding(text_list, self._embed_in_slot)
        sized = dimensions
        return await self.observe_embedding(text_list, lambda batch: self._embed_in_slot(batch, sized))

    async def _embed_in_slot(self, texts: list[str], dimensions: int | None = None) -> list[list[float]]:
        if self._semaphore is None:
            return await self._embed_limited(texts, dimensions)
        async with self._semaphore:
            return await self._embed_limited(texts, dimensions)

    async def _embed_limited(self, texts: list[str], dimensions: int | None) -> list[list[float]]:
        """`_embed_sized` under the rate limiter (the estimate is kept: embeddings report no usage)."""
        limiter = self.rate_limiter
        if limiter is None:
            return await self._embed_sized(texts, dimensions)
        deadline = None if self._default_timeout is None else time.monotonic() + self._default_timeout
        reservation = await limiter.acquire(estimate_tokens(texts, None), deadline=deadline)
        try:
            vectors = await self._embed_sized(texts, dimensions)
        except BaseException:
            await reservation.settle(None)
            raise
        await reservation.settle(None)
        return vectors

    async def _embed_sized(self, texts: list[str], dimensions: int | None) -> list[list[float]]:
        if dimensions is None:
            return await self.embed_texts(texts)
        return await self.embed_texts_dimensions(texts, dimensions)

    # ----- model metadata (see zeph_providers.models_info) --------------------------------

    @property
    def context_window(self) -> int | None:
        """The configured model's context window in tokens, known without a request; None when unknown."""
        return None

    async def fetch_context_window(self) -> int | None:
        """The context window, asking the server where it can tell (then `context_window` reports it too)."""
        return self.context_window

    async def list_models(self, *, refresh: bool = False) -> list[ModelInfo]:
        """The models this provider's server offers (cached briefly; `refresh` re-reads them)."""
        raise UnsupportedCapabilityError("list_models", provider=self._name, detail="this backend lists no models")

    async def count_tokens(self, messages: Sequence[Message], *, tools: Sequence[ToolDefinition] = ()) -> int:
        """How many input tokens `messages` (and `tools`) make for this model, counted by the API or tokenizer."""
        raise UnsupportedCapabilityError("count_tokens", provider=self._name, detail="this backend cannot count tokens")

    # ----- hooks ------------------------------------------------------------------------

    def call_attributes(self) -> dict[str, Any]:
        """Facts about this provider that hook subscribers may record (no secrets)."""
        return {}

    @property
    def embedding_model(self) -> str:
        """The model `embed()` uses (what an embeddings call reports as its model): the config's
        `embedding_model` (`embedding_repo` for the local backend), else the chat model."""
        config = getattr(self, "config", None)
        for name in ("embedding_model", "embedding_repo"):
            value = getattr(config, name, None)
            if isinstance(value, str) and value:
                return value
        return self._model

    def new_call(
        self,
        operation: Operation,
        *,
        options: ChatOptions | None = None,
        messages: list[Message] | None = None,
        texts: list[str] | None = None,
    ) -> Call | None:
        """The hooks' record of one call, or None when nobody subscribes (then nothing is reported)."""
        subscribers = self.hooks.subscribers()
        if not subscribers:
            return None
        return Call(
            subscribers,
            operation=operation,
            provider=self._name,
            backend=self.backend,
            model=self.embedding_model if operation == "embeddings" else self._model,
            options=options,
            messages=messages,
            texts=texts,
            attributes=self.call_attributes(),
        )

    async def observe_embedding(
        self, texts: list[str], run: Callable[[list[str]], Awaitable[list[list[float]]]]
    ) -> list[list[float]]:
        """`run(texts)` reported to the hooks as one embeddings call with one try."""
        call = self.new_call("embeddings", texts=texts)
        if call is None:
            return await run(texts)
        call.begin()
        token = call.enter()
        clock = AttemptClock(self._name)
        try:
            vectors = await run(texts)
        except BaseException as exc:
            attempt = clock.done(exc)
            call.attempt(attempt)
            call.end(error=exc, attempts=[attempt])
            raise
        finally:
            Call.leave(token)
        clock.first_chunk()
        attempt = clock.done()
        call.attempt(attempt)
        call.end(attempts=[attempt])
        return vectors

    async def aclose(self) -> None:
        """Release clients, sockets, threads and models. Safe to call twice."""

    async def __aenter__(self) -> BaseProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ----- extension points (public names; the private twins are the built-ins' spelling) ----

    def stream_chunks(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        """One reply as an async iterator of chunks. Override this (or, equivalently, `_stream`)."""
        return self._stream(messages, options)

    async def embed_texts(self, texts: list[str]) -> list[list[float]]:
        """Embeddings for a non-empty batch. Override this (or `_embed_batch`)."""
        return await self._embed_batch(texts)

    async def embed_texts_dimensions(self, texts: list[str], dimensions: int) -> list[list[float]]:
        """Embeddings of `dimensions` length for a non-empty batch; only called when the class sets
        `embedding_dimensions`. Override it together with that flag."""
        raise UnsupportedCapabilityError("embedding dimensions", provider=self._name)

    def check_request(self, messages: list[Message], options: ChatOptions) -> None:
        """Refuse, with a typed error, any argument this provider would otherwise drop."""
        self._check_request(messages, options)

    def structured_payload(self, response: ChatResponse, options: ChatOptions) -> Any:
        """The raw structured value of a reply: its text by default."""
        return self._structured_payload(response, options)

    def finalize(self, response: ChatResponse, options: ChatOptions) -> ChatResponse:
        """The assembled reply made final: the structured output parsed into `response.parsed`."""
        return self._finalize(response, options)

    # ----- the built-ins' spelling of the same hooks --------------------------------------

    def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        raise NotImplementedError(f"{type(self).__name__} implements neither stream_chunks() nor _stream()")

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        raise UnsupportedCapabilityError("embeddings", provider=self._name)

    def _check_request(self, messages: list[Message], options: ChatOptions) -> None:
        caps = self._capabilities
        for option in options.provider_options():
            if option not in self.accepted_options:
                raise UnsupportedCapabilityError(option, provider=self._name, detail=f"{self.backend} backend")
        if any(tool.strict for tool in options.tools) and "strict_tools" not in self.accepted_options:
            raise UnsupportedCapabilityError("strict tools", provider=self._name, detail=f"{self.backend} backend")
        if options.tools and not caps.tools:
            raise UnsupportedCapabilityError("tools", provider=self._name)
        if options.response_format is not None and not caps.structured_output:
            raise UnsupportedCapabilityError("structured output", provider=self._name)
        if not caps.vision and any(isinstance(p, ImagePart) for m in messages for p in m.parts):
            raise UnsupportedCapabilityError("vision (image parts)", provider=self._name)
        if not caps.documents and any(isinstance(p, DocumentPart) for m in messages for p in m.parts):
            raise UnsupportedCapabilityError("documents (document parts)", provider=self._name)
        fmt = options.response_format
        if fmt is not None and not isinstance(fmt, dict) and not hasattr(fmt, "model_json_schema"):
            raise UnsupportedCapabilityError(
                "structured output",
                provider=self._name,
                detail="response_format must be a JSON schema dict or a pydantic model class",
            )

    def _structured_payload(self, response: ChatResponse, options: ChatOptions) -> Any:
        return response.text

    def _finalize(self, response: ChatResponse, options: ChatOptions) -> ChatResponse:
        fmt = options.response_format
        if fmt is None:
            return response
        if options.tools and response.tool_calls and not response.text.strip():
            return response  # the model called one of the caller's tools instead of answering
        response.parsed = parse_reply(
            lambda: self.structured_payload(response, options), response, options, provider=self._name
        )
        return response

    # ----- shared machinery -----------------------------------------------------------

    async def _acquire_slot(self, options: ChatOptions) -> None:
        """Wait for a `max_concurrent` slot, no longer than the call's deadline."""
        assert self._semaphore is not None
        remaining = options.remaining()
        if remaining is None:
            await self._semaphore.acquire()
            return
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                await self._semaphore.acquire()
        except TimeoutError as exc:
            raise ProviderTimeoutError(
                f"no free max_concurrent slot within the {options.timeout or 0:g}s deadline", provider=self._name
            ) from exc

    async def _guarded_stream(
        self,
        messages: list[Message],
        options: ChatOptions,
        source: AsyncIterator[StreamChunk] | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """`stream_chunks()` (or `source`) inside the concurrency slot and the rate limit, every
        unexpected error typed. The limiter's reservation is settled with the reply's usage, or kept
        as estimated when there is none: a request that failed, timed out or was cancelled after it
        was started may still be billed by the server, so it is never handed back."""
        semaphore = self._semaphore
        if semaphore is not None:
            await self._acquire_slot(options)
        reservation: Reservation | None = None
        usage: Usage | None = None
        try:
            limiter = self.rate_limiter
            if limiter is not None:
                estimate = chat_estimate(messages, options.max_tokens, getattr(self, "config", None))
                reservation = await limiter.acquire(estimate, deadline=options.deadline)
            if source is None:
                source = self.stream_chunks(messages, options)
            try:
                async for chunk in source:
                    if isinstance(chunk, UsageChunk):
                        usage = chunk.usage
                    yield chunk
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except LlmError:
                raise
            except Exception as exc:
                raise InferenceError(f"unexpected {type(exc).__name__}: {exc}", provider=self._name) from exc
            finally:
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
        finally:
            if reservation is not None:
                with contextlib.suppress(Exception):
                    await reservation.settle(usage.total_tokens if usage is not None else None)
            if semaphore is not None:
                semaphore.release()
