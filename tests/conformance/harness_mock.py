"""The mock backend served through the conformance scenarios."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.conformance.scenarios import BrokenStream, ErrorReply, Scenario, Served, TextReply, ToolReply
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.errors import ProviderUnavailableError, error_from_status
from zeph_providers.protocol import LlmProvider
from zeph_providers.types import ToolCall, Usage


class MockHarness:
    name = "mock"
    supports_tools = True
    supports_scripted_errors = True
    supports_retries = False  # the mock has no transport to retry

    @asynccontextmanager
    async def provider(
        self, scenarios: list[Scenario], *, max_retries: int = 0
    ) -> AsyncIterator[tuple[LlmProvider, Served]]:
        replies = [self._reply(s) for s in scenarios]
        mock = MockProvider("mock-conf", replies=replies, chunk_size=3)
        served = Served()
        yield mock, served
        served.requests.extend({"messages": r.messages} for r in mock.requests)
        await mock.aclose()

    def _reply(self, scenario: Scenario) -> MockReply:
        if isinstance(scenario, TextReply):
            return MockReply(
                text=scenario.text,
                thinking=scenario.thinking,
                usage=Usage(input_tokens=scenario.input_tokens, output_tokens=scenario.output_tokens),
                finish_reason=scenario.finish,
            )
        if isinstance(scenario, ToolReply):
            return MockReply(
                text=scenario.text_before,
                tool_calls=[ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in scenario.calls],
                usage=Usage(input_tokens=scenario.input_tokens, output_tokens=scenario.output_tokens),
            )
        if isinstance(scenario, ErrorReply):
            headers = {"retry-after": str(scenario.retry_after)} if scenario.retry_after is not None else {}
            return MockReply(
                error=error_from_status(scenario.status, scenario.message, provider="mock-conf", headers=headers)
            )
        if isinstance(scenario, BrokenStream):
            return MockReply(
                text="".join(scenario.chunks),
                error=ProviderUnavailableError("the connection broke", provider="mock-conf"),
                error_after_chunks=1,
            )
        raise TypeError(scenario)


HARNESS = MockHarness()
