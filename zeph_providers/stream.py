"""Streams: `ResponseAssembler` folds chunks into a `ChatResponse`; `ChatStream` is the in-flight reply.

A `ChatStream` knows nothing of providers: it takes a chunk source, the call's options (whose
`deadline` it enforces) and a `finalize` callable that turns the assembled reply into the final
one (structured output parsed). It also keeps the call's attempt log (`attempts`): layers below it
(the retry loop, a router) append one `Attempt` per try through `attempt_log()`; a source that
records none gets one attempt for the whole stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from zeph_providers.errors import LlmError, ProviderTimeoutError
from zeph_providers.hooks import Call
from zeph_providers.options import ChatOptions
from zeph_providers.types import (
    Attempt,
    ChatResponse,
    ContentChunk,
    EndChunk,
    FinishReason,
    LogprobsChunk,
    RedactedThinkingChunk,
    RedactedThinkingPart,
    StreamChunk,
    ThinkingChunk,
    ThinkingPart,
    TokenLogprob,
    ToolCall,
    ToolUseChunk,
    Usage,
    UsageChunk,
)

__all__ = ["AttemptClock", "ChatStream", "ResponseAssembler", "attempt_log", "attempt_log_scope"]

Finalize = Callable[[ChatResponse], ChatResponse]

_log: ContextVar[list[Attempt] | None] = ContextVar("zeph_providers_attempt_log", default=None)


def attempt_log() -> list[Attempt] | None:
    """The attempt list of the call whose stream is being read in this task (None outside one).

    Read it once, when an attempt loop starts (the first `anext` of its generator): a nested
    stream (a router's member) swaps in its own list only while it is read.
    """
    return _log.get()


@contextlib.contextmanager
def attempt_log_scope(log: list[Attempt]) -> Iterator[None]:
    """Make `log` the attempt list that layers below record into, for the duration of the block.

    What a loop that runs several tries of one call uses (`zeph_providers.structured.Repair`): each
    try records into a list of its own, which the loop then moves into the call's list. Do not
    yield to the caller inside the block.
    """
    token = _log.set(log)
    try:
        yield
    finally:
        _log.reset(token)


class AttemptClock:
    """Times one attempt: `first_chunk()` when the first chunk arrives, `done()` makes the record."""

    def __init__(self, provider: str, *, wait: float = 0.0) -> None:
        self.provider = provider
        self.wait = wait
        self.started = time.perf_counter()
        self._first: float | None = None

    def first_chunk(self) -> None:
        if self._first is None:
            self._first = time.perf_counter() - self.started

    def done(self, error: BaseException | None = None) -> Attempt:
        if error is None:
            outcome, message = "ok", None
        elif isinstance(error, LlmError):
            outcome, message = type(error).__name__, error.message
        else:  # cancelled or closed early by the caller
            outcome, message = "cancelled", None
        return Attempt(
            provider=self.provider,
            outcome=outcome,
            error=message,
            wait=self.wait,
            time_to_first_chunk=self._first,
            duration=time.perf_counter() - self.started,
        )


class _AttemptLog(list[Attempt]):
    """A call's attempt list that reports each try of its own to the call's hooks.

    `append` is a try of this call's own (the retry loop, the stream's single try); `extend` adds
    tries a nested call (a router's member) already reported. A try ended "cancelled" is reported
    when the call ends, once the stream has said whether its deadline did it (then it timed out).
    """

    def __init__(self, call: Call) -> None:
        super().__init__()
        self._call = call
        self._pending: list[int] = []

    def append(self, attempt: Attempt) -> None:
        super().append(attempt)
        if attempt.outcome == "cancelled":
            self._pending.append(len(self) - 1)
        else:
            self._call.attempt(attempt)

    def flush(self) -> None:
        for index in self._pending:
            self._call.attempt(self[index])
        self._pending.clear()


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
        self._logprobs: list[TokenLogprob] | None = None
        self._blocks = _ThinkingBlocks()
        self._stop_sequence: str | None = None

    def add(self, chunk: StreamChunk) -> None:
        if isinstance(chunk, ContentChunk):
            self._text.append(chunk.text)
        elif isinstance(chunk, ThinkingChunk):
            self._thinking.append(chunk.text)
            if chunk.signature:
                self._thinking_signature = chunk.signature
            self._blocks.thinking(chunk)
        elif isinstance(chunk, RedactedThinkingChunk):
            self._blocks.redacted(chunk)
        elif isinstance(chunk, ToolUseChunk):
            self._tool_calls.append(chunk.tool_call)
        elif isinstance(chunk, UsageChunk):
            self._usage = chunk.usage if self._usage is None else self._usage + chunk.usage
        elif isinstance(chunk, LogprobsChunk):
            if self._logprobs is None:
                self._logprobs = []
            self._logprobs.extend(chunk.tokens)
        elif isinstance(chunk, EndChunk):
            self._finish = chunk.finish_reason
            if chunk.model:
                self._model = chunk.model
            if chunk.provider:
                self._provider = chunk.provider
            self._stop_sequence = chunk.stop_sequence

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
            logprobs=self._logprobs,
            thinking_blocks=self._blocks.parts(),
            stop_sequence=self._stop_sequence,
        )


class _ThinkingBlocks:
    """Rebuilds the ordered thinking blocks from `ThinkingChunk.block` / `RedactedThinkingChunk`.

    Only chunks that name their block build blocks: a backend whose thinking is one undivided run
    (`block` None) leaves `thinking_blocks` empty, and its reply is what it always was.
    """

    def __init__(self) -> None:
        self._blocks: list[tuple[int | None, list[str], str | None] | RedactedThinkingPart] = []
        self._divided = False

    def thinking(self, chunk: ThinkingChunk) -> None:
        self._divided = self._divided or chunk.block is not None
        last = self._blocks[-1] if self._blocks else None
        if isinstance(last, tuple) and last[0] == chunk.block:
            last[1].append(chunk.text)
            if chunk.signature:
                self._blocks[-1] = (last[0], last[1], chunk.signature)
        else:
            self._blocks.append((chunk.block, [chunk.text], chunk.signature or None))

    def redacted(self, chunk: RedactedThinkingChunk) -> None:
        self._divided = True
        self._blocks.append(RedactedThinkingPart(data=chunk.data))

    def parts(self) -> list[ThinkingPart | RedactedThinkingPart]:
        if not self._divided:
            return []
        return [
            b if isinstance(b, RedactedThinkingPart) else ThinkingPart(text="".join(b[1]), signature=b[2])
            for b in self._blocks
        ]


def _expire_ref(ref: weakref.ReferenceType[ChatStream]) -> None:
    stream = ref()
    if stream is not None:
        stream._expire()


class ChatStream:
    """An in-flight streamed reply: `async for chunk in stream`, or `async with ... as stream`.

    `response` holds the assembled `ChatResponse` once the stream has finished. Leaving the
    `async with` block or calling `aclose()` early cancels the request (the local backend stops
    generating). A stream dropped unfinished (`async for chunk in provider.chat_stream(...): break`)
    is released as soon as it is garbage: its request is cancelled and its `max_concurrent` slot
    freed. Holding the stream in a variable keeps it alive: use `async with` (or `aclose()`) then.

    `options.deadline` (a `time.monotonic()` value) bounds every read; `timed=False` leaves the
    deadline to the source (a router enforces it on its members, to report what each one did).

    `call` (made by the provider when hooks are subscribed) reports the call to them: its start at
    the first read, each try, and its end (`zeph_providers.hooks`).
    """

    def __init__(
        self,
        source: AsyncIterator[StreamChunk],
        *,
        provider: str,
        model: str,
        options: ChatOptions,
        finalize: Finalize | None = None,
        timed: bool = True,
        call: Call | None = None,
    ) -> None:
        self._source = source
        self._name = provider
        self._options = options
        self._finalize_response = finalize
        self._assembler = ResponseAssembler(provider=provider, model=model)
        self._response: ChatResponse | None = None
        self._error: BaseException | None = None
        """Why the stream ended without a response (its error, or a cancellation); `response` says so."""
        self._closed = False
        self._deadline = options.deadline if timed else None
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Task[Any] | None = None
        self._expired = False
        self._call = call
        self._attempts: list[Attempt] = [] if call is None else _AttemptLog(call)
        self._clock: AttemptClock | None = None

    @property
    def provider(self) -> str:
        """The name of the provider this stream belongs to."""
        return self._name

    @property
    def options(self) -> ChatOptions:
        return self._options

    @property
    def response(self) -> ChatResponse:
        """The assembled reply once the stream has ended normally.

        Before that it raises `LlmError` saying which: not finished yet, closed early, or failed
        (the stream's own error is then the `__cause__`, and named in the message).
        """
        if self._response is not None:
            return self._response
        error = self._error
        if error is None:
            if self._closed:
                raise LlmError("the stream was closed before it finished; it has no response", provider=self._name)
            raise LlmError("the stream has not finished yet; iterate it to the end first", provider=self._name)
        if isinstance(error, asyncio.CancelledError):
            raise LlmError("the stream was cancelled before it finished; it has no response", provider=self._name)
        detail = error.message if isinstance(error, LlmError) else str(error)
        raise LlmError(
            f"the stream failed, so it has no response: {type(error).__name__}: {detail}", provider=self._name
        ) from error

    @property
    def done(self) -> bool:
        return self._response is not None

    @property
    def attempts(self) -> list[Attempt]:
        """The tries made so far (complete once the stream has ended, however it ended)."""
        return list(self._attempts)

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._closed:
            raise StopAsyncIteration
        call = self._call
        if self._clock is None:
            self._clock = AttemptClock(self._name)
            if call is not None:
                await self._begin(call)
        token = _log.set(self._attempts)
        call_token = None if call is None else call.enter()
        try:
            chunk = await self._next_within_deadline()
        except StopAsyncIteration:
            self._leave(token, call_token)
            self._finish()
            raise
        except BaseException as exc:
            self._leave(token, call_token)
            await self._fail(exc)
            raise
        self._leave(token, call_token)
        self._clock.first_chunk()
        if call is not None and call.time_to_first_chunk is None:
            call.time_to_first_chunk = time.perf_counter() - call.started
        self._assembler.add(chunk)
        return chunk

    @staticmethod
    def _leave(token: Any, call_token: Any) -> None:
        if call_token is not None:
            Call.leave(call_token)
        _log.reset(token)

    async def _begin(self, call: Call) -> None:
        """Report the start; a hook's refusal (an `LlmError`) ends the call before anything is sent."""
        try:
            call.begin()
        except LlmError as exc:
            self._closed = True
            self._stop_timer()
            exc.attempts = []
            aclose = getattr(self._source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            raise

    def _end_call(self, response: ChatResponse | None, error: BaseException | None) -> None:
        call = self._call
        if call is None or call.ended:
            return
        attempts = self._attempts
        if isinstance(attempts, _AttemptLog):
            attempts.flush()
        call.end(response=response, error=error, attempts=list(attempts))

    async def _next_within_deadline(self) -> StreamChunk:
        if self._deadline is None:
            return await anext(self._source)
        if self._expired or time.monotonic() >= self._deadline:
            raise self._deadline_error()
        task = asyncio.current_task()
        if self._timer is None:
            # One timer per stream, not an asyncio.timeout() per chunk (a measurable cost at
            # tens of thousands of chunks per second). It cancels the task only while it waits here,
            # and holds the stream only weakly, so an abandoned stream can be collected.
            loop = asyncio.get_running_loop()
            delay = max(self._deadline - time.monotonic(), 0.0)
            self._timer = loop.call_later(delay, _expire_ref, weakref.ref(self))
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
        timeout = self._options.timeout
        limit = f"the {timeout:g}s deadline" if timeout is not None else "the deadline"
        return ProviderTimeoutError(f"no complete reply within {limit}", provider=self._name)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _record(self, error: BaseException | None) -> None:
        """Close the attempt log: one attempt for a source that recorded none; a try that the
        deadline cut short is a timeout, not a cancellation."""
        if not self._attempts:
            self._attempts.append((self._clock or AttemptClock(self._name)).done(error))
        elif isinstance(error, ProviderTimeoutError) and self._attempts[-1].outcome == "cancelled":
            last = self._attempts[-1]
            self._attempts[-1] = last.model_copy(update={"outcome": type(error).__name__, "error": error.message})

    def _finish(self) -> None:
        self._closed = True
        self._stop_timer()
        self._record(None)
        response = self._assembler.response()
        if self._finalize_response is not None:
            try:
                response = self._finalize_response(response)
            except LlmError as exc:
                self._error = exc
                exc.attempts = list(self._attempts)
                self._end_call(None, exc)
                raise
        response.attempts = list(self._attempts)
        self._response = response
        self._end_call(response, None)

    async def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        if not self._closed:
            self._record(exc)
        if isinstance(exc, LlmError):
            exc.attempts = list(self._attempts)
        self._end_call(None, exc)
        await self.aclose()

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
        if self._clock is not None:
            if not self._attempts:
                self._attempts.append(self._clock.done(asyncio.CancelledError()))
            self._end_call(None, asyncio.CancelledError())
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

    def __del__(self) -> None:
        # Dropped unfinished: the timer must not fire for it; the source (an async generator) is
        # closed by the event loop's async-generator finalizer, which releases its request.
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
