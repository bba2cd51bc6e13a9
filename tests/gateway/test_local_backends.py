"""The gateway in front of real models: the local SmolLM2 backend (in-process llama.cpp) and the
real llama.cpp HTTP server through a `compatible` provider. A 135M model answers with shapes, not
facts: these tests assert on streaming, usage, errors and cancellation, never on wording."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.gateway.conftest import HANG_GUARD, Gateway, running_gateway
from zeph_providers import Registry
from zeph_providers.local.provider import LocalProvider
from zeph_providers.local.worker import Job

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "local.toml"
PROMPT = [{"role": "user", "content": "Write one sentence about the sea."}]


@pytest.fixture(scope="module")
def gateway(llamacpp_server: str) -> Iterator[Gateway]:
    """configs/local.toml (the offline SmolLM2 + MiniLM config) plus the llama.cpp server."""
    text = CONFIG.read_text(encoding="utf-8") + (
        "\n[[llm.providers]]\n"
        'name = "llamacpp"\ntype = "compatible"\nmodel = "smollm2"\n'
        f'base_url = "{llamacpp_server}/v1"\ntimeout_secs = 300\nmax_retries = 0\n'
    )
    with running_gateway(Registry.from_toml_string(text, source=str(CONFIG))) as running:
        yield running


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0, timeout=300) as c:
        yield c


@pytest.mark.parametrize("model", ["local", "llamacpp"])
def test_chat_and_stream(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    assert reply.usage is not None and 1 <= reply.usage.completion_tokens <= 8
    assert reply.choices[0].finish_reason in ("stop", "length")
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=PROMPT,  # type: ignore[arg-type]
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    usage = chunks[-1].usage
    assert usage is not None and 1 <= usage.completion_tokens <= 8


def test_local_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="local", input=["the sea", "a ship"])
    assert [len(d.embedding) for d in result.data] == [384, 384]  # all-MiniLM-L6-v2


def test_llamacpp_context_overflow_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="llamacpp", messages=[{"role": "user", "content": "word " * 6000}], max_tokens=4
        )
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "context_length_exceeded"


def test_client_disconnect_stops_local_generation(gateway: Gateway) -> None:
    provider = gateway.registry.get("local")
    assert isinstance(provider, LocalProvider)
    jobs: list[Job] = []
    going = threading.Event()
    seen_cancel: list[bool] = []

    def hook(job: Job) -> None:
        if not jobs or jobs[-1] is not job:
            jobs.append(job)
        if job.steps == 3:
            going.set()
            # hold the model here until the gateway cancels the job (the client leaves first)
            seen_cancel.append(job.cancel.wait(HANG_GUARD))

    body: dict[str, Any] = {
        "model": "local",
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 400,
        "stream": True,
    }
    provider.worker.step_hook = hook
    try:
        with httpx.stream("POST", gateway.v1 + "/chat/completions", json=body, timeout=HANG_GUARD) as response:
            assert response.status_code == 200
            assert going.wait(HANG_GUARD)
        # the connection is closed: the gateway must cancel the upstream stream
        job = jobs[0]
        assert job.done.wait(HANG_GUARD)
    finally:
        provider.worker.step_hook = None
    assert seen_cancel == [True]  # the cancel flag went up while the model was held at token 3
    assert job.steps <= 4  # at most one more token once cancelled, of the 400 asked for
    assert gateway.ctx.in_flight == 0
