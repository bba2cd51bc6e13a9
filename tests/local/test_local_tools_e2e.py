"""Tools on the local backend, end to end on the real SmolLM2 (slow tier): the swap promise.

The same calls an app makes to Claude or OpenAI — `tools=`, `tool_choice=`, a tool loop with
`Message.tool_result` — run unchanged on the local backend. SmolLM2-135M's template has no tool
support, so the Hermes syntax is used (tools in the system prompt, `<tool_call>` blocks), and a
forced call is decoded under the grammar of the tool's JSON schema. A 135M model answers with
shapes, not facts: these tests assert on the contract (schema-valid arguments, the loop's shape,
deltas, stream/chat parity), never on wording.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from tests.conformance.scenarios import check_tool_deltas
from tests.local.test_llamacpp_engine import gguf_config
from zeph_providers import Message, Registry, ToolDefinition
from zeph_providers.local.provider import LocalProvider
from zeph_providers.types import StreamChunk

pytestmark = pytest.mark.slow


class WeatherArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    city: str = Field(max_length=32)
    unit: Literal["celsius", "fahrenheit"]
    days: int = Field(ge=1, le=7)


class TimeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zone: str = Field(max_length=32)


WEATHER = ToolDefinition(
    name="get_weather", description="The weather forecast for a city.", parameters=WeatherArgs.model_json_schema()
)
TIME = ToolDefinition(
    name="get_time", description="The current time in a time zone.", parameters=TimeArgs.model_json_schema()
)
ARGS = {"get_weather": WeatherArgs, "get_time": TimeArgs}
ASK = [Message.user("What will the weather be in Paris for the next three days?")]


def _provider(engine: str, request: pytest.FixtureRequest) -> LocalProvider:
    if engine == "llama.cpp":
        return LocalProvider(gguf_config(request.getfixturevalue("smollm2_gguf"), name="tools-llama"))
    request.getfixturevalue("smollm2_cache")  # the GGUF converted once per session for transformers
    config = Registry.from_default().config.provider("local")
    return LocalProvider(config.model_copy(update={"engine": "transformers", "name": "tools-transformers"}))  # type: ignore[arg-type]


@pytest.fixture(params=["llama.cpp", "transformers"])
async def local(request: pytest.FixtureRequest) -> AsyncIterator[LocalProvider]:
    provider = _provider(request.param, request)
    assert provider.engine_name == request.param
    assert provider.capabilities.tools and provider.capabilities.structured_output
    yield provider
    await provider.aclose()


async def _stream(provider: LocalProvider, messages: list[Message], **kwargs: Any) -> tuple[list[StreamChunk], Any]:
    chunks: list[StreamChunk] = []
    async with provider.chat_stream(messages, **kwargs) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    return chunks, stream.response


async def test_forced_calls_are_schema_valid_for_every_seed(local: LocalProvider) -> None:
    for seed in range(5):
        for choice, allowed in (("required", {"get_weather", "get_time"}), ("get_weather", {"get_weather"})):
            resp = await local.chat(
                ASK, tools=[WEATHER, TIME], tool_choice=choice, temperature=0.8, seed=seed, max_tokens=120
            )
            assert resp.finish_reason == "tool_use", (seed, choice, resp.text)
            assert resp.tool_calls and resp.text == ""
            for call in resp.tool_calls:
                assert call.name in allowed
                ARGS[call.name].model_validate(call.arguments)  # valid against the tool's own schema
                assert call.id


async def test_streamed_deltas_build_the_call_and_match_chat(local: LocalProvider) -> None:
    kwargs: dict[str, Any] = {"tools": [WEATHER], "tool_choice": "required", "temperature": 0.0, "max_tokens": 120}
    chunks, streamed = await _stream(local, ASK, **kwargs)
    (call,) = check_tool_deltas(chunks)
    assert call == streamed.tool_calls[0]
    chatted = await local.chat(ASK, **kwargs)
    # Two generations, so only what greedy decoding fixes is compared (a cached prompt may shift
    # logits by rounding); one stream's chunks and its response are equal by construction.
    assert (chatted.tool_calls, chatted.finish_reason, chatted.text) == (
        streamed.tool_calls,
        streamed.finish_reason,
        streamed.text,
    )


async def test_a_full_tool_loop_completes(local: LocalProvider) -> None:
    messages = list(ASK)
    first = await local.chat(messages, tools=[WEATHER], tool_choice="get_weather", temperature=0.0, max_tokens=120)
    (call,) = first.tool_calls
    WeatherArgs.model_validate(call.arguments)
    messages.append(first.to_message())
    forecast = {"city": call.arguments["city"], "forecast": ["sunny", "cloudy", "rain"], "high_c": [21, 19, 16]}
    messages.append(Message.tool_result(call.id, forecast))
    # The tool's result goes back through the template; with tools still offered the model may call
    # again ("auto") or answer; "none" must answer in text.
    final = await local.chat(messages, tools=[WEATHER], tool_choice="none", temperature=0.0, max_tokens=48)
    assert final.tool_calls == [] and final.text.strip()
    assert final.finish_reason in ("stop", "length")
    again = await local.chat(messages, tools=[WEATHER], tool_choice="auto", temperature=0.0, max_tokens=48)
    for extra in again.tool_calls:  # auto: whatever the model chose, a call it made is well formed
        WeatherArgs.model_validate(extra.arguments)


async def test_auto_lets_the_model_choose_and_parses_either_way(local: LocalProvider) -> None:
    for seed in range(3):
        chunks, resp = await _stream(
            local, ASK, tools=[WEATHER, TIME], tool_choice="auto", temperature=0.8, seed=seed, max_tokens=96
        )
        calls = check_tool_deltas(chunks)
        assert calls == resp.tool_calls
        assert "<tool_call>" not in resp.text  # markup is never passed off as content
        for call in calls:
            ARGS[call.name].model_validate(call.arguments)
        assert resp.finish_reason == ("tool_use" if calls else resp.finish_reason)


async def test_structured_output_and_forced_tool_history_serialise(local: LocalProvider) -> None:
    resp = await local.chat(ASK, tools=[TIME], tool_choice="required", temperature=0.0, max_tokens=64)
    message = resp.to_message()
    assert Message.model_validate_json(message.model_dump_json()) == message
    assert json.loads(json.dumps(resp.tool_calls[0].arguments)) == resp.tool_calls[0].arguments
