"""The inference worker: ONE thread owns the model; asyncio callers talk to it through a bounded queue.

- The model is loaded lazily on the worker thread at the first request.
- Submitting waits at most `timeout` for room in the queue; awaiting waits at most `timeout` for
  each next event (first token, next token, end): a full queue or a stuck worker raises
  `ProviderTimeoutError`, never hangs.
- Events cross threads with `loop.call_soon_threadsafe` into the job's `asyncio.Queue`, so each
  token reaches the caller as soon as it is generated.
- An engine that renders the request itself (`prepare`) reports it with `on_prepared`, which posts
  a `PreparedEvent` ahead of the first `Text`: the provider reads the reply with it (tool calls).
- A cancelled job (closed stream, cancelled task, timeout) stops within one token.
- A worker thread that dies fails its in-flight and queued jobs with `InferenceError` and is
  replaced by a fresh thread (reusing the loaded model) at the next request.

The worker depends on `engine.InferenceEngine` only. Batching: it hands `run_batch` the job it
took plus every job already waiting (up to `max_batch_size`), and lets the engine take more from
the queue between decode steps (continuous batching); each job still streams, finishes, fails and
is cancelled on its own. An engine with `max_batch_size` 1 serves one job at a time. A failed forward pass
fails every job of that batch; a dying thread fails them all and the queue too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zeph_providers.errors import InferenceError, LlmError, ProviderTimeoutError, ProviderUnavailableError
from zeph_providers.types import FinishReason, Message

if TYPE_CHECKING:
    from zeph_providers.local.engine import GenerationParams, GenerationResult, InferenceEngine, Prepared

__all__ = ["Done", "Failed", "InferenceWorker", "Job", "PreparedEvent", "Text"]

log = logging.getLogger("zeph_providers.local")

_POLL_SECS = 0.25
"""How often a waiting caller checks that the worker thread is still alive."""
_LOAD_LIMIT_SECS = 1800.0
"""A model load may outlast `inference_timeout_secs` (a first GGUF conversion), but not forever."""


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class PreparedEvent:
    """The engine rendered the request (posted before its first `Text`): how to read the reply."""

    prepared: Prepared


@dataclass(frozen=True)
class Done:
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


@dataclass(frozen=True)
class Failed:
    error: LlmError


Event = Text | PreparedEvent | Done | Failed


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
    prepared: Prepared | None = None
    """The rendered request, once the engine has rendered it (`on_prepared`)."""
    load_only: bool = False
    """Load the engine and finish (`InferenceWorker.loaded_engine`): nothing is generated."""
    queued_at: float | None = None
    """When the job was submitted (`time.monotonic()`)."""
    started_at: float | None = None
    """When the engine took it (the model loaded): `started_at - queued_at` is its wait."""
    first_text_at: float | None = None
    """When its first text arrived from the engine."""

    def timings(self, now: float | None = None) -> dict[str, float]:
        """Seconds spent waiting (queue, and the model's load on the first request) and generating, and
        the time to the first text, as far as they are known (for spans: `zeph.local.*`)."""
        end = time.monotonic() if now is None else now
        out: dict[str, float] = {}
        if self.queued_at is not None and self.started_at is not None:
            out["zeph.local.queue_wait"] = max(0.0, self.started_at - self.queued_at)
        if self.started_at is not None:
            out["zeph.local.generation"] = max(0.0, end - self.started_at)
            if self.first_text_at is not None:
                out["zeph.local.time_to_first_token"] = max(0.0, self.first_text_at - self.started_at)
        return out

    def post(self, event: Event) -> None:
        """Deliver an event to the caller's loop (thread-safe); a closed loop cancels the job."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the caller's loop is gone: nobody is listening any more
            self.cancel.set()

    # TokenSink, called on the worker thread by the generation
    def on_text(self, text: str) -> None:
        if self.first_text_at is None:
            self.first_text_at = time.monotonic()
        self.post(Text(text))

    def on_prepared(self, prepared: Prepared) -> None:
        self.prepared = prepared
        self.post(PreparedEvent(prepared))

    def on_step(self) -> None:
        self.steps += 1
        if self.step_hook is not None:
            self.step_hook(self)

    def is_cancelled(self) -> bool:
        return self.cancel.is_set()


def _terminal_note(text: str) -> None:
    """Show load progress on an interactive terminal (stderr a TTY); silent otherwise (logs still say it)."""
    stream = sys.stderr
    try:
        if stream is not None and stream.isatty():
            print(text, file=stream, flush=True)
    except (OSError, ValueError):  # a closed or odd stderr must never fail a load
        pass


class InferenceWorker:
    """Owns the model thread, its bounded queue and the lazily loaded engine; shared by every handle."""

    def __init__(
        self,
        name: str,
        load: Callable[[], InferenceEngine],
        *,
        capacity: int = 4,
        timeout: float = 120.0,
        max_batch_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.clock = clock
        """The monotonic clock every wait is measured on (tests pass a controllable one)."""
        self.ready_at: float | None = None
        """When the engine finished loading (on `clock`); waits are timed from here, never across a load."""
        self._load = load
        self.capacity = capacity
        self.timeout = timeout
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[Job | None] = queue.Queue(capacity)
        self._engine: InferenceEngine | None = None
        self._loading = False
        self._closed = False
        self.max_batch_size = max_batch_size
        """Most jobs decoded together; None takes the engine's own `max_batch_size` (from the config)."""
        self._current: list[Job] = []
        """The jobs in hand on the worker thread: one, or every row of the running batch."""
        self._stopping = False
        self.step_rows: Counter[int] = Counter()
        """How many decode steps ran with each live batch size (observability and tests)."""
        self.restarts = 0
        self._died = False
        self.step_hook: Callable[[Job], None] | None = None
        """Called on the worker thread after every generated token (tests use it to stall or crash)."""

    @property
    def engine(self) -> InferenceEngine | None:
        return self._engine

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    @property
    def queued(self) -> int:
        """Jobs waiting in the queue (not yet taken by the worker thread)."""
        return self._queue.qsize()

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

    def wait_deadline(self, since: float) -> float | None:
        """When a wait that began at `since` times out; None while the model is still loading.

        Loading is not inference: a wait that began before (or during) the load is timed from the
        moment the worker became ready, so a slow first load never eats `inference_timeout_secs`.
        """
        if self._loading or self._engine is None:
            return None
        ready = self.ready_at
        return max(since, ready if ready is not None else since) + self.timeout

    def _load_expired(self, since: float) -> bool:
        return (self._loading or self._engine is None) and self.clock() - since >= _LOAD_LIMIT_SECS

    async def submit(self, job: Job) -> None:
        """Queue a job, waiting at most `timeout` seconds for room (timed from when the model is ready)."""
        job.step_hook = self.step_hook
        job.queued_at = time.monotonic()
        since = self.clock()
        delay = 0.002
        while True:
            thread, jobs = self._ensure_thread()
            try:
                jobs.put_nowait(job)
            except queue.Full:
                deadline = self.wait_deadline(since)
                if (deadline is not None and self.clock() >= deadline) or self._load_expired(since):
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
        since = self.clock()
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
            deadline = self.wait_deadline(since)
            if (deadline is not None and self.clock() >= deadline) or self._load_expired(since):
                job.cancel.set()
                raise ProviderTimeoutError(
                    f"the local model produced nothing for {self.timeout:g}s (busy or stuck); "
                    "raise inference_timeout_secs or queue fewer requests",
                    provider=self.name,
                )

    async def loaded_engine(self) -> InferenceEngine:
        """The engine, loaded on the worker thread first (a load-only job) when no request has yet."""
        if self._engine is None:
            from zeph_providers.local.engine import GenerationParams

            loop = asyncio.get_running_loop()
            job = Job([], GenerationParams(max_tokens=1, temperature=0.0), loop, load_only=True)
            await self.submit(job)
            while not isinstance(event := await self.next_event(job), Done):
                if isinstance(event, Failed):
                    raise event.error
        engine = self._engine
        if engine is None:
            raise ProviderUnavailableError("the local provider is closed", provider=self.name)
        return engine

    # ----- worker thread ---------------------------------------------------------------------

    def _engine_or_load(self) -> InferenceEngine:
        if self._engine is None:
            self._loading = True
            started = time.monotonic()
            log.info("loading the local model for %r (not counted against inference_timeout_secs)", self.name)
            _terminal_note(f"zeph-providers: loading the local model for {self.name!r}...")
            try:
                self._engine = self._load()
                self.ready_at = self.clock()
            finally:
                self._loading = False
            seconds = time.monotonic() - started
            log.info("local model for %r ready in %.1fs", self.name, seconds)
            _terminal_note(f"zeph-providers: local model for {self.name!r} ready in {seconds:.1f}s")
        return self._engine

    def _error(self, exc: Exception) -> LlmError:
        if isinstance(exc, LlmError):
            if exc.provider is None:
                exc.provider = self.name
            return exc
        return InferenceError(f"generation failed: {type(exc).__name__}: {exc}", provider=self.name)

    def _interrupted(self) -> ProviderUnavailableError:
        return ProviderUnavailableError(
            "the local provider was closed while generating; the reply was cut short", provider=self.name
        )

    def _finish(self, job: Job, outcome: GenerationResult | Exception) -> None:
        """Deliver a job's outcome (a result, or the error that failed it alone) and mark it done."""
        if isinstance(outcome, Exception):
            job.post(Failed(self._error(outcome)))
        elif job.cancel.is_set() and self._closed:
            # Cut short by aclose(): the text so far is not a reply. (A caller that closed its own
            # stream, or timed out, is gone: what it would be told does not matter.)
            job.post(Failed(self._interrupted()))
        else:
            job.post(Done(outcome.prompt_tokens, outcome.completion_tokens, outcome.finish_reason))
        job.done.set()

    def _take(self, jobs: queue.Queue[Job | None], room: int) -> list[Job]:
        """Up to `room` jobs already waiting in the queue (never blocks); cancelled ones are let go."""
        taken: list[Job] = []
        while len(taken) < room and not self._stopping:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:  # aclose: finish the batch in hand (its jobs are cancelled), then stop
                self._stopping = True
            elif job.cancel.is_set():
                job.done.set()
            else:
                job.started_at = time.monotonic()
                taken.append(job)
        self._current.extend(taken)
        return taken

    def _count_step(self, rows: int) -> None:
        self.step_rows[rows] += 1

    def _serve(self, job: Job, jobs: queue.Queue[Job | None]) -> None:
        """Run `job`, batched with whatever else waits (and arrives) when the engine can batch."""
        engine = self._engine_or_load()
        if job.load_only:
            job.post(Done(0, 0, "stop"))
            return
        limit = self.max_batch_size or engine.max_batch_size
        job.started_at = time.monotonic()
        first = [job, *self._take(jobs, max(0, limit - 1))]
        engine.run_batch(first, lambda room: self._take(jobs, room), self._finish, on_step=self._count_step)

    def _run(self, jobs: queue.Queue[Job | None]) -> None:
        try:
            while not self._stopping:
                job = jobs.get()
                if job is None:
                    return
                self._current = [job]
                try:
                    if not job.cancel.is_set():
                        self._serve(job, jobs)
                except Exception as exc:  # this request (or this batch's forward pass) failed; the worker carries on
                    for failed in self._current:
                        if not failed.done.is_set():
                            self._finish(failed, exc)
                for settled in self._current:
                    settled.done.set()
                self._current = []
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
            for job in self._current:  # every row of the batch in flight
                if not job.done.is_set():
                    job.post(Failed(error))
                    job.done.set()
            self._drain(jobs, error)
        finally:
            self._current = []

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
        for current in list(self._current):
            current.cancel.set()
        self._drain(jobs, ProviderUnavailableError("the local provider was closed", provider=self.name))
        with contextlib.suppress(queue.Full):
            jobs.put_nowait(None)
        if thread is not None and thread is not threading.current_thread():
            await asyncio.to_thread(thread.join, 10.0)
        engine, self._engine = self._engine, None
        if engine is not None:
            device = engine.device
            if thread is None or not thread.is_alive():
                engine.close()
            del engine
            gc.collect()
            if device == "cuda":
                import torch

                torch.cuda.empty_cache()
