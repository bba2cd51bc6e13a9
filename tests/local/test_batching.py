"""Dynamic (continuous) batching in the local worker, on the tiny random Llama.

Batches are observed through `worker.step_rows` (decode steps per live batch size) and a gate in
the step hook that holds the first job until the others wait in the queue: no timing assertions.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.local.conftest import ProviderFactory
from zeph_providers.errors import InferenceError
from zeph_providers.local.engine import GenerationParams, GenerationResult, run_one_by_one
from zeph_providers.local.provider import LocalProvider
from zeph_providers.local.worker import Done, Failed, InferenceWorker, Job, Text
from zeph_providers.types import ChatResponse, Message

HANG_GUARD = 60.0  # generous "never hangs" bound, not a timing assertion

Request = tuple[str, dict[str, Any]]


async def _solo(provider: LocalProvider, prompt: str, **options: Any) -> ChatResponse:
    return await asyncio.wait_for(provider.chat([Message.user(prompt)], **options), HANG_GUARD)


async def _together(
    provider: LocalProvider, requests: list[Request], extra: Callable[[Job], None] | None = None
) -> list[ChatResponse | BaseException]:
    """Run `requests` so that all but the first wait in the queue while the first is held at its first token."""
    gate, entered = threading.Event(), threading.Event()

    def hook(job: Job) -> None:
        if not gate.is_set():
            entered.set()
            gate.wait(HANG_GUARD)
        if extra is not None:
            extra(job)

    provider.worker.step_hook = hook
    (prompt, options), rest = requests[0], requests[1:]
    tasks = [asyncio.create_task(provider.chat([Message.user(prompt)], **options))]
    try:
        assert await asyncio.to_thread(entered.wait, HANG_GUARD), "the worker never started"
        tasks += [asyncio.create_task(provider.chat([Message.user(p)], **o)) for p, o in rest]
        async with asyncio.timeout(HANG_GUARD):
            # the queue lives on the worker's side: there is no event to await, so poll its size
            while provider.worker.queued < len(rest):  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    finally:
        gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), HANG_GUARD)
    provider.worker.step_hook = None
    return results


def _ok(results: list[ChatResponse | BaseException]) -> list[ChatResponse]:
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, ChatResponse)]


PROMPTS = ["hi", "what is the capital of France? answer briefly", "tell me a story about a fox", "2+2?"]


async def test_queued_jobs_share_one_batch_and_match_their_solo_greedy_answers(
    make_provider: ProviderFactory,
) -> None:
    provider = make_provider()
    solo = [await _solo(provider, p, max_tokens=10) for p in PROMPTS]
    assert len({r.text for r in solo}) > 1
    provider.worker.step_rows.clear()
    batched = _ok(await _together(provider, [(p, {"max_tokens": 10}) for p in PROMPTS]))
    assert max(provider.worker.step_rows) == len(PROMPTS)  # every request decoded in one batch
    assert [r.text for r in batched] == [r.text for r in solo]
    for one, alone in zip(batched, solo, strict=True):  # usage per row: prompt without padding
        assert one.usage.input_tokens == alone.usage.input_tokens
        assert one.usage.output_tokens == alone.usage.output_tokens == 10
        assert one.finish_reason == "length"
    assert len({r.usage.input_tokens for r in batched}) > 1  # the prompts really had different lengths


async def test_rows_finish_independently(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    reference = await _solo(provider, PROMPTS[2], max_tokens=12)
    stop = reference.text[len(reference.text) // 2 :][:3]
    cut = reference.text.find(stop)
    assert stop and cut > 0
    requests: list[Request] = [
        (PROMPTS[0], {"max_tokens": 12}),
        (PROMPTS[2], {"max_tokens": 12, "stop": [stop]}),
        (PROMPTS[1], {"max_tokens": 3}),
    ]
    long, stopped, short = _ok(await _together(provider, requests))
    assert long.finish_reason == "length" and long.usage.output_tokens == 12
    assert short.finish_reason == "length" and short.usage.output_tokens == 3
    assert stopped.finish_reason == "stop" and stopped.text == reference.text[:cut]
    assert stopped.usage.output_tokens < 12


async def test_cancelling_one_row_stops_it_within_one_step(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    after_cancel: list[int] = []
    seen: dict[str, Job] = {}

    def cancel_victim(job: Job) -> None:
        text = str(job.messages[0].text)
        seen[text] = job
        if job.cancel.is_set():
            after_cancel.append(job.steps)
        if text == "victim" and job.steps == 3:
            job.cancel.set()  # what closing its stream does, from the worker's point of view

    requests: list[Request] = [
        ("first", {"max_tokens": 20}),
        ("victim", {"max_tokens": 20}),
        ("third", {"max_tokens": 20}),
    ]
    results = _ok(await _together(provider, requests, cancel_victim))
    assert seen["victim"].steps == 3 and after_cancel == []  # not one more token once cancelled
    assert results[1].usage.output_tokens == 3
    assert results[0].usage.output_tokens == results[2].usage.output_tokens == 20
    assert max(provider.worker.step_rows) == 3


async def test_each_row_samples_with_its_own_settings(make_provider: ProviderFactory) -> None:
    provider = make_provider(queue_capacity=8)
    sampled = {"max_tokens": 12, "temperature": 1.5, "top_p": 0.95, "top_k": 50, "extra": {"repeat_penalty": 1.2}}
    greedy_solo = await _solo(provider, PROMPTS[1], max_tokens=12)
    seeded_solo = await _solo(provider, PROMPTS[1], seed=7, **sampled)
    requests: list[Request] = [
        (PROMPTS[1], {"max_tokens": 12}),
        (PROMPTS[1], {**sampled, "seed": 7}),
        (PROMPTS[1], {**sampled, "seed": 8}),
        (PROMPTS[1], {**sampled, "seed": 7}),
        (PROMPTS[1], {"max_tokens": 12}),
    ]
    greedy, seven, eight, seven_again, greedy_again = _ok(await _together(provider, requests))
    assert max(provider.worker.step_rows) == len(requests)
    assert greedy.text == greedy_again.text == greedy_solo.text  # greedy rows stay greedy next to sampled ones
    assert seven.text == seven_again.text == seeded_solo.text  # a seed repeats, in or out of a batch
    assert eight.text != seven.text and seven.text != greedy.text


async def test_a_prompt_that_fails_to_encode_fails_alone(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    await _solo(provider, "warm up", max_tokens=1)
    engine = provider.worker.engine
    assert engine is not None
    encode = engine.encode_prepared  # type: ignore[attr-defined]

    def picky(prepared: Any) -> Any:
        if "poison" in prepared.prompt:
            raise ValueError("cannot encode this")
        return encode(prepared)

    engine.encode_prepared = picky  # type: ignore[attr-defined]
    requests: list[Request] = [("fine", {"max_tokens": 5}), ("poison", {}), ("also fine", {"max_tokens": 5})]
    first, bad, third = await _together(provider, requests)
    assert isinstance(bad, InferenceError) and "cannot encode this" in str(bad) and bad.provider == "tiny"
    assert isinstance(first, ChatResponse) and first.usage.output_tokens == 5
    assert isinstance(third, ChatResponse) and third.usage.output_tokens == 5
    assert provider.worker.restarts == 0


async def test_a_failed_forward_pass_fails_the_whole_batch_and_the_worker_carries_on(
    make_provider: ProviderFactory,
) -> None:
    provider = make_provider()
    await _solo(provider, "warm up", max_tokens=1)
    engine = provider.worker.engine
    assert engine is not None
    model = engine.loaded.model
    forward = model.forward
    calls = [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 4:  # 1: the first prompt, 2: its step, 3: the newcomers' prefill, 4: the batch step
            raise RuntimeError("out of memory, say")
        return forward(*args, **kwargs)

    model.forward = flaky
    try:
        results = await _together(provider, [(p, {"max_tokens": 8}) for p in PROMPTS[:3]])
    finally:
        model.forward = forward
    for result in results:
        assert isinstance(result, InferenceError) and "out of memory" in str(result)
    assert (await _solo(provider, "next", max_tokens=4)).usage.output_tokens == 4
    assert provider.worker.restarts == 0


async def test_a_dying_worker_fails_every_row_of_the_batch_then_restarts(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    await _solo(provider, "warm up", max_tokens=1)
    batched = threading.Event()

    def kill_once_batched(job: Job) -> None:
        if provider.worker.step_rows and max(provider.worker.step_rows) >= 3 and not batched.is_set():
            batched.set()
            raise SystemExit  # as a fatal error inside the thread would

    provider.worker.step_rows.clear()
    results = await _together(provider, [(p, {"max_tokens": 50}) for p in PROMPTS[:3]], kill_once_batched)
    assert batched.is_set()
    for result in results:
        assert isinstance(result, InferenceError) and "died" in str(result) and result.provider == "tiny"
    answer = await _solo(provider, "after the crash", max_tokens=4)
    assert answer.usage.output_tokens == 4 and provider.worker.restarts == 1


async def test_a_killed_thread_mid_batch_fails_every_row(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    await _solo(provider, "warm up", max_tokens=1)
    running = threading.Event()

    def slow(job: Job) -> None:
        if max(provider.worker.step_rows, default=0) >= 2:
            running.set()
        threading.Event().wait(0.002)

    provider.worker.step_rows.clear()
    provider.worker.step_hook = slow
    tasks = [asyncio.create_task(provider.chat([Message.user(p)], max_tokens=2000)) for p in PROMPTS[:2]]
    assert await asyncio.to_thread(running.wait, HANG_GUARD)
    thread = provider.worker.thread
    assert thread is not None and thread.ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit))
    for task in tasks:
        with pytest.raises(InferenceError, match="died"):
            await asyncio.wait_for(task, HANG_GUARD)
    provider.worker.step_hook = None
    assert (await _solo(provider, "again", max_tokens=3)).usage.output_tokens == 3


async def test_max_batch_size_one_runs_requests_one_at_a_time(make_provider: ProviderFactory) -> None:
    provider = make_provider(max_batch_size=1)
    solo = [await _solo(provider, p, max_tokens=6) for p in PROMPTS[:3]]
    results = _ok(await _together(provider, [(p, {"max_tokens": 6}) for p in PROMPTS[:3]]))
    assert [r.text for r in results] == [r.text for r in solo]
    assert set(provider.worker.step_rows) <= {1}


class _SequentialEngine:
    """An engine that serves one job at a time (like llama.cpp with one slot): `run_batch` runs them in turn."""

    max_batch_size = 1
    device = "cpu"

    def run_batch(self, jobs: Any, admit: Any, finish: Any, *, on_step: Any = None) -> None:
        run_one_by_one(self, jobs, finish)

    def close(self) -> None:
        pass

    def __init__(self) -> None:
        self.active = 0
        self.most = 0

    def run(self, messages: list[Message], params: GenerationParams, sink: Any) -> GenerationResult:
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            for piece in ("a", "b"):
                threading.Event().wait(0.01)
                sink.on_text(piece)
                sink.on_step()
            return GenerationResult(1, 2, "length")
        finally:
            self.active -= 1


async def test_an_engine_without_run_batch_runs_jobs_sequentially() -> None:
    engine = _SequentialEngine()
    worker = InferenceWorker("seq", lambda: engine, capacity=8, timeout=30.0, max_batch_size=8)  # type: ignore[arg-type,return-value]
    loop = asyncio.get_running_loop()
    params = GenerationParams(max_tokens=2, temperature=0.0)

    async def one(i: int) -> str:
        job = Job([Message.user(str(i))], params, loop)
        await worker.submit(job)
        text = ""
        while True:
            event = await worker.next_event(job)
            if isinstance(event, Text):
                text += event.text
            elif isinstance(event, Done):
                return text
            elif isinstance(event, Failed):
                raise event.error

    try:
        assert await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(5))), HANG_GUARD) == ["ab"] * 5
    finally:
        await worker.aclose()
    assert engine.most == 1 and not worker.step_rows
