"""Errors that tell the truth (issue 16, item 4): a structured reply cut at max_tokens says so and
carries the raw text and finish reason; `stream.response` after a failed stream says it failed."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from zeph_providers import (
    BadResponseError,
    LlmError,
    Message,
    ProviderUnavailableError,
    StructuredOutputError,
)
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.options import Capabilities

USER = [Message.user("q")]
STRUCTURED = Capabilities(streaming=True, structured_output=True)


class City(BaseModel):
    city: str


async def test_a_cut_structured_reply_carries_its_text_and_finish_reason() -> None:
    mock = MockProvider(replies=[MockReply(text='{"city": "Par', finish_reason="length")], capabilities=STRUCTURED)
    with pytest.raises(BadResponseError) as info:
        await mock.chat(USER, response_format=City, structured_retries=0)
    error = info.value
    assert isinstance(error, StructuredOutputError)
    assert error.raw_text == '{"city": "Par'
    assert error.finish_reason == "length" and error.cut
    assert "cut at max_tokens" in str(error) and "raise max_tokens" in str(error)


async def test_a_complete_but_invalid_reply_does_not_claim_a_cut() -> None:
    mock = MockProvider(replies=[MockReply(text='{"town": "Paris"}', finish_reason="stop")], capabilities=STRUCTURED)
    with pytest.raises(StructuredOutputError) as info:
        await mock.chat(USER, response_format=City, structured_retries=0)
    assert info.value.finish_reason == "stop" and not info.value.cut
    assert info.value.raw_text == '{"town": "Paris"}'
    assert "max_tokens" not in str(info.value)
    assert "does not match" in str(info.value)


async def test_after_the_repair_loop_the_last_cut_is_still_reported() -> None:
    replies = [
        MockReply(text='{"town": 1}', finish_reason="stop"),
        MockReply(text='{"city": "Lo', finish_reason="length"),
    ]
    mock = MockProvider(replies=replies, capabilities=STRUCTURED)
    with pytest.raises(StructuredOutputError) as info:
        await mock.chat(USER, response_format=City, structured_retries=1)
    error = info.value
    assert "after 2 tries" in str(error) and "cut at max_tokens" in str(error)
    assert error.raw_text == '{"city": "Lo' and error.finish_reason == "length"


async def test_a_streamed_structured_reply_cut_at_max_tokens_says_so() -> None:
    mock = MockProvider(replies=[MockReply(text='{"city": "Ro', finish_reason="length")], capabilities=STRUCTURED)
    stream = mock.chat_stream(USER, response_format=City)
    with pytest.raises(StructuredOutputError) as info:
        async for _ in stream:
            pass
    assert info.value.cut and info.value.raw_text == '{"city": "Ro'
    with pytest.raises(LlmError, match="the stream failed") as after:
        _ = stream.response
    assert after.value.__cause__ is info.value


async def test_response_after_a_stream_that_failed_midway_says_it_failed() -> None:
    boom = ProviderUnavailableError("connection reset", provider="mock")
    mock = MockProvider(replies=[MockReply(text="one two three four", error=boom, error_after_chunks=2)], chunk_size=4)
    seen: list[str] = []
    stream = mock.chat_stream(USER)
    with pytest.raises(ProviderUnavailableError):
        async for chunk in stream:
            seen.append(getattr(chunk, "text", ""))
    assert seen  # it did fail mid-way, after some chunks
    with pytest.raises(LlmError) as info:
        _ = stream.response
    message = str(info.value)
    assert "failed" in message and "ProviderUnavailableError" in message and "connection reset" in message
    assert "not finished" not in message
    assert info.value.__cause__ is boom
    assert not stream.done


async def test_response_before_the_end_and_after_closing_early_say_which() -> None:
    mock = MockProvider(replies=["one two three four"], chunk_size=4)
    stream = mock.chat_stream(USER)
    with pytest.raises(LlmError, match="not finished yet"):
        _ = stream.response
    await anext(stream)
    await stream.aclose()
    with pytest.raises(LlmError, match="closed before it finished"):
        _ = stream.response


def test_the_blocking_stream_reports_the_failure_too() -> None:
    from zeph_providers.blocking import BlockingRegistry

    boom = ProviderUnavailableError("connection reset", provider="mock")
    mock = MockProvider(replies=[MockReply(text="one two three four", error=boom, error_after_chunks=1)])
    with BlockingRegistry.from_dict({"llm": {"providers": []}}) as registry:
        from zeph_providers.blocking import BlockingProvider

        provider = BlockingProvider(mock, registry._loop, owner=registry)
        stream = provider.chat_stream(USER)
        with pytest.raises(ProviderUnavailableError):
            for _ in stream:
                pass
        with pytest.raises(LlmError, match="the stream failed"):
            _ = stream.response
