"""Shared pieces for the router tests: a fake clock, routers over mock members, tracking mocks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.backends.router import RouterProvider
from zeph_providers.options import Capabilities, ChatOptions
from zeph_providers.types import Message, StreamChunk


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def mock(
    name: str,
    *replies: MockReply | str,
    capabilities: Capabilities | None = None,
    max_concurrent: int | None = None,
) -> MockProvider:
    """A scripted member whose default reply names it."""
    return MockProvider(
        name,
        f"{name}-model",
        replies=list(replies) or [f"from {name}"],
        capabilities=capabilities,
        max_concurrent=max_concurrent,
    )


def router(members: Sequence[MockProvider], **options: Any) -> RouterProvider:
    """A router over already-built members (no registry), resolving them by name."""
    by_name = {member.name: member for member in members}
    return RouterProvider("router", list(by_name), by_name.__getitem__, **options)


class Gauge:
    """Counts requests in flight and the most ever seen at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0

    def enter(self) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1


class PeakMock(MockProvider):
    """A member that records its requests in flight in a (possibly shared) gauge."""

    def __init__(
        self, name: str, *, delay: float = 0.01, max_concurrent: int | None = None, gauge: Gauge | None = None
    ) -> None:
        super().__init__(name, replies=[f"from {name}"], max_concurrent=max_concurrent)
        self.delay = delay
        self.gauge = gauge or Gauge()

    async def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        self.gauge.enter()
        try:
            await asyncio.sleep(self.delay)
            async for chunk in super()._stream(messages, options):
                yield chunk
        finally:
            self.gauge.leave()


USER = [Message.user("hello")]
