"""The inference worker: ONE thread owns the model; asyncio callers talk to it through a bounded queue.

- The model is loaded lazily on the worker thread at the first request.
- Submitting waits at most `timeout` for room in the queue; awaiting waits at most `timeout` for
  each next event (first token, next token, end): a full queue or a stuck worker raises
  `ProviderTimeoutError`, never hangs.
- Events cross threads with `loop.call_soon_threadsafe` into the job's `asyncio.Queue`, so each
  token reaches the caller as soon as it is generated.
- A cancelled job (closed stream, cancelled task, timeout) stops within one token.
- A worker thread that dies fails its in-flight and queued jobs with `InferenceError` and is
  replaced by a fresh thread (reusing the loaded model) at the next request.

A job is self-contained (messages, params, its own event queue), so a later batching worker can
take several queued jobs at once without changing the caller side.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zeph_providers.errors import InferenceError, LlmError, ProviderTimeoutError, ProviderUnavailableError
from zeph_providers.types import FinishReason, Message

if TYPE_CHECKING:
    from zeph_providers.local.generate import Engine, GenerationParams

__all__ = ["Done", "Failed", "InferenceWorker", "Job", "Text"]

log = logging.getLogger("zeph_providers.local")

_POLL_SECS = 0.25
"""How often a waiting caller checks that the worker thread is still alive."""
_LOAD_LIMIT_SECS = 1800.0
"""A model load may outlast `inference_timeout_secs` (a first GGUF conversion), but not forever."""


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Done:
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


@dataclass(frozen=True)
class Failed:
    error: LlmError


Event = Text | Done | Failed


@dataclass(eq=False)
class Job:
    """One request: what to generate, where to send events, and its cancel flag."""

    messages: list[Message]
    params: GenerationParams
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    steps: int = 0
    """Tokens generated so far (written by the worker thread)."""
    step_hook: Callable[[Job], None] | None = None
    thread: threading.Thread | None = None

    def post(self, event: Event) -> None:
        """Deliver an event to the caller's loop (thread-safe); a closed loop cancels the job."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the caller's loop is gone: nobody is listening any more
            self.cancel.set()

    # TokenSink, called on the worker thread by the generation
    def on_text(self, text: str) -> None:
        self.post(Text(text))

    def on_step(self) -> None:
        self.steps += 1
        if self.step_hook is not None:
            self.step_hook(self)

    def is_cancelled(self) -> bool:
        return self.cancel.is_set()


