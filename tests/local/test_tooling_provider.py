"""LocalProvider with tools, end to end through the worker, on a fake engine that renders like the real ones.

The fake calls `tooling.prepare` and `sink.on_prepared` exactly as the engines do, then streams a
fixed reply in small pieces (what a grammar-constrained model would write), so these tests prove
the provider side: the reply is parsed into deltas and calls, `chat()` equals the stream's
response, and "tool_use" is the finish reason. The real-model tests live with the engines.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.local.conftest import tiny_config
from zeph_providers.errors import InvalidRequestError, UnsupportedCapabilityError
from zeph_providers.local.engine import GenerationParams, GenerationResult, TokenSink, run_one_by_one
from zeph_providers.local.provider import LocalProvider, constrained_decoding
from zeph_providers.local.templates import select_template
from zeph_providers.local.tooling import prepare
from zeph_providers.types import ContentChunk, Message, Role, ToolCallDeltaChunk, ToolDefinition, ToolUseChunk

WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
AUTO_REPLY = (
    "Checking.\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
)
FORCED_REPLY = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
ANSWER = "It is 21C in Paris."


class FakeEngine:
    """Renders with `prepare` (ChatML: the Hermes syntax) and streams a scripted reply 3 characters at a time."""

    max_batch_size = 1
    device = "cpu"

    def __init__(self, *, renders: bool = True) -> None:
        self.renders = renders
        self.prompts: list[str] = []

    def run(self, messages: list[Message], params: GenerationParams, sink: TokenSink) -> GenerationResult:
        reply = ANSWER
        if self.renders:
            prepared = prepare(select_template("chatml", None), messages, params)
            self.prompts.append(prepared.prompt)
            sink.on_prepared(prepared)
            if params.tools and messages[-1].role is not Role.TOOL:
                reply = FORCED_REPLY if prepared.prefill else AUTO_REPLY
        elif params.tools:
            reply = AUTO_REPLY
        for start in range(0, len(reply), 3):
            sink.on_step()
            sink.on_text(reply[start : start + 3])
        return GenerationResult(prompt_tokens=10, completion_tokens=len(reply) // 3, finish_reason="stop")

    def run_batch(self, jobs: Sequence[Any], admit: Callable[[int], list[Any]], finish: Any, **_: Any) -> None:
        run_one_by_one(self, jobs, finish)

    def close(self) -> None:
        pass


@pytest.fixture
async def fake() -> AsyncIterator[Callable[..., tuple[LocalProvider, FakeEngine]]]:
    built: list[LocalProvider] = []

    def factory(**kw: Any) -> tuple[LocalProvider, FakeEngine]:
        engine = FakeEngine(**kw)
        provider = LocalProvider(tiny_config(Path("/nonexistent/model")), load=lambda: engine)
        built.append(provider)
        return provider, engine

    yield factory
    for provider in built:
        await provider.aclose()


ASK = [Message.user("Weather in Paris and Oslo?")]
needs_grammar = pytest.mark.skipif(not constrained_decoding("transformers"), reason="llguidance is not installed")


@needs_grammar
async def test_auto_tool_calls_stream_and_chat_agree(fake: Callable[..., tuple[LocalProvider, FakeEngine]]) -> None:
    provider, _ = fake()
    stream = provider.chat_stream(ASK, tools=[WEATHER])
    chunks = [chunk async for chunk in stream]
    response = await provider.chat(ASK, tools=[WEATHER])
    assert response == stream.response
    assert response.finish_reason == "tool_use" and response.text == "Checking.\n"
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert [c.tool_call for c in chunks if isinstance(c, ToolUseChunk)] == response.tool_calls
    deltas = [c for c in chunks if isinstance(c, ToolCallDeltaChunk)]
    assert len(deltas) > 4  # the arguments arrived in pieces
    for index, call in enumerate(response.tool_calls):
        mine = [d for d in deltas if d.index == index]
        assert mine[0].name == call.name and mine[0].id == call.id
        assert json.loads("".join(d.arguments for d in mine)) == call.arguments
    assert not any("<tool_call>" in c.text for c in chunks if isinstance(c, ContentChunk))


@needs_grammar
async def test_a_full_tool_loop(fake: Callable[..., tuple[LocalProvider, FakeEngine]]) -> None:
    provider, engine = fake()
    first = await provider.chat(ASK, tools=[WEATHER], tool_choice="get_weather")
    assert first.finish_reason == "tool_use" and first.text == ""
    assert [c.arguments for c in first.tool_calls] == [{"city": "Paris"}]
    assert engine.prompts[-1].endswith("<|im_start|>assistant\n<tool_call>\n")  # forced: the prefill opens the call
    history = [*ASK, first.to_message(), Message.tool_result(first.tool_calls[0].id, "21C")]
    final = await provider.chat(history, tools=[WEATHER])  # tools stay offered; the model answers
    assert final.text == ANSWER and final.finish_reason == "stop" and not final.tool_calls
    assert "<tool_response>\n21C\n</tool_response>" in engine.prompts[-1]


@needs_grammar
async def test_forced_call_with_a_response_format_returns_the_call(
    fake: Callable[..., tuple[LocalProvider, FakeEngine]],
) -> None:
    provider, _ = fake()
    schema = {"type": "object", "properties": {"temp": {"type": "number"}}, "required": ["temp"]}
    response = await provider.chat(ASK, tools=[WEATHER], tool_choice="required", response_format=schema)
    assert response.tool_calls and response.parsed is None
    with pytest.raises(InvalidRequestError, match="response_format") as info:
        await provider.chat(ASK, tools=[WEATHER], response_format=schema)
    assert info.value.provider == "tiny"
    with pytest.raises(InvalidRequestError, match="'get_news'") as info:
        await provider.chat(ASK, tools=[WEATHER], tool_choice="get_news")
    assert info.value.provider == "tiny"


async def test_an_engine_that_does_not_render_streams_plain_content(
    fake: Callable[..., tuple[LocalProvider, FakeEngine]],
) -> None:
    provider, _ = fake(renders=False)
    if not provider.capabilities.tools:
        pytest.skip("llguidance is not installed")
    response = await provider.chat(ASK, tools=[WEATHER])
    assert response.text == AUTO_REPLY and not response.tool_calls and response.finish_reason == "stop"


def test_capabilities_follow_constrained_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    assert constrained_decoding("llama.cpp")
    real = importlib.util.find_spec
    assert constrained_decoding("transformers") == (real("llguidance") is not None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llguidance" else real(name, *a))
    assert not constrained_decoding("transformers")
    provider = LocalProvider(tiny_config(Path("/nonexistent/model")), load=FakeEngine)
    caps = provider.capabilities
    assert not caps.tools and not caps.structured_output


async def test_without_grammar_support_tools_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llguidance" else real(name, *a))
    provider = LocalProvider(tiny_config(Path("/nonexistent/model")), load=FakeEngine)
    try:
        with pytest.raises(UnsupportedCapabilityError) as info:
            await provider.chat(ASK, tools=[WEATHER])
        assert info.value.provider == "tiny"
        with pytest.raises(UnsupportedCapabilityError):
            await provider.chat(ASK, response_format={"type": "object"})
    finally:
        await provider.aclose()
