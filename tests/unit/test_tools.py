"""Tools from Python functions and the tool loop (issue 16 item 3), on the mock backend.

`ToolDefinition.from_function` (schemas from type hints, docstrings in three styles, clear
refusals) and `run_tools` (concurrent calls, sync tools in threads, errors sent back, one
assistant message per turn, `tool_choice` on the first call only, `max_turns`).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import threading
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from zeph_providers import (
    BlockingRegistry,
    InvalidRequestError,
    Message,
    MockProvider,
    MockReply,
    Registry,
    Role,
    ToolCall,
    ToolDefinition,
)
from zeph_providers.tools import Tool, ToolLoopError, ToolRun, parse_docstring, run_tools

NEVER_HANG = 120.0


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


class Place(BaseModel):
    city: str
    country: str | None = None


def forecast(
    place: Place,
    days: Annotated[int, Field(ge=1, le=7)] = 3,
    unit: Unit = Unit.C,
    mode: Literal["brief", "full"] = "brief",
    tags: list[str] | None = None,
    extra: dict[str, float] | None = None,
) -> str:
    """The weather forecast for a place.

    A second paragraph that is not part of the description.

    Args:
        place: Where to look.
        days (int): How many days,
            from 1 to 7.
        unit: The temperature unit.

    Returns:
        The forecast.
    """
    return f"{place.city} {days} {unit.value} {mode} {tags} {extra}"


# ----- from_function ------------------------------------------------------------------------------


def test_schema_from_type_hints_and_google_docstring() -> None:
    tool = ToolDefinition.from_function(forecast)
    assert isinstance(tool, Tool) and isinstance(tool, ToolDefinition)
    assert tool.name == "forecast"
    assert tool.description == "The weather forecast for a place."
    assert tool.strict is None
    schema = tool.parameters
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["place"]
    props = schema["properties"]
    assert list(props) == ["place", "days", "unit", "mode", "tags", "extra"]
    assert props["place"]["description"] == "Where to look."
    assert props["days"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 7,
        "default": 3,
        "description": "How many days, from 1 to 7.",
    }
    assert props["mode"]["enum"] == ["brief", "full"]
    assert props["tags"]["anyOf"] == [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]
    assert props["place"] == {"$ref": "#/$defs/Place", "description": "Where to look."}
    assert schema["$defs"]["Place"]["required"] == ["city"]
    assert schema["$defs"]["Unit"]["enum"] == ["celsius", "fahrenheit"]
    assert all("title" not in prop for prop in props.values())  # pydantic's titles left out


def test_overrides_and_the_definition_is_an_ordinary_one() -> None:
    tool = ToolDefinition.from_function(forecast, name="fc", description="Custom.", strict=True)
    assert (tool.name, tool.description, tool.strict) == ("fc", "Custom.", True)
    plain = ToolDefinition(**tool.model_dump())
    assert plain.parameters == tool.parameters  # serialises to exactly a hand-written definition


def test_numpy_and_sphinx_docstrings() -> None:
    numpy_doc = (
        "Add numbers.\n\nParameters\n----------\na : int\n    The first.\nb : int\n    The second\n    number.\n"
    )
    assert parse_docstring(numpy_doc) == ("Add numbers.", {"a": "The first.", "b": "The second number."})
    sphinx_doc = "Add numbers.\n\n:param a: The first.\n:param int b: The second.\n:returns: the sum\n"
    assert parse_docstring(sphinx_doc) == ("Add numbers.", {"a": "The first.", "b": "The second."})
    assert parse_docstring("") == ("", {})


@pytest.mark.parametrize(
    ("fn", "kwargs", "words"),
    [
        (lambda *args: None, {"name": "f"}, "*args cannot be described"),
        (lambda **kw: None, {"name": "f"}, "**kw cannot be described"),
        (lambda x: x, {"name": "f"}, "parameter 'x' has no type hint"),
        (lambda: None, {}, "tool name '<lambda>' is not valid"),
        (forecast, {"name": "has space"}, "is not valid"),
        (42, {}, "a tool must be a function"),
    ],
)
def test_refusals_are_typed_and_clear(fn: Any, kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        ToolDefinition.from_function(fn, **kwargs)
    assert words in str(caught.value)


async def test_tool_call_validates_and_handles_positional_only_and_partials() -> None:
    def power(base: float, /, exponent: int = 2) -> float:
        return base**exponent

    tool = ToolDefinition.from_function(power)
    assert await tool.call({"base": 3, "exponent": "3"}) == 27  # lax: "3" is an int
    with pytest.raises(ValidationError):
        await tool.call({"base": "x"})
    with pytest.raises(ValidationError):
        await tool.call({"base": 1, "other": 2})  # unknown arguments refused
    partial = ToolDefinition.from_function(functools.partial(power, exponent=3), name="cube")
    assert await partial.call({"base": 2}) == 8


# ----- run_tools --------------------------------------------------------------------------------


def _calls(*calls: tuple[str, str, dict[str, Any]]) -> MockReply:
    return MockReply(tool_calls=[ToolCall(id=i, name=n, arguments=a) for i, n, a in calls])


async def test_parallel_calls_run_concurrently_and_history_has_one_assistant_message() -> None:
    both_started = asyncio.Event()
    started: list[str] = []

    async def lookup(key: str) -> str:
        """Look a key up."""
        started.append(key)
        if len(started) == 2:
            both_started.set()
        await both_started.wait()  # would wait forever if the calls ran one after the other
        return f"value of {key}"

    mock = MockProvider(replies=[_calls(("c1", "lookup", {"key": "a"}), ("c2", "lookup", {"key": "b"})), "done"])
    async with asyncio.timeout(NEVER_HANG):
        run = await run_tools(mock, "look up a and b", tools=[lookup])
    assert isinstance(run, ToolRun) and run.text == "done" and run.turns == 2
    roles = [m.role for m in run.messages]
    assert roles == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.TOOL, Role.ASSISTANT]
    assert [c.id for c in run.messages[1].tool_calls] == ["c1", "c2"]  # one message, both calls
    assert [m.tool_results[0].content for m in run.messages[2:4]] == ["value of a", "value of b"]
    assert mock.requests[1].messages == run.messages[:4]  # the model saw the calls and results
    assert [t.name for t in mock.requests[0].options.tools] == ["lookup"]


async def test_sync_tools_run_in_a_thread_and_values_become_json() -> None:
    threads: list[int] = []

    def where(city: str) -> dict[str, Any]:
        threads.append(threading.get_ident())
        return {"city": city, "place": Place(city=city)}

    mock = MockProvider(replies=[_calls(("c1", "where", {"city": "Paris"})), "ok"])
    run = await run_tools(mock, [{"role": "user", "content": "where?"}], tools=[where])
    assert threads and threads[0] != threading.get_ident()  # not on the event loop's thread
    assert run.calls[0][1].tool_results[0].content == '{"city": "Paris", "place": {"city": "Paris", "country": null}}'


async def test_tool_errors_invalid_arguments_and_unknown_tools_go_back_as_error_results() -> None:
    def boom(n: int) -> int:
        raise RuntimeError(f"broken {n}")

    mock = MockProvider(
        replies=[
            _calls(("c1", "boom", {"n": 1}), ("c2", "boom", {"n": "not a number"}), ("c3", "nope", {})),
            "recovered",
        ]
    )
    run = await run_tools(mock, "go", tools=[boom])
    results = [m.tool_results[0] for m in run.messages[2:5]]
    assert all(r.is_error for r in results)
    assert results[0].content == "error: RuntimeError: broken 1"
    assert results[1].content.startswith("error: invalid arguments for boom: n: Input should be a valid integer")
    assert results[2].content == "error: no tool named 'nope'; available: boom"
    assert run.text == "recovered"


async def test_tool_choice_applies_to_the_first_call_only() -> None:
    def ping() -> str:
        return "pong"

    mock = MockProvider(replies=[_calls(("c1", "ping", {})), "fine"])
    await run_tools(mock, "ping", tools=[ping], tool_choice="ping", max_tokens=20)
    first, second = (r.options for r in mock.requests)
    assert first.tool_choice == "ping" and second.tool_choice is None
    assert first.max_tokens == second.max_tokens == 20  # the other options stay


async def test_max_turns_raises_with_the_history_so_far() -> None:
    def ping() -> str:
        return "pong"

    mock = MockProvider(replies=[_calls(("c", "ping", {}))])  # calls ping forever
    with pytest.raises(ToolLoopError, match="max_turns=3") as caught:
        await run_tools(mock, "ping", tools=[ping], max_turns=3)
    run = caught.value.run
    assert run.turns == 3 == len(mock.requests)
    assert len(run.calls) == 2  # the third reply's call was not run
    assert run.messages[-1].role is Role.ASSISTANT and run.messages[-1].tool_calls
    assert caught.value.provider == "mock"


async def test_arguments_of_run_tools_are_checked() -> None:
    def ping() -> str:
        return "pong"

    mock = MockProvider()
    for kwargs, words in (
        ({"tools": [ping], "max_turns": 0}, "max_turns"),
        ({"tools": []}, "at least one tool"),
        ({"tools": ping}, "must be a list"),
        ({"tools": [ping, ping]}, "share a name"),
        ({"tools": [ping], "messages": 42}, "messages must be"),
    ):
        messages = kwargs.pop("messages", "hi")
        with pytest.raises(InvalidRequestError, match=words):
            await run_tools(mock, messages, **kwargs)
    assert mock.requests == []


async def test_tools_may_be_given_as_tool_objects_and_async_callables() -> None:
    class Adder:
        async def __call__(self, a: int, b: int) -> int:
            return a + b

    tool = ToolDefinition.from_function(Adder(), name="add", description="Add two numbers.")
    mock = MockProvider(replies=[_calls(("c1", "add", {"a": 2, "b": 3})), "5"])
    run = await run_tools(mock, Message.user("2+3"), tools=[tool])
    assert run.calls[0][1].tool_results[0].content == "5"


def test_blocking_run_tools_with_calls_scripted_in_toml() -> None:
    config = """
