"""The per-call deadline of a stream: one timer per stream that only ever interrupts the stream itself."""

from __future__ import annotations

import asyncio

import pytest

from zeph_providers import ContentChunk, Message, ProviderTimeoutError
from zeph_providers.backends.mock import MockProvider, MockReply

HANG_GUARD = 30.0


async def test_a_stalled_stream_times_out_with_a_typed_error() -> None:
    mock = MockProvider(replies=[MockReply(text="slow words here", delay_secs=5.0)], chunk_size=2)
    with pytest.raises(ProviderTimeoutError) as info:
        await asyncio.wait_for(mock.chat([Message.user("hi")], timeout=0.2), HANG_GUARD)
    assert info.value.provider == "mock"


async def test_deadline_passing_between_chunks_ends_the_stream_at_the_next_read() -> None:
    mock = MockProvider(replies=[MockReply(text="abcdefgh")], chunk_size=2)
    stream = mock.chat_stream([Message.user("hi")], timeout=0.2)
    first = await anext(stream)
    assert isinstance(first, ContentChunk)
    await asyncio.sleep(0.3)  # the caller is busy; the deadline passes meanwhile
    with pytest.raises(ProviderTimeoutError):
        await anext(stream)


async def test_a_finished_stream_never_cancels_its_caller_later() -> None:
    mock = MockProvider(replies=["quick"], chunk_size=2)
    resp = await mock.chat([Message.user("hi")], timeout=0.1)
    assert resp.text == "quick"
    await asyncio.sleep(0.25)  # past the deadline: the timer was cancelled, nothing fires


async def test_the_callers_own_cancellation_stays_a_cancellation() -> None:
    mock = MockProvider(replies=[MockReply(text="slow words", delay_secs=5.0)], chunk_size=2)
    task = asyncio.create_task(mock.chat([Message.user("hi")], timeout=10))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
