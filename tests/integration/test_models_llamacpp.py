"""Model metadata and usage semantics against real llama.cpp: its server, and the in-process engine.

- `/v1/models` of a real llama.cpp server through the `compatible` provider: the one GGUF model,
  typed, with the server's own window (`meta.n_ctx`); `count_tokens` through its `/apply-template`
  and `/tokenize`, equal to a chat's `prompt_tokens`; the Claude backend's `count_tokens` through the
  server's Messages API (`/v1/messages/count_tokens`).
- Usage on the real server: a repeated prompt is served from llama.cpp's KV cache, which the
  server reports as OpenAI's `prompt_tokens_details.cached_tokens`; the compatible backend keeps it
  as `cache_read_tokens` (the server's word, as for hosted compatible APIs that bill it), so the
  split moves while `prompt_tokens` (all input) stays the server's `prompt_tokens`.
- The local llama.cpp engine: `count_tokens` through llama.cpp's own template and tokenizer equals
  the `usage.input_tokens` of a real generation, for the GGUF's template and an explicit one; its
  usage never reports a cache read (`cache_n` is a speed-up, not a billing cache).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from zeph_providers.backends.claude import ClaudeProvider
from zeph_providers.backends.openai import OpenAIProvider
from zeph_providers.config import CandleConfig, ClaudeConfig, CompatibleConfig
from zeph_providers.local.provider import LocalProvider
from zeph_providers.types import Message

pytestmark = pytest.mark.slow

PROMPT = [Message.system("You are a helpful assistant."), Message.user("Name one colour.")]


def _compat(llamacpp_server: str) -> OpenAIProvider:
    config = CompatibleConfig(name="llamacpp", model="smollm2", base_url=f"{llamacpp_server}/v1", timeout_secs=60)
    return OpenAIProvider(config)


async def test_v1_models_through_the_compatible_provider(llamacpp_server: str, smollm2_gguf: Path) -> None:
    async with _compat(llamacpp_server) as provider:
        models = await provider.list_models()
        assert provider.context_window is None  # "smollm2" is in no table
        window = await provider.fetch_context_window()  # the only model listed: the one served
    async with httpx.AsyncClient(timeout=30) as http:
        raw = (await http.get(f"{llamacpp_server}/v1/models")).json()["data"]
    assert [m.id for m in models] == [entry["id"] for entry in raw]
    (model,) = models
    assert model.id.endswith(smollm2_gguf.name) and model.provider == "llamacpp"
    assert model.owned_by == raw[0]["owned_by"] == "llamacpp"
    assert isinstance(model.created, int) and model.created > 0  # llama.cpp sends the time of the request
    assert model.context_window == raw[0]["meta"]["n_ctx"] == 4096  # the fixture's n_ctx
    assert model.details["meta"]["n_ctx_train"] == raw[0]["meta"]["n_ctx_train"]
    assert window == 4096


async def test_repeated_prompt_moves_the_split_not_the_prompt_total(llamacpp_server: str) -> None:
    async with _compat(llamacpp_server) as provider:
        first = await provider.chat(PROMPT, max_tokens=4, temperature=0, seed=1)
        second = await provider.chat(PROMPT, max_tokens=4, temperature=0, seed=1)
    async with httpx.AsyncClient(timeout=60) as http:
        answer = await http.post(
            f"{llamacpp_server}/v1/chat/completions",
            json={
                "model": "smollm2",
                "messages": [
                    {"role": "system", "content": PROMPT[0].text},
                    {"role": "user", "content": PROMPT[1].text},
                ],
                "max_tokens": 4,
                "temperature": 0,
            },
        )
    plain = answer.json()["usage"]
    assert first.usage.prompt_tokens == second.usage.prompt_tokens == plain["prompt_tokens"]
    cached = plain["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0  # the same prompt again: llama.cpp reused its KV cache and says so
    assert second.usage.cache_read_tokens > 0
    assert second.usage.input_tokens + second.usage.cache_read_tokens == plain["prompt_tokens"]
    assert second.usage.cache_write_tokens == 0


async def test_compatible_count_tokens_on_the_real_server(llamacpp_server: str) -> None:
    async with _compat(llamacpp_server) as provider:
        counted = await provider.count_tokens(PROMPT)
        reply = await provider.chat(PROMPT, max_tokens=2, temperature=0)
    assert counted == reply.usage.prompt_tokens > 0


async def test_claude_count_tokens_on_the_real_server(llamacpp_server: str) -> None:
    """llama.cpp also serves the Messages API's `/v1/messages/count_tokens`."""
    config = ClaudeConfig(
        name="llamacpp-claude",
        model="smollm2",
        base_url=llamacpp_server,
        api_key=SecretStr("sk-dummy"),
        timeout_secs=60,
    )
    async with ClaudeProvider(config) as provider:
        counted = await provider.count_tokens(PROMPT)
        reply = await provider.chat(PROMPT, max_tokens=2)
    assert counted == reply.usage.prompt_tokens > 0


def _local(gguf: Path, **overrides: Any) -> LocalProvider:
    data: dict[str, Any] = {
        "name": "gguf",
        "type": "candle",
        "model_path": str(gguf),
        "inference_timeout_secs": 60.0,
        "n_ctx": 2048,
        "generation": {"temperature": 0.0, "repeat_penalty": 1.0, "seed": 42, "max_tokens": 4},
    }
    data.update(overrides)
    return LocalProvider(CandleConfig.model_validate(data))


@pytest.mark.parametrize("template", ["auto", "chatml"])
async def test_local_llamacpp_count_tokens_equals_the_generation_usage(smollm2_gguf: Path, template: str) -> None:
    provider = _local(smollm2_gguf, chat_template=template)
    try:
        assert provider.engine_name == "llama.cpp"
        assert provider.context_window == 2048  # the configured n_ctx, before any load
        counted = await provider.count_tokens(PROMPT)
        replies = [await provider.chat(PROMPT, max_tokens=4) for _ in range(2)]
        for reply in replies:  # the second one reuses llama.cpp's KV prefix: still all input
            assert reply.usage.input_tokens == counted > 0
            assert reply.usage.cache_read_tokens == 0
        longer = await provider.count_tokens([*PROMPT, Message.assistant("Blue."), Message.user("Another?")])
        assert longer > counted
        both = await asyncio.gather(provider.count_tokens(PROMPT), provider.chat(PROMPT, max_tokens=4))
        assert both[0] == counted
        assert [m.context_window for m in await provider.list_models()] == [2048]
    finally:
        await provider.aclose()
