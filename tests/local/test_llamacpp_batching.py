"""Concurrent requests on the llama.cpp engine: `LlamaCppEngine.run_batch` over llama.cpp's parallel slots.

Real SmolLM2 GGUF. Concurrency is proven without timing: a barrier in the step hook holds every
row at its first token until all of them got there, which only happens if llama.cpp is serving
them at the same time (one at a time, the barrier would break after `HANG_GUARD` and fail the
rows); the engine's `peak_rows` counts the rows seen generating at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.local.test_llamacpp_engine import HANG_GUARD, gguf_config
from zeph_providers.errors import ContextLengthError, InferenceError
from zeph_providers.local.llamacpp import LlamaCppEngine
from zeph_providers.local.provider import LocalProvider
from zeph_providers.local.worker import Job
from zeph_providers.types import ChatResponse, ContentChunk, Message

pytestmark = pytest.mark.slow

Request = tuple[str, dict[str, Any]]

PROMPTS = [
    "Name a fruit.",
    "What is 2 + 2?",
    "Say hello in French.",
    "Name a planet.",
    "Write one sentence about the sea.",
    "What colour is the sky?",
    "Count from one to five.",
    "Tell me a long story about a dragon.",
]


@pytest.fixture
def make(smollm2_gguf: Path) -> Iterator[Callable[..., LocalProvider]]:
    built: list[LocalProvider] = []

    def factory(**overrides: Any) -> LocalProvider:
        provider = LocalProvider(gguf_config(smollm2_gguf, **overrides))
        built.append(provider)
        return provider

    yield factory
    for provider in built:
        asyncio.run(provider.aclose())


def _engine(provider: LocalProvider) -> LlamaCppEngine:
    engine = provider.worker.engine
    assert isinstance(engine, LlamaCppEngine)
    return engine


async def _solo(provider: LocalProvider, prompt: str, **options: Any) -> ChatResponse:
    return await asyncio.wait_for(provider.chat([Message.user(prompt)], **options), HANG_GUARD)


async def _together(
    provider: LocalProvider,
    requests: list[Request],
    extra: Callable[[Job], None] | None = None,
    *,
    parties: int | None = None,
) -> list[ChatResponse | BaseException]:
    """Send `requests` at once; each row waits at its first token until `parties` rows (all) got there."""
    barrier = threading.Barrier(parties or len(requests), timeout=HANG_GUARD)

    def hook(job: Job) -> None:
        if job.steps == 1:
            barrier.wait()
        if extra is not None:
            extra(job)

    provider.worker.step_hook = hook
    try:
        tasks = [provider.chat([Message.user(p)], **o) for p, o in requests]
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), HANG_GUARD)
    finally:
        provider.worker.step_hook = None


def _ok(results: list[ChatResponse | BaseException]) -> list[ChatResponse]:
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, ChatResponse)]


def _row_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("zeph-llamacpp-row")]


async def test_concurrent_callers_get_their_solo_greedy_answers(make: Callable[..., LocalProvider]) -> None:
    provider = make(max_batch_size=8, queue_capacity=8)
    solo = [await _solo(provider, p, max_tokens=24) for p in PROMPTS]
    assert len({r.text for r in solo}) == len(PROMPTS)  # distinct answers: a mix-up would show
    engine = _engine(provider)
    assert engine.max_batch_size == 8 and engine.peak_rows == 1
    provider.worker.step_rows.clear()
    together = _ok(await _together(provider, [(p, {"max_tokens": 24}) for p in PROMPTS]))
    assert engine.peak_rows == len(PROMPTS)  # all eight generating at once
    assert max(provider.worker.step_rows) >= 2
    for one, alone in zip(together, solo, strict=True):
        assert one.text == alone.text  # greedy: exactly the solo answer, none lost or mixed
        assert one.usage == alone.usage and one.finish_reason == alone.finish_reason


async def test_each_slot_keeps_the_configured_context(make: Callable[..., LocalProvider]) -> None:
    provider = make(n_ctx=256, max_batch_size=4)
    long = "word " * 200  # fits in 256 tokens, not in 256 / 4
    requests: list[Request] = [(long, {"max_tokens": 8}), ("word " * 600, {"max_tokens": 8}), ("Hi", {"max_tokens": 4})]
    fits, too_long, short = await _together(provider, requests, parties=2)
    assert isinstance(too_long, ContextLengthError) and too_long.provider == "gguf"  # fails alone
    assert isinstance(fits, ChatResponse) and fits.usage.input_tokens > 200 and fits.usage.output_tokens > 0
    assert isinstance(short, ChatResponse) and short.usage.output_tokens > 0
    assert provider.worker.restarts == 0


async def test_rows_finish_independently(make: Callable[..., LocalProvider]) -> None:
    provider = make(max_batch_size=4)
    story = "Tell me a long story about a dragon."
    yes = await _solo(provider, "Reply with just the word: yes", max_tokens=60)
    assert yes.finish_reason == "stop" and yes.usage.output_tokens < 60
    requests: list[Request] = [
        (story, {"max_tokens": 3}),
        (story, {"max_tokens": 12}),
        ("Reply with just the word: yes", {"max_tokens": 60}),
        (story, {"max_tokens": 7}),
    ]
    three, twelve, stopped, seven = _ok(await _together(provider, requests))
    assert _engine(provider).peak_rows == 4
    for response, limit in ((three, 3), (twelve, 12), (seven, 7)):
        assert response.finish_reason == "length" and response.usage.output_tokens == limit
    assert twelve.text.startswith(seven.text) and seven.text.startswith(three.text)  # same prompt, greedy
    assert stopped == yes


async def test_cancelling_one_row_stops_it_and_the_others_complete(make: Callable[..., LocalProvider]) -> None:
    provider = make(max_batch_size=4)
    story = "Tell me a long story about a dragon."
    solo = await _solo(provider, story, max_tokens=40)
    assert solo.finish_reason == "length"
    seen: dict[str, Job] = {}
    after_cancel: list[int] = []

    def cancel_victim(job: Job) -> None:
        text = str(job.messages[0].text)
        seen[text] = job
        if job.cancel.is_set():
            after_cancel.append(job.steps)
        if text.startswith("victim") and job.steps == 3:
            job.cancel.set()  # what closing its stream does, from the worker's point of view

    requests: list[Request] = [
        (story, {"max_tokens": 40}),
        ("victim: " + story, {"max_tokens": 400}),
        (story, {"max_tokens": 40}),
    ]
    first, victim, third = _ok(await _together(provider, requests, cancel_victim))
    job = seen["victim: " + story]
    assert job.done.is_set() and job.steps == 3 and len(after_cancel) <= 1  # within one token
    assert victim.usage.output_tokens < 400
    assert first == third == solo  # the others ran to the end, unaffected


async def test_closing_one_stream_among_many(make: Callable[..., LocalProvider]) -> None:
    provider = make(max_batch_size=4)
    story = "Tell me a very long story."
    solo = await _solo(provider, "Name a planet.", max_tokens=24)
    jobs: list[Job] = []

    def record(job: Job) -> None:
        if job.messages[0].text == story and job not in jobs:
            jobs.append(job)

    provider.worker.step_hook = record

    async def close_after_three() -> int:
        seen = 0
        async with provider.chat_stream([Message.user(story)], max_tokens=400) as stream:
            async for chunk in stream:
                if isinstance(chunk, ContentChunk):
                    seen += 1
                    if seen >= 3:
                        break
        return seen

    try:
        others = [asyncio.create_task(_solo(provider, "Name a planet.", max_tokens=24)) for _ in range(3)]
        assert await asyncio.wait_for(close_after_three(), HANG_GUARD) == 3
        results = _ok(list(await asyncio.wait_for(asyncio.gather(*others), HANG_GUARD)))
        assert await asyncio.to_thread(jobs[0].done.wait, HANG_GUARD)
    finally:
        provider.worker.step_hook = None
    assert jobs[0].cancel.is_set() and jobs[0].steps < 400
    assert all(r == solo for r in results)


async def test_a_fatal_error_in_one_row_fails_every_row_then_restarts(make: Callable[..., LocalProvider]) -> None:
    provider = make(max_batch_size=4)
    await _solo(provider, "warm up", max_tokens=1)
    engine = _engine(provider)
    fired = threading.Event()
    arrived: set[int] = set()
    all_in = threading.Event()
    lock = threading.Lock()

    def kill_once_batched(job: Job) -> None:
        # Every row waits at its first token until all three are generating, so no row can end
        # (a short answer, an early end of turn) before the fatal error: none is passed off as done.
        with lock:
            arrived.add(id(job))
            if len(arrived) == 3:
                all_in.set()
        all_in.wait(HANG_GUARD)
        with lock:
            fire = job.steps >= 2 and not fired.is_set()
            if fire:
                fired.set()
        if fire:
            raise SystemExit  # as a fatal error inside the thread would

    # Row threads of other engines alive in this process (other tests' providers) are not this one's.
    before = set(_row_threads())
    results = await _together(provider, [(p, {"max_tokens": 50}) for p in PROMPTS[:3]], kill_once_batched)
    assert fired.is_set() and engine.peak_rows >= 3
    for result in results:
        assert isinstance(result, InferenceError) and "died" in str(result) and result.provider == "gguf"
    assert len(set(_row_threads()) - before) <= engine.max_batch_size  # the pool's threads, idle: none leaked
    answer = await _solo(provider, "after the crash", max_tokens=4)
    assert answer.usage.output_tokens == 4 and provider.worker.restarts == 1


async def test_an_error_raised_in_one_row_fails_only_that_row(make: Callable[..., LocalProvider]) -> None:
    provider = make(max_batch_size=4)

    def poison(job: Job) -> None:
        if job.messages[0].text == "poison" and job.steps == 2:
            raise RuntimeError("bad sink")

    requests: list[Request] = [
        ("Name a fruit.", {"max_tokens": 6}),
        ("poison", {"max_tokens": 50}),
        ("Hi", {"max_tokens": 5}),
    ]
    fruit, bad, hi = await _together(provider, requests, poison)
    assert isinstance(bad, InferenceError) and "bad sink" in str(bad)
    assert isinstance(fruit, ChatResponse) and fruit.usage.output_tokens <= 6
    assert isinstance(hi, ChatResponse) and hi.usage.output_tokens <= 5
    assert provider.worker.restarts == 0


async def test_aclose_joins_the_helper_threads(smollm2_gguf: Path) -> None:
    before = set(_row_threads())
    provider = LocalProvider(gguf_config(smollm2_gguf, max_batch_size=4))
    _ok(await _together(provider, [(p, {"max_tokens": 4}) for p in PROMPTS[:4]]))
    engine = _engine(provider)
    assert engine.peak_rows == 4 and len(set(_row_threads()) - before) == 4
    await provider.aclose()
    assert engine.server is None and set(_row_threads()) <= before  # every helper thread joined
    await provider.aclose()


async def test_one_slot_serves_one_request_at_a_time(make: Callable[..., LocalProvider]) -> None:
    provider = make(max_batch_size=1)
    solo = [await _solo(provider, p, max_tokens=12) for p in PROMPTS[:3]]
    together = await asyncio.wait_for(
        asyncio.gather(*(provider.chat([Message.user(p)], max_tokens=12) for p in PROMPTS[:3])), HANG_GUARD
    )
    assert [r.text for r in together] == [r.text for r in solo]
    engine = _engine(provider)
    assert engine.max_batch_size == 1 and engine.peak_rows == 0 and not provider.worker.step_rows
