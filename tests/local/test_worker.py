"""The worker thread: bounded queue, timeouts, cancellation, crash and restart, concurrency."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import threading
import time

import pytest

from tests.local.conftest import ProviderFactory
from zeph_providers.errors import InferenceError, ProviderTimeoutError, ProviderUnavailableError
from zeph_providers.local.worker import Job
from zeph_providers.types import ContentChunk, Message

HANG_GUARD = 60.0  # generous "never hangs" bound, not a timing assertion


async def _wait_thread_event(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, HANG_GUARD), "the worker never reached the hook"


async def test_model_loads_lazily_on_the_worker_thread(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    assert provider.worker.engine is None and provider.worker.thread is None
    seen: list[str] = []
    provider.worker.step_hook = lambda job: seen.append(threading.current_thread().name)
    await provider.chat([Message.user("hi")], max_tokens=2)
    assert provider.worker.engine is not None
    assert seen and all(name.startswith("zeph-local-") for name in seen)


async def test_stuck_worker_times_out(make_provider: ProviderFactory) -> None:
    provider = make_provider(inference_timeout_secs=0.5)
    release, entered = threading.Event(), threading.Event()

    def block(job: Job) -> None:
        entered.set()
        release.wait(HANG_GUARD)

    provider.worker.step_hook = block
    try:
        with pytest.raises(ProviderTimeoutError) as info:
            await asyncio.wait_for(provider.chat([Message.user("hi")]), HANG_GUARD)
        assert info.value.provider == "tiny"
        assert "inference_timeout_secs" in str(info.value)
    finally:
        release.set()


async def test_full_queue_times_out(make_provider: ProviderFactory) -> None:
    # The short timeout starts once the worker is busy (a first token may take longer on a loaded machine).
    provider = make_provider(inference_timeout_secs=HANG_GUARD, queue_capacity=1)
    release, entered = threading.Event(), threading.Event()

    def block(job: Job) -> None:
        entered.set()
        release.wait(HANG_GUARD)

    provider.worker.step_hook = block
    try:
        running = asyncio.create_task(provider.chat([Message.user("a")]))
        await _wait_thread_event(entered)  # the worker is busy with the first request
        provider.worker.timeout = 0.5
        queued = asyncio.create_task(provider.chat([Message.user("b")]))  # fills the queue
        await asyncio.sleep(0.05)
        with pytest.raises(ProviderTimeoutError) as info:
            await asyncio.wait_for(provider.chat([Message.user("c")]), HANG_GUARD)
        assert "queue_capacity" in str(info.value) and info.value.provider == "tiny"
        for task in (running, queued):
            with pytest.raises(ProviderTimeoutError):
                await asyncio.wait_for(task, HANG_GUARD)
    finally:
        release.set()


async def _stream_then_close(provider: object, jobs: list[Job], *, chunks: int) -> None:
    stream = provider.chat_stream([Message.user("tell me a long story")], max_tokens=400)  # type: ignore[attr-defined]
    seen = 0
    async with stream:
        async for chunk in stream:
            if isinstance(chunk, ContentChunk):
                seen += 1
                if seen >= chunks:
                    break


def _slow_recorder(jobs: list[Job], after_cancel: list[int]) -> object:
    def hook(job: Job) -> None:
        if not jobs or jobs[-1] is not job:
            jobs.append(job)
        if job.cancel.is_set():
            after_cancel.append(job.steps)
        time.sleep(0.002)  # keep 400 tokens well longer than the test's reaction time

    return hook


async def test_closing_a_stream_stops_generation(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    jobs: list[Job] = []
    after_cancel: list[int] = []
    provider.worker.step_hook = _slow_recorder(jobs, after_cancel)  # type: ignore[assignment]
    await asyncio.wait_for(_stream_then_close(provider, jobs, chunks=3), HANG_GUARD)
    job = jobs[0]
    assert await asyncio.to_thread(job.done.wait, HANG_GUARD)
    assert job.cancel.is_set()
    assert job.steps < 400
    assert len(after_cancel) <= 1  # at most one more token once the cancel flag is up


async def test_cancelling_the_task_stops_generation(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    jobs: list[Job] = []
    after_cancel: list[int] = []
    provider.worker.step_hook = _slow_recorder(jobs, after_cancel)  # type: ignore[assignment]
    recorder = provider.worker.step_hook
    going = threading.Event()

    def hook(job: Job) -> None:
        recorder(job)  # type: ignore[misc]
        if job.steps >= 3:
            going.set()

    provider.worker.step_hook = hook
    task = asyncio.create_task(provider.chat([Message.user("go on")], max_tokens=400))
    await _wait_thread_event(going)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(jobs[0].done.wait, HANG_GUARD)
    assert jobs[0].steps < 400 and len(after_cancel) <= 1


async def test_abandoned_stream_stops_generation(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    jobs: list[Job] = []
    after_cancel: list[int] = []
    provider.worker.step_hook = _slow_recorder(jobs, after_cancel)  # type: ignore[assignment]
    stream = provider.chat_stream([Message.user("never finished")], max_tokens=400)
    await anext(stream)
    del stream
    gc.collect()
    assert jobs
    assert await asyncio.to_thread(jobs[0].done.wait, HANG_GUARD)
    assert jobs[0].steps < 400


async def test_worker_death_fails_in_flight_and_queued_then_restarts(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    await provider.chat([Message.user("warm up")], max_tokens=2)
    started = threading.Event()

    def slow(job: Job) -> None:
        started.set()
        time.sleep(0.005)

    provider.worker.step_hook = slow
    in_flight = asyncio.create_task(provider.chat([Message.user("first")], max_tokens=1000))
    await _wait_thread_event(started)
    queued = asyncio.create_task(provider.chat([Message.user("second")], max_tokens=5))
    await asyncio.sleep(0.05)
    thread = provider.worker.thread
    assert thread is not None and thread.ident is not None
    # Kill the worker thread: raise SystemExit inside it, as a fatal error would.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit))
    for task in (in_flight, queued):
        with pytest.raises(InferenceError) as info:
            await asyncio.wait_for(task, HANG_GUARD)
        assert info.value.provider == "tiny" and "died" in str(info.value)
    await asyncio.to_thread(thread.join, HANG_GUARD)
    assert not thread.is_alive()
    provider.worker.step_hook = None
    answer = await asyncio.wait_for(provider.chat([Message.user("after the crash")], max_tokens=4), HANG_GUARD)
    assert answer.usage.output_tokens == 4
    assert provider.worker.restarts == 1 and provider.worker.thread is not thread


async def test_an_error_in_one_generation_fails_only_that_request(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    poisoned: list[Job] = []

    def explode(job: Job) -> None:
        if job.messages[0].text == "poison":
            poisoned.append(job)
            raise RuntimeError("bad input")

    provider.worker.step_hook = explode
    bad = asyncio.create_task(provider.chat([Message.user("poison")]))
    good = asyncio.create_task(provider.chat([Message.user("fine")], max_tokens=3))
    with pytest.raises(InferenceError, match="bad input"):
        await asyncio.wait_for(bad, HANG_GUARD)
    assert (await asyncio.wait_for(good, HANG_GUARD)).usage.output_tokens == 3
    assert provider.worker.restarts == 0 and poisoned


async def test_many_concurrent_callers_each_get_their_own_answer(make_provider: ProviderFactory) -> None:
    provider = make_provider(queue_capacity=4)
    prompts = [f"question number {i}: what is {i} plus {i}?" for i in range(24)]
    solo = [(await provider.chat([Message.user(p)], max_tokens=12)).text for p in prompts]
    assert len(set(solo)) > 1  # different prompts give different answers, so mixing would show

    async def ask(prompt: str) -> str:
        chunks: list[str] = []
        async with provider.chat_stream([Message.user(prompt)], max_tokens=12) as stream:
            async for chunk in stream:
                if isinstance(chunk, ContentChunk):
                    chunks.append(chunk.text)
        assert stream.response.text == "".join(chunks)
        return stream.response.text

    answers = await asyncio.wait_for(asyncio.gather(*(ask(p) for p in prompts)), HANG_GUARD * 2)
    assert answers == solo


async def test_aclose_stops_the_thread_and_refuses_new_work(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    await provider.chat([Message.user("hi")], max_tokens=2)
    thread = provider.worker.thread
    assert thread is not None and thread.is_alive()
    await provider.aclose()
    assert not thread.is_alive() and provider.worker.engine is None
    with pytest.raises(ProviderUnavailableError):
        await provider.chat([Message.user("hi again")])
    await provider.aclose()  # twice is fine


def _hold_until_cancelled(entered: threading.Event) -> object:
    def hook(job: Job) -> None:
        entered.set()
        job.cancel.wait(HANG_GUARD)  # keep generating until the close cancels this job

    return hook


async def test_closing_the_provider_mid_generation_is_an_error_not_a_truncated_reply(
    make_provider: ProviderFactory,
) -> None:
    provider = make_provider()
    entered = threading.Event()
    provider.worker.step_hook = _hold_until_cancelled(entered)  # type: ignore[assignment]
    task = asyncio.create_task(provider.chat([Message.user("a long story")], max_tokens=400))
    await _wait_thread_event(entered)
    await provider.aclose()
    with pytest.raises(ProviderUnavailableError, match="closed") as info:
        await asyncio.wait_for(task, HANG_GUARD)
    assert info.value.provider == "tiny"


async def test_closing_the_provider_mid_batch_fails_every_row(make_provider: ProviderFactory) -> None:
    provider = make_provider(max_batch_size=4)
    entered = threading.Event()
    provider.worker.step_hook = _hold_until_cancelled(entered)  # type: ignore[assignment]
    tasks = [asyncio.create_task(provider.chat([Message.user(f"story {i}")], max_tokens=400)) for i in range(3)]
    await _wait_thread_event(entered)
    await provider.aclose()
    for task in tasks:
        with pytest.raises(ProviderUnavailableError):
            await asyncio.wait_for(task, HANG_GUARD)
