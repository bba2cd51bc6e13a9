"""The provider contract, checked structurally (a real model cannot produce the conformance suite's scripted text)."""

from __future__ import annotations

import pytest

from zeph_providers.errors import LlmError
from zeph_providers.local.provider import LocalProvider
from zeph_providers.types import ContentChunk, EndChunk, Message, UsageChunk

PROMPT = [Message.user("Say something.")]


async def test_stream_response_equals_chat(tiny: LocalProvider) -> None:
    chat = await tiny.chat(PROMPT, max_tokens=12)
    async with tiny.chat_stream(PROMPT, max_tokens=12) as stream:
        chunks = [chunk async for chunk in stream]
    assert stream.response == chat
    assert "".join(c.text for c in chunks if isinstance(c, ContentChunk)) == chat.text


async def test_usage_once_then_end_last(tiny: LocalProvider) -> None:
    chunks = [chunk async for chunk in tiny.chat_stream(PROMPT, max_tokens=6)]
    usage = [c for c in chunks if isinstance(c, UsageChunk)]
    assert len(usage) == 1 and usage[0].usage.output_tokens == 6 and usage[0].usage.input_tokens > 0
    assert isinstance(chunks[-1], EndChunk) and isinstance(chunks[-2], UsageChunk)
    assert chunks[-1].finish_reason == "length" and chunks[-1].model == tiny.model
    assert all(c.text for c in chunks if isinstance(c, ContentChunk))  # no empty pieces


async def test_finish_length(tiny: LocalProvider) -> None:
    response = await tiny.chat(PROMPT, max_tokens=2)
    assert response.finish_reason == "length" and response.usage.output_tokens == 2


async def test_early_close_is_clean(tiny: LocalProvider) -> None:
    async with tiny.chat_stream(PROMPT, max_tokens=50) as stream:
        async for chunk in stream:
            if isinstance(chunk, ContentChunk):
                break
    assert not stream.done
    with pytest.raises(LlmError):
        _ = stream.response
    follow_up = await tiny.chat(PROMPT, max_tokens=3)  # the worker is free again
    assert follow_up.usage.output_tokens == 3


async def test_per_call_timeout_is_enforced(tiny: LocalProvider) -> None:
    tiny.worker.step_hook = lambda job: __import__("time").sleep(0.05)
    with pytest.raises(TimeoutError):
        await tiny.chat(PROMPT, max_tokens=200, timeout=0.3)


async def test_identity(tiny: LocalProvider) -> None:
    assert tiny.name == "tiny" and tiny.model.endswith("tiny-llama0")
    assert "tiny" in repr(tiny)
