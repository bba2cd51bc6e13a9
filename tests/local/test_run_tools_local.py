"""`run_tools` on the real SmolLM2 (slow tier): a Python function becomes a tool the local model
calls (forced on the first turn, decoded under the grammar of the function's schema), the
function runs with validated arguments, its result goes back through the chat template, and the
loop ends within `max_turns`. A 135M model answers with shapes, not facts: no wording is checked.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import Field

from tests.local.test_llamacpp_engine import gguf_config
from zeph_providers import Message, Registry, Role
from zeph_providers.local.provider import LocalProvider
from zeph_providers.tools import ToolLoopError, ToolRun, run_tools

pytestmark = pytest.mark.slow

NEVER_HANG = 300.0


async def test_run_tools_on_smollm2_with_a_forced_first_call(smollm2_gguf: Path) -> None:
    calls: list[tuple[str, int, str]] = []

    def get_weather(
        city: Annotated[str, Field(max_length=32)],
        days: Annotated[int, Field(ge=1, le=7)],
        unit: Literal["celsius", "fahrenheit"] = "celsius",
    ) -> dict[str, object]:
        """The weather forecast for a city.

        Args:
            city: The city's name.
            days: How many days to forecast.
            unit: The temperature unit.
        """
        calls.append((city, days, unit))
        return {"city": city, "forecast": ["sunny"] * days, "unit": unit}

    provider = LocalProvider(gguf_config(smollm2_gguf, name="tools-loop"))
    registry = Registry.from_dict({"llm": {"providers": []}}, providers=[provider])  # a Python-built provider
    async with registry:
        ask = [{"role": "user", "content": "What will the weather be in Paris for the next three days?"}]
        try:
            async with asyncio.timeout(NEVER_HANG):
                run: ToolRun = await run_tools(
                    registry.get("tools-loop"),
                    ask,
                    tools=[get_weather],
                    tool_choice="get_weather",
                    max_turns=3,
                    temperature=0.0,
                    max_tokens=96,
                )
            ended_with_text = True
        except ToolLoopError as exc:  # "auto" after the first turn: the model may keep calling
            run, ended_with_text = exc.run, False
    # The forced first call was schema-valid, so the function ran with typed, in-range arguments.
    assert calls, "the tool never ran"
    city, days, unit = calls[0]
    assert isinstance(city, str) and len(city) <= 32 and 1 <= days <= 7 and unit in ("celsius", "fahrenheit")
    first_call, first_result = run.calls[0]
    assert first_call.name == "get_weather" and not first_result.tool_results[0].is_error
    assert f'"city": "{city}"' in first_result.tool_results[0].content
    # History: the question, then per turn one assistant message with its calls and their results.
    assert run.messages[0] == Message.user("What will the weather be in Paris for the next three days?")
    assert run.messages[1].role is Role.ASSISTANT and run.messages[1].tool_calls == [first_call]
    assert run.messages[2].role is Role.TOOL
    assert 2 <= run.turns <= 3  # it stopped: the model answered or max_turns ended the loop
    if ended_with_text:
        assert not run.response.tool_calls and run.messages[-1].role is Role.ASSISTANT
    else:
        assert run.turns == 3 and run.response.tool_calls