class InferenceWorker:
    """Owns the model thread, its bounded queue and the lazily loaded engine; shared by every handle."""

    def __init__(
        self,
        name: str,
        load: Callable[[], Engine],
        *,
        capacity: int = 4,
        timeout: float = 120.0,
    ) -> None:
        self.name = name
        self._load = load
        self.capacity = capacity
        self.timeout = timeout
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[Job | None] = queue.Queue(capacity)
        self._engine: Engine | None = None
        self._loading = False
        self._closed = False
        self._current: Job | None = None
        self.restarts = 0
        self._died = False
        self.step_hook: Callable[[Job], None] | None = None
        """Called on the worker thread after every generated token (tests use it to stall or crash)."""

    @property
    def engine(self) -> Engine | None:
        return self._engine

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    # ----- caller side (event loop) -------------------------------------------------------

    def _ensure_thread(self) -> tuple[threading.Thread, queue.Queue[Job | None]]:
        with self._lock:
            if self._closed:
                raise ProviderUnavailableError("the local provider is closed", provider=self.name)
            if self._thread is None or not self._thread.is_alive():
                if self._thread is not None or self._died:
                    self._died = False
                    self.restarts += 1
                    log.warning("restarting the local worker for %r (restart %d)", self.name, self.restarts)
                self._queue = queue.Queue(self.capacity)
                self._thread = threading.Thread(
                    target=self._run, args=(self._queue,), name=f"zeph-local-{self.name}", daemon=True
                )
                self._thread.start()
            return self._thread, self._queue

    async def submit(self, job: Job) -> None:
        """Queue a job, waiting at most `timeout` seconds for room."""
        job.step_hook = self.step_hook
        deadline = time.monotonic() + self.timeout
        delay = 0.002
        while True:
            thread, jobs = self._ensure_thread()
            try:
                jobs.put_nowait(job)
            except queue.Full:
                if time.monotonic() >= deadline:
                    raise ProviderTimeoutError(
                        f"the local model's queue stayed full ({self.capacity} waiting) for {self.timeout:g}s; "
                        "raise queue_capacity or inference_timeout_secs, or send fewer requests at once",
                        provider=self.name,
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
            else:
                job.thread = thread
                return

    async def next_event(self, job: Job) -> Event:
        """The job's next event, waiting at most `timeout` seconds (longer while the model loads)."""
        waited_since = time.monotonic()
        while True:
            try:
                async with asyncio.timeout(_POLL_SECS):
                    return await job.events.get()
            except TimeoutError:
                pass
            if job.thread is not None and not job.thread.is_alive():
                await asyncio.sleep(0)  # let events the dying thread posted arrive first
                if not job.events.empty():
                    return job.events.get_nowait()
                return Failed(InferenceError("the local worker thread died", provider=self.name))
            elapsed = time.monotonic() - waited_since
            if self._loading and elapsed < _LOAD_LIMIT_SECS:
                continue
            if elapsed >= self.timeout:
                job.cancel.set()
                raise ProviderTimeoutError(
                    f"the local model produced nothing for {self.timeout:g}s (busy or stuck); "
                    "raise inference_timeout_secs or queue fewer requests",
                    provider=self.name,
                )

    # ----- worker thread ---------------------------------------------------------------------

    def _engine_or_load(self) -> Engine:
        if self._engine is None:
            self._loading = True
            try:
                self._engine = self._load()
            finally:
                self._loading = False
        return self._engine

    def _error(self, exc: Exception) -> LlmError:
        if isinstance(exc, LlmError):
            if exc.provider is None:
                exc.provider = self.name
            return exc
        return InferenceError(f"generation failed: {type(exc).__name__}: {exc}", provider=self.name)

    def _run(self, jobs: queue.Queue[Job | None]) -> None:
        job: Job | None = None
        try:
            while True:
                job = jobs.get()
                if job is None:
                    return
                self._current = job
                try:
                    if not job.cancel.is_set():
                        engine = self._engine_or_load()
                        result = engine.run(job.messages, job.params, job)
                        job.post(Done(result.prompt_tokens, result.completion_tokens, result.finish_reason))
                except Exception as exc:  # this request failed; the worker carries on
                    job.post(Failed(self._error(exc)))
                job.done.set()
                self._current = job = None
        except BaseException as exc:  # the thread itself is dying (killed, interpreter exit...)
            error = InferenceError(
                f"the local worker thread died ({type(exc).__name__}); it restarts on the next request",
                provider=self.name,
            )
            log.error("local worker for %r died: %r", self.name, exc)
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None  # the next submit starts a fresh thread and queue
                    self._died = True
            if job is not None:
                job.post(Failed(error))
                job.done.set()
            self._drain(jobs, error)
        finally:
            self._current = None

    @staticmethod
    def _drain(jobs: queue.Queue[Job | None], error: LlmError) -> None:
        while True:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.post(Failed(error))
                job.done.set()

    # ----- lifetime --------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the thread (cancelling its work) and free the model. Safe to call twice."""
        with self._lock:
            self._closed = True
            thread, jobs = self._thread, self._queue
        current = self._current
        if current is not None:
            current.cancel.set()
        self._drain(jobs, ProviderUnavailableError("the local provider was closed", provider=self.name))
        with contextlib.suppress(queue.Full):
            jobs.put_nowait(None)
        if thread is not None and thread is not threading.current_thread():
            await asyncio.to_thread(thread.join, 10.0)
        engine, self._engine = self._engine, None
        if engine is not None:
            device = engine.loaded.device
            del engine
            gc.collect()
            if device == "cuda":
                import torch

                torch.cuda.empty_cache()
