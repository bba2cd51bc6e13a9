"""The worker's wait clock and interrupted replies, on a controllable clock and a fake engine.

No timed assertions: every deadline is read on the worker's own (test-controlled) clock, so the
checks hold on a machine of any speed and under any load.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from zeph_providers.errors import ProviderTimeoutError, ProviderUnavailableError
from zeph_providers.local.engine import GenerationParams, GenerationResult, TokenSink, run_one_by_one
from zeph_providers.local.worker import Done, Failed, InferenceWorker, Job, Text
from zeph_providers.types import Message

HANG_GUARD = 60.0  # generous "never hangs" bound, not a timing assertion
PARAMS = GenerationParams(max_tokens=4, temperature=0.0)


class TickingClock:
    """A monotonic clock that moves only when read (by `tick`) or when the test moves it."""

    def __init__(self, tick: float = 0.0) -> None:
        self.now = 1000.0
        self.tick = tick
        self.reads = 0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.reads += 1
            self.now += self.tick
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


@dataclass
class BlockingEngine:
    """Streams "ab", but first blocks every job until `release` is set (a busy or stuck model)."""

    release: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    max_batch_size: int = 1
    device: str = "cpu"

    def run_batch(self, jobs: Any, admit: Any, finish: Any, *, on_step: Any = None) -> None:
        run_one_by_one(self, jobs, finish)

    def close(self) -> None:
        pass

    def run(self, messages: list[Message], params: GenerationParams, sink: TokenSink) -> GenerationResult:
        sink.on_text("a")
        sink.on_step()
        self.entered.set()
        while not self.release.wait(0.01):
            if sink.is_cancelled():
                return GenerationResult(1, 1, "stop")  # cut short: the worker must not pass this off as a reply
        sink.on_text("b")
        sink.on_step()
        return GenerationResult(1, 2, "stop")


def _worker(
    engine: Any, clock: TickingClock, *, timeout: float, capacity: int = 1, load: Any = None
) -> InferenceWorker:
    return InferenceWorker("fake", load or (lambda: engine), capacity=capacity, timeout=timeout, clock=clock)


async def _answer(worker: InferenceWorker, job: Job) -> str:
    text = ""
    while True:
        event = await worker.next_event(job)
        if isinstance(event, Text):
            text += event.text
        elif isinstance(event, Done):
            return text
        elif isinstance(event, Failed):
            raise event.error


async def test_queue_room_wait_ends_at_the_timeout_on_the_workers_clock() -> None:
    # Every read of the clock moves it by 1% of the timeout: the wait for queue room must give up
    # once its clock passed `timeout` (plus a few reads), never at 20x `inference_timeout_secs`.
    timeout = 5.0
    clock = TickingClock(tick=timeout / 100)
    engine = BlockingEngine()
    worker = _worker(engine, clock, timeout=timeout)
    loop = asyncio.get_running_loop()
    try:
        first = Job([Message.user("a")], PARAMS, loop)
        await worker.submit(first)
        assert await asyncio.to_thread(engine.entered.wait, HANG_GUARD)  # busy, and the model is loaded
        await worker.submit(Job([Message.user("b")], PARAMS, loop))  # fills the queue (capacity 1)
        started = clock.now
        with pytest.raises(ProviderTimeoutError) as info:
            await asyncio.wait_for(worker.submit(Job([Message.user("c")], PARAMS, loop)), HANG_GUARD)
        waited = clock.now - started
        assert "queue_capacity" in str(info.value) and info.value.provider == "fake"
        assert timeout <= waited <= timeout * 1.5
        assert worker.wait_deadline(started) == started + timeout
    finally:
        engine.release.set()
        await worker.aclose()


async def test_a_load_longer_than_the_timeout_does_not_count() -> None:
    # The load takes 100x the timeout on the worker's clock; the wait is timed from when the worker is ready.
    timeout = 1.0
    clock = TickingClock()
    engine = BlockingEngine()
    loading = threading.Event()
    polled_after_load = threading.Event()

    def load() -> BlockingEngine:
        loading.set()
        clock.advance(100 * timeout)
        return engine

    worker = _worker(engine, clock, timeout=timeout, load=load)
    loop = asyncio.get_running_loop()
    job = Job([Message.user("hi")], PARAMS, loop)
    try:
        await worker.submit(job)
        assert await asyncio.to_thread(engine.entered.wait, HANG_GUARD)
        assert worker.ready_at is not None
        reads = clock.reads

        def release_after_a_poll() -> None:  # the caller checked its deadline at least once after the load
            while clock.reads <= reads + 1:
                threading.Event().wait(0.01)
            polled_after_load.set()
            engine.release.set()

        helper = threading.Thread(target=release_after_a_poll, daemon=True)
        helper.start()
        assert await asyncio.wait_for(_answer(worker, job), HANG_GUARD) == "ab"
        assert polled_after_load.is_set() and loading.is_set()
        # A wait that began before the load ended is timed from the ready moment.
        assert worker.wait_deadline(worker.ready_at - 50 * timeout) == worker.ready_at + timeout
    finally:
        engine.release.set()
        await worker.aclose()


async def test_waits_never_time_out_while_the_model_loads() -> None:
    timeout = 1.0
    clock = TickingClock()
    engine = BlockingEngine()
    engine.release.set()
    go = threading.Event()

    def load() -> BlockingEngine:
        go.wait(HANG_GUARD)
        return engine

    worker = _worker(engine, clock, timeout=timeout, load=load)
    loop = asyncio.get_running_loop()
    job = Job([Message.user("hi")], PARAMS, loop)
    try:
        await worker.submit(job)
        assert worker.wait_deadline(clock.now) is None  # not ready: no deadline runs
        answer = asyncio.create_task(_answer(worker, job))
        reads = clock.reads
        while clock.reads < reads + 2:  # the caller polled twice, each time 10x past its timeout
            clock.advance(10 * timeout)
            await asyncio.sleep(0.05)
        go.set()
        assert await asyncio.wait_for(answer, HANG_GUARD) == "ab"
    finally:
        go.set()
        await worker.aclose()


async def test_closing_the_worker_mid_generation_is_an_error_not_a_reply() -> None:
    clock = TickingClock()
    engine = BlockingEngine()
    worker = _worker(engine, clock, timeout=HANG_GUARD)
    loop = asyncio.get_running_loop()
    job = Job([Message.user("hi")], PARAMS, loop)
    await worker.submit(job)
    answer = asyncio.create_task(_answer(worker, job))
    assert await asyncio.to_thread(engine.entered.wait, HANG_GUARD)
    await worker.aclose()
    with pytest.raises(ProviderUnavailableError, match="closed"):
        await asyncio.wait_for(answer, HANG_GUARD)
