"""The Claude backend against a real server: llama.cpp's Anthropic Messages API (/v1/messages).

The official `anthropic` SDK talks to an in-process llama.cpp server (the `llamacpp_server`
fixture) that serves SmolLM2-135M. A tiny model answers with shapes, not facts: these tests assert
on streaming, usage and finish reasons, never on wording. A last test talks to the real Anthropic
API, only when ANTHROPIC_API_KEY and ZEPH_LIVE_TESTS=1 are both set.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from zeph_providers import ContentChunk, Message, UsageChunk
from zeph_providers.backends.claude import ClaudeProvider
from zeph_providers.config import ClaudeConfig

pytestmark = pytest.mark.slow

DUMMY_KEY = "sk-ant-dummy-key-for-llamacpp"
PROMPT = [Message.system("You are a helpful assistant."), Message.user("Write one sentence about the sea.")]


@pytest.fixture
async def claude(llamacpp_server: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ClaudeProvider]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", DUMMY_KEY)
    config = ClaudeConfig(name="llamacpp-claude", model="smollm2", base_url=llamacpp_server, timeout_secs=60)
    provider = ClaudeProvider(config)
    try:
        yield provider
    finally:
        await provider.aclose()


async def test_chat_returns_text_usage_and_finish(claude: ClaudeProvider) -> None:
    resp = await claude.chat(PROMPT, max_tokens=24, temperature=0)
    assert resp.text.strip()
    assert resp.usage.input_tokens > 0
    assert 0 < resp.usage.output_tokens <= 24
    assert resp.finish_reason in ("stop", "length")
    assert resp.provider == "llamacpp-claude"
    assert resp.tool_calls == []


async def test_stream_arrives_in_many_chunks_and_equals_its_response(claude: ClaudeProvider) -> None:
    async with claude.chat_stream(PROMPT, max_tokens=24, temperature=0) as stream:
        chunks = [chunk async for chunk in stream]
    texts = [c.text for c in chunks if isinstance(c, ContentChunk)]
    assert len(texts) >= 5, "text must reach the caller piece by piece"
    assert "".join(texts) == stream.response.text
    assert len([c for c in chunks if isinstance(c, UsageChunk)]) == 1


async def test_usage_matches_a_non_streamed_call(claude: ClaudeProvider, llamacpp_server: str) -> None:
    """Our streamed usage must agree with the server's non-streamed accounting (SDK and our chat())."""
    ours = await claude.chat_stream(PROMPT, max_tokens=16, temperature=0, top_k=1).collect()
    sdk = anthropic.AsyncAnthropic(api_key=DUMMY_KEY, base_url=llamacpp_server, max_retries=0)
    try:
        plain = await sdk.messages.create(
            model="smollm2",
            max_tokens=16,
            system="You are a helpful assistant.",
            messages=[{"role": "user", "content": "Write one sentence about the sea."}],
            extra_body={"temperature": 0, "top_k": 1},
        )
    finally:
        await sdk.close()

    # llama.cpp reuses the cached prompt of the previous call and counts that part as cache reads:
    # the prompt's total (input + cache reads) is what every call must agree on.
    def prompt(usage: Any) -> int:
        cached = getattr(usage, "cache_read_tokens", None)
        if cached is None:
            cached = usage.cache_read_input_tokens or 0
        return int(usage.input_tokens) + int(cached)

    assert prompt(ours.usage) == prompt(plain.usage)
    assert ours.usage.output_tokens == plain.usage.output_tokens
    again = await claude.chat(PROMPT, max_tokens=16, temperature=0, top_k=1)
    assert prompt(again.usage) == prompt(ours.usage)
    assert again.usage.output_tokens == ours.usage.output_tokens


async def test_small_max_tokens_finishes_with_length(claude: ClaudeProvider) -> None:
    resp = await claude.chat([Message.user("Count from one to one hundred in words.")], max_tokens=4, temperature=0)
    assert resp.finish_reason == "length"
    assert 0 < resp.usage.output_tokens <= 4


@pytest.mark.live
@pytest.mark.skipif(
    not (os.environ.get("ANTHROPIC_API_KEY") and os.environ.get("ZEPH_LIVE_TESTS") == "1"),
    reason="live: set ANTHROPIC_API_KEY and ZEPH_LIVE_TESTS=1",
)
async def test_live_anthropic_api() -> None:
    model = os.environ.get("ZEPH_CLAUDE_MODEL", "claude-haiku-4-5")
    provider = ClaudeProvider(ClaudeConfig(name="claude-live", model=model, timeout_secs=60))
    try:
        async with provider.chat_stream([Message.user("Say hello in five words.")], max_tokens=32) as stream:
            texts = [c.text async for c in stream if isinstance(c, ContentChunk)]
        resp = stream.response
    finally:
        await provider.aclose()
    assert "".join(texts) == resp.text and resp.text
    assert resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0
    assert resp.finish_reason in ("stop", "length")
