"""The provider protocol and the shared base every backend builds on.

A backend implements one method, `_stream()`, an async generator of stream chunks. The base turns
it into `chat_stream()` (an async iterator and async context manager) and `chat()`, which
assembles the very same chunks, so streamed and non-streamed results are equal by construction.
The base also enforces capabilities, the per-call deadline, `max_concurrent` and structured output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, fields, replace
from types import TracebackType
from typing import Any, ClassVar, Protocol, runtime_checkable

from zeph_providers.errors import (
    BadResponseError,
    InferenceError,
    LlmError,
    ProviderTimeoutError,
    UnsupportedCapabilityError,
)
from zeph_providers.types import (
    ChatResponse,
    ContentChunk,
    EndChunk,
    FinishReason,
    ImagePart,
    Message,
    StreamChunk,
    ThinkingChunk,
    ToolCall,
    ToolDefinition,
    ToolUseChunk,
    Usage,
    UsageChunk,
)

__all__ = [
    "BaseProvider",
    "Capabilities",
    "ChatOptions",
    "ChatStream",
    "LlmProvider",
    "ResponseAssembler",
    "ResponseFormat",
]

ResponseFormat = dict[str, Any] | type[Any]
"""A JSON schema dict, or a pydantic model class whose schema is sent and which parses the reply."""


@dataclass(frozen=True)
class Capabilities:
    streaming: bool = True
    embeddings: bool = False
    tools: bool = False
    vision: bool = False
    structured_output: bool = False
    thinking: bool = False

    def names(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name)]


@dataclass(frozen=True)
class ChatOptions:
    """Per-call options; `None` means "use the provider's configured default"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[ToolDefinition, ...] = ()
    tool_choice: str | None = None
    """"auto", "none", "required", or the name of one tool to force."""
    response_format: ResponseFormat | None = None
    timeout: float | None = None
    """Seconds for the whole call, stream included, across retries."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend-specific values (e.g. `repeat_penalty` for the local backend)."""
    stream: bool = True
    """Whether the caller consumes a stream. `chat()` sets it to False; a backend may then make one
    non-streamed request, provided it yields the same chunk vocabulary (so the assembled reply is
    the same). Backends that cannot ignore it."""

    def json_schema(self) -> dict[str, Any] | None:
        """The response_format as a JSON schema dict (pydantic classes converted)."""
        fmt = self.response_format
        if fmt is None:
            return None
        if isinstance(fmt, dict):
            return fmt
        schema = fmt.model_json_schema()
        return dict(schema)

    def schema_name(self) -> str:
        fmt = self.response_format
        if isinstance(fmt, type):
            return fmt.__name__
        if isinstance(fmt, dict):
            return str(fmt.get("title") or "response")
        return "response"

    def with_changes(self, **changes: Any) -> ChatOptions:
        return replace(self, **changes)


