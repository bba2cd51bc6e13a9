"""The tool and structured-output contract for harnesses whose model answers for itself.

A real local model cannot be scripted (`scripts_replies = False`), so the scripted tool scenarios
of test_conformance.py skip it. These run the same contract on what any model under constrained
decoding must give, whatever it says: a forced call whose arguments validate against the tool's
schema, streamed deltas that build each call, a reply that parses into the `response_format`
class, and stream/chat parity for the same greedy request (the local harness: the tiny random
model on the transformers engine).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import pytest
from pydantic import BaseModel, ConfigDict, Field

from tests.conformance.scenarios import Harness, check_tool_deltas
from zeph_providers import Message, ToolDefinition


class Unit(StrEnum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


class WeatherArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    city: str = Field(max_length=12)
    unit: Unit


class Reading(BaseModel):
    station: str = Field(max_length=12)
    values: list[Annotated[int, Field(ge=0, le=999)]] = Field(max_length=3)
    unit: Unit


WEATHER = ToolDefinition(
    name="get_weather", description="Weather for a city.", parameters=WeatherArgs.model_json_schema()
)
ASK = [Message.user("Weather in Paris?")]
GREEDY = {"temperature": 0.0, "max_tokens": 200}


def _unscripted(harness: Harness) -> None:
    if getattr(harness, "scripts_replies", True):
        pytest.skip(f"{harness.name} serves scripted replies: test_conformance.py covers it")


async def test_forced_tool_call_is_schema_valid_and_streams_its_deltas(harness: Harness) -> None:
    _unscripted(harness)
    async with harness.provider([]) as (provider, _):
        resp = await provider.chat(ASK, tools=[WEATHER], tool_choice="required", **GREEDY)
        async with provider.chat_stream(ASK, tools=[WEATHER], tool_choice="get_weather", **GREEDY) as stream:
            chunks = [chunk async for chunk in stream]
    assert resp.finish_reason == "tool_use" and len(resp.tool_calls) >= 1
    for call in resp.tool_calls:
        assert call.name == "get_weather" and call.id
        WeatherArgs.model_validate(call.arguments)
    assert check_tool_deltas(chunks) == stream.response.tool_calls
    assert stream.response == resp  # the same greedy request, streamed and not


async def test_structured_output_parses_and_matches_the_stream(harness: Harness) -> None:
    _unscripted(harness)
    async with harness.provider([]) as (provider, _):
        resp = await provider.chat(ASK, response_format=Reading, **GREEDY)
        async with provider.chat_stream(ASK, response_format=Reading, **GREEDY) as stream:
            text = "".join([chunk.text async for chunk in stream if chunk.type == "content"])
    assert isinstance(resp.parsed, Reading)
    assert text == resp.text and Reading.model_validate_json(text) == resp.parsed  # the JSON as it streamed
    assert stream.response == resp


async def test_a_tool_loop_then_a_plain_answer(harness: Harness) -> None:
    _unscripted(harness)
    async with harness.provider([]) as (provider, _):
        first = await provider.chat(ASK, tools=[WEATHER], tool_choice="required", **GREEDY)
        history = [*ASK, first.to_message(), Message.tool_result(first.tool_calls[0].id, {"temp_c": 18})]
        second = await provider.chat(history, tools=[WEATHER], tool_choice="none", max_tokens=8)
    assert second.tool_calls == [] and second.finish_reason in ("stop", "length")
