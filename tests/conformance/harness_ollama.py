"""The Ollama backend served through the conformance scenarios, over real loopback sockets.

Each `provider()` starts a `tests.fakes.ollama_server.OllamaServer` (a real HTTP server on
127.0.0.1 speaking Ollama's documented `/api/chat` NDJSON, `/api/show`, `/api/embed`) and scripts
it with the scenarios in Ollama's own shapes: content deltas, complete tool calls without ids,
`{"error": ...}` bodies with their status and `Retry-After` header, a connection dropped mid-stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.conformance.scenarios import BrokenStream, ErrorReply, Scenario, Served, TextReply, ToolReply
from tests.fakes import ollama_server as wire
from zeph_providers.backends.ollama import OllamaProvider
from zeph_providers.config import OllamaConfig
from zeph_providers.protocol import LlmProvider
from zeph_providers.retry import RetryPolicy

MODEL = "qwen3:8b"

_DONE_REASON = {"stop": "stop", "length": "length", "tool_use": "stop", "content_filter": "stop", "error": "stop"}


def to_wire(scenario: Scenario) -> wire.Reply:
    """A neutral scenario -> the test server's scripted reply in Ollama's shapes."""
    if isinstance(scenario, TextReply):
        return wire.ChatReply(
            content=scenario.chunks,
            thinking=(scenario.thinking,) if scenario.thinking else (),
            done_reason=_DONE_REASON[scenario.finish],
            prompt_eval_count=scenario.input_tokens,
            eval_count=scenario.output_tokens,
        )
    if isinstance(scenario, ToolReply):
        # Ollama sends each tool call complete (arguments as a JSON object), one call per chunk.
        return wire.ChatReply(
            content=(scenario.text_before,) if scenario.text_before else (),
            tool_calls=[[{"function": {"name": c.name, "arguments": c.arguments}}] for c in scenario.calls],
            prompt_eval_count=scenario.input_tokens,
            eval_count=scenario.output_tokens,
        )
    if isinstance(scenario, ErrorReply):
        headers = {"Retry-After": f"{scenario.retry_after:g}"} if scenario.retry_after is not None else {}
        return wire.ErrorReply(scenario.status, scenario.message, headers)
    if isinstance(scenario, BrokenStream):
        return wire.BrokenReply(content=scenario.chunks)
    raise TypeError(scenario)


class OllamaHarness:
    name = "ollama"
    supports_tools = True
    supports_scripted_errors = True
    supports_retries = True

    @asynccontextmanager
    async def provider(
        self, scenarios: list[Scenario], *, max_retries: int = 0
    ) -> AsyncIterator[tuple[LlmProvider, Served]]:
        served = Served()
        with wire.OllamaServer() as server:
            server.script_chat(*(to_wire(s) for s in scenarios))
            config = OllamaConfig(
                name="ollama-conf", model=MODEL, base_url=server.url, max_retries=max_retries, timeout_secs=20
            )
            provider = OllamaProvider(config)
            provider.retry_policy = RetryPolicy(max_retries=max_retries, base_delay=0.01, max_delay=0.05)
            try:
                yield provider, served
            finally:
                served.requests.extend(server.chat_requests)
                await provider.aclose()


HARNESS = OllamaHarness()