@runtime_checkable
class LlmProvider(Protocol):
    """What every backend offers. Use `BaseProvider` to implement one."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        tools: Sequence[ToolDefinition] | None = None,
        tool_choice: str | None = None,
        response_format: ResponseFormat | None = None,
        timeout: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ChatResponse: ...

    def chat_stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        tools: Sequence[ToolDefinition] | None = None,
        tool_choice: str | None = None,
        response_format: ResponseFormat | None = None,
        timeout: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ChatStream: ...

    async def embed(self, text: str) -> list[float]: ...

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]: ...

    async def aclose(self) -> None: ...


class ResponseAssembler:
    """Folds stream chunks into one `ChatResponse`."""

    def __init__(self, *, provider: str, model: str) -> None:
        self._text: list[str] = []
        self._thinking: list[str] = []
        self._thinking_signature: str | None = None
        self._tool_calls: list[ToolCall] = []
        self._usage: Usage | None = None
        self._finish: FinishReason | None = None
        self._model = model
        self._provider = provider

    def add(self, chunk: StreamChunk) -> None:
        if isinstance(chunk, ContentChunk):
            self._text.append(chunk.text)
        elif isinstance(chunk, ThinkingChunk):
            self._thinking.append(chunk.text)
            if chunk.signature:
                self._thinking_signature = chunk.signature
        elif isinstance(chunk, ToolUseChunk):
            self._tool_calls.append(chunk.tool_call)
        elif isinstance(chunk, UsageChunk):
            self._usage = chunk.usage if self._usage is None else self._usage + chunk.usage
        elif isinstance(chunk, EndChunk):
            self._finish = chunk.finish_reason
            if chunk.model:
                self._model = chunk.model
            if chunk.provider:
                self._provider = chunk.provider

    @property
    def finished(self) -> bool:
        return self._finish is not None

    def response(self) -> ChatResponse:
        finish: FinishReason = self._finish or "stop"
        if self._tool_calls and finish == "stop":
            finish = "tool_use"
        return ChatResponse(
            text="".join(self._text),
            tool_calls=list(self._tool_calls),
            thinking="".join(self._thinking),
            thinking_signature=self._thinking_signature,
            usage=self._usage or Usage(),
            finish_reason=finish,
            model=self._model,
            provider=self._provider,
        )


class ChatStream:
    """An in-flight streamed reply: `async for chunk in stream`, or `async with ... as stream`.

    `response` holds the assembled `ChatResponse` once the stream has finished. Leaving the
    `async with` block or calling `aclose()` early cancels the request (the local backend stops
    generating).
    """

    def __init__(
        self,
        source: AsyncIterator[StreamChunk],
        *,
        provider: BaseProvider,
        options: ChatOptions,
    ) -> None:
        self._source = source
        self._provider = provider
        self._options = options
        self._assembler = ResponseAssembler(provider=provider.name, model=provider.model)
        self._response: ChatResponse | None = None
        self._closed = False
        timeout = options.timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Task[Any] | None = None
        self._expired = False

    @property
    def response(self) -> ChatResponse:
        if self._response is None:
            raise LlmError(
                "the stream has not finished yet; iterate it to the end first",
                provider=self._provider.name,
            )
        return self._response

    @property
    def done(self) -> bool:
        return self._response is not None

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._closed:
            raise StopAsyncIteration
        try:
            chunk = await self._next_within_deadline()
        except StopAsyncIteration:
            self._finish()
            raise
        except BaseException:
            await self.aclose()
            raise
        self._assembler.add(chunk)
        return chunk

    async def _next_within_deadline(self) -> StreamChunk:
        if self._deadline is None:
            return await anext(self._source)
        if self._expired or time.monotonic() >= self._deadline:
            raise self._deadline_error()
        task = asyncio.current_task()
        if self._timer is None:
            # One timer per stream, not an asyncio.timeout() per chunk (a measurable cost at
            # tens of thousands of chunks per second). It cancels the task only while it waits here.
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(self._deadline - time.monotonic(), 0.0), self._expire)
        self._waiter = task
        try:
            return await anext(self._source)
        except asyncio.CancelledError as exc:
            if self._expired and task is not None and task.uncancel() == 0:
                raise self._deadline_error() from exc
            raise
        finally:
            self._waiter = None

    def _expire(self) -> None:
        self._expired = True
        if self._waiter is not None:
            self._waiter.cancel()

    def _deadline_error(self) -> ProviderTimeoutError:
        return ProviderTimeoutError(
            f"no complete reply within the {self._options.timeout:g}s deadline",
            provider=self._provider.name,
        )

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _finish(self) -> None:
        self._closed = True
        self._stop_timer()
        response = self._assembler.response()
        self._response = self._provider._finalize(response, self._options)

    async def collect(self) -> ChatResponse:
        """Consume the rest of the stream and return the assembled response."""
        async for _ in self:
            pass
        return self.response

    async def aclose(self) -> None:
        self._stop_timer()
        if self._closed:
            return
        self._closed = True
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class BaseProvider:
    """Shared behaviour for every backend; subclasses implement `_stream()`.

    Subclasses set `capabilities`, and may override `_embed_batch()`, `aclose()` and
    `_default_options()`.
    """

    backend: ClassVar[str] = "base"

    def __init__(
        self,
        name: str,
        model: str,
        *,
        capabilities: Capabilities | None = None,
        max_concurrent: int | None = None,
        default_timeout: float | None = None,
    ) -> None:
        self._name = name
        self._model = model
        self._capabilities = capabilities or Capabilities()
        self._semaphore = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        self._default_timeout = default_timeout

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self._name!r} model={self._model!r}>"

    # ----- public API -----------------------------------------------------------------

    def chat_stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        tools: Sequence[ToolDefinition] | None = None,
        tool_choice: str | None = None,
        response_format: ResponseFormat | None = None,
        timeout: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ChatStream:
        """Start a streamed reply. Nothing is sent until the stream is iterated."""
        options = ChatOptions(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
            tools=tuple(tools or ()),
            tool_choice=tool_choice,
            response_format=response_format,
            timeout=timeout,
            extra=dict(extra or {}),
        )
        return self.open_stream(messages, options)

    def open_stream(self, messages: Sequence[Message], options: ChatOptions) -> ChatStream:
        """`chat_stream()` with ready-made options (`options.stream` False: the caller wants one reply).

        What `chat()` and the router use; a `None` timeout takes the provider's default.
        """
        if options.timeout is None and self._default_timeout is not None:
            options = replace(options, timeout=self._default_timeout)
        message_list = list(messages)
        self._check_request(message_list, options)
        return ChatStream(self._guarded_stream(message_list, options), provider=self, options=options)

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        tools: Sequence[ToolDefinition] | None = None,
        tool_choice: str | None = None,
        response_format: ResponseFormat | None = None,
        timeout: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ChatResponse:
        """One complete reply: the same chunks as `chat_stream`, assembled.

        The options carry `stream=False`, so a remote backend may fetch the reply with one
        non-streamed request; it still yields the same chunk vocabulary, which the same
        `ResponseAssembler` folds, so the result equals `chat_stream(...).response`.
        """
        options = ChatOptions(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
            tools=tuple(tools or ()),
            tool_choice=tool_choice,
            response_format=response_format,
            timeout=timeout,
            extra=dict(extra or {}),
            stream=False,
        )
        stream = self.open_stream(messages, options)
        async with stream:
            return await stream.collect()

    async def embed(self, text: str) -> list[float]:
        vectors = await self.embed_batch([text])
        return vectors[0]

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        if not self._capabilities.embeddings:
            raise UnsupportedCapabilityError("embeddings", provider=self._name)
        text_list = list(texts)
        if not text_list:
            return []
        if self._semaphore is None:
            return await self._embed_batch(text_list)
        async with self._semaphore:
            return await self._embed_batch(text_list)

    async def aclose(self) -> None:
        """Release clients, sockets, threads and models. Safe to call twice."""

    async def __aenter__(self) -> BaseProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ----- what backends implement ----------------------------------------------------

    def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        raise NotImplementedError

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        raise UnsupportedCapabilityError("embeddings", provider=self._name)

    # ----- shared machinery -----------------------------------------------------------

    def _check_request(self, messages: list[Message], options: ChatOptions) -> None:
        """Refuse, with a typed error, any argument this provider would otherwise drop."""
        caps = self._capabilities
        if options.tools and not caps.tools:
            raise UnsupportedCapabilityError("tools", provider=self._name)
        if options.response_format is not None and not caps.structured_output:
            raise UnsupportedCapabilityError("structured output", provider=self._name)
        if not caps.vision and any(isinstance(p, ImagePart) for m in messages for p in m.parts):
            raise UnsupportedCapabilityError("vision (image parts)", provider=self._name)
        fmt = options.response_format
        if fmt is not None and not isinstance(fmt, dict) and not hasattr(fmt, "model_json_schema"):
            raise UnsupportedCapabilityError(
                "structured output",
                provider=self._name,
                detail="response_format must be a JSON schema dict or a pydantic model class",
            )

    async def _guarded_stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        semaphore = self._semaphore
        if semaphore is not None:
            await semaphore.acquire()
        try:
            source = self._stream(messages, options)
            try:
                async for chunk in source:
                    yield chunk
            except LlmError:
                raise
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:
                raise InferenceError(f"unexpected {type(exc).__name__}: {exc}", provider=self._name) from exc
            finally:
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
        finally:
            if semaphore is not None:
                semaphore.release()

    def _finalize(self, response: ChatResponse, options: ChatOptions) -> ChatResponse:
        """Attach the parsed structured output, when one was asked for."""
        fmt = options.response_format
        if fmt is None:
            return response
        raw = self._structured_payload(response, options)
        try:
            data = json.loads(raw) if isinstance(raw, str) else raw
            parsed = fmt.model_validate(data) if isinstance(fmt, type) else data
        except Exception as exc:
            raise BadResponseError(
                f"the reply does not match the requested response_format: {exc}",
                provider=self._name,
            ) from exc
        response.parsed = parsed
        return response

    def _structured_payload(self, response: ChatResponse, options: ChatOptions) -> Any:
        """The raw structured value: the reply text by default (Claude overrides: a forced tool)."""
        return response.text