[[llm.providers]]
name = "scripted"
type = "mock"
responses = [
  { tool_calls = [
    { name = "get_weather", arguments = { city = "Paris" } },
    { name = "get_weather", id = "mine", arguments = { city = "Oslo" } },
  ] },
  "It is sunny.",
]
"""
    seen: list[str] = []

    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return "sunny" if city == "Paris" else "snow"

    with BlockingRegistry.from_toml_string(config) as registry:
        run = registry.get("scripted").run_tools("Weather?", tools=[get_weather])
    assert run.text == "It is sunny."
    assert sorted(seen) == ["Oslo", "Paris"]
    assert [c.id for c, _ in run.calls] == ["call_0_0", "mine"]
    assert [m.tool_results[0].content for _, m in run.calls] == ["sunny", "snow"]


async def test_the_scripted_mock_streams_its_calls_like_a_backend() -> None:
    registry = Registry.from_toml_string(
        '[[llm.providers]]\nname = "m"\ntype = "mock"\n'
        'responses = [{ text = "Checking.", thinking = "hmm", tool_calls = [{ name = "f", arguments = { x = 1 } }] }]\n'
    )
    async with registry:
        response = await registry.get("m").chat("hi")
    assert response.text == "Checking." and response.thinking == "hmm"
    assert response.tool_calls == [ToolCall(id="call_0_0", name="f", arguments={"x": 1})]
    assert response.finish_reason == "tool_use"


def test_bad_scripted_calls_are_config_errors() -> None:
    from zeph_providers import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'name'"):
        Registry.from_toml_string(
            '[[llm.providers]]\nname = "m"\ntype = "mock"\nresponses = [{ tool_calls = [{ nme = "f" }] }]\n'
        )
