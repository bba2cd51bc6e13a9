"""The tool loop: `run_tools` calls the model, runs the tools it asks for, sends the results back.

```python
def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict[str, object]:
    \"\"\"The current weather in a city.

    Args:
        city: The city's name, e.g. "Paris".
        unit: Celsius or Fahrenheit.
    \"\"\"
    return {"city": city, "temp": 18}

run = await run_tools(provider, "Weather in Paris?", tools=[get_weather])
run.text, run.messages                      # the final reply's text, the whole conversation
```

Tools are functions or `Tool`s (`ToolDefinition.from_function(fn)`, rules in
`zeph_providers._tooldef`). `run_tools(provider, messages, tools=[...], max_turns=8, **chat_kwargs)`
decides:
- each turn calls `provider.chat()`; the reply's tool calls run concurrently (sync functions in a
  thread through `asyncio.to_thread`, async ones awaited), each with its arguments validated
  against the function's signature;
- an unknown tool, invalid arguments or an exception in the tool go back to the model as an error
  result (`ToolResultPart.is_error`, the message as content); they are not raised. Cancellation is;
- history: one assistant message with all of the turn's calls, then one tool message per call, in
  call order;
- `tool_choice` applies to the first call only; later turns use the provider's default ("auto"):
  a forced choice would make the model call tools forever (the OpenAI Agents SDK's
  `reset_tool_choice` does the same);
- it stops at the first reply without tool calls and returns a `ToolRun` (the final `response`,
  all the `messages`, the `calls` made, the number of `turns`). When `max_turns` model calls all
  asked for tools it raises `ToolLoopError` (its `run` holds the history so far, ending with the
  unanswered calls): it never loops forever and never passes an unfinished reply off as the answer;
- a non-str return value is sent as JSON (pydantic's encoder: models, dataclasses, dates...).

From blocking code: `BlockingProvider.run_tools(...)` (the same loop on the registry's loop thread).
"""

from __future__ import annotations

import asyncio
import json
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Unpack

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from zeph_providers._inputs import messages_from
from zeph_providers._tooldef import Tool, parse_docstring, tool_from_function
from zeph_providers.errors import InvalidRequestError, LlmError
from zeph_providers.options import ChatKwargs
from zeph_providers.types import ChatResponse, Message, ToolCall

__all__ = ["Tool", "ToolLoopError", "ToolRun", "parse_docstring", "run_tools", "tool_from_function"]





@dataclass
class ToolRun:
    """What `run_tools` did: the final reply, the whole conversation and every call it ran."""

    response: ChatResponse
    """The last reply: the final answer (no tool calls), or, on `ToolLoopError`, the unanswered one."""
    messages: list[Message] = field(default_factory=list)
    """The input messages, then each turn's assistant message and tool results, then the final reply."""
    calls: list[tuple[ToolCall, Message]] = field(default_factory=list)
    """Each tool call the model made and the tool message answering it, in order."""
    turns: int = 0
    """How many times the model was called."""

    @property
    def text(self) -> str:
        return self.response.text


class ToolLoopError(LlmError):
    """The model still asked for tools after `max_turns` calls; `run` holds the history so far."""

    def __init__(self, message: str, *, provider: str | None = None, run: ToolRun) -> None:
        super().__init__(message, provider=provider)
        self.run = run


class _Chat(typing.Protocol):
    @property
    def name(self) -> str: ...

    def chat(self, messages: Any, **kwargs: Unpack[ChatKwargs]) -> Awaitable[ChatResponse]: ...


async def run_tools(
    provider: _Chat,
    messages: Any,
    *,
    tools: Sequence[Callable[..., Any] | Tool],
    max_turns: int = 8,
    **chat_kwargs: Any,
) -> ToolRun:
    """Call the model, run the tools it asks for, send the results back, until it answers.

    `messages` is any `MessageInput`; `tools` are functions or `Tool`s (`ToolDefinition.from_function`).
    See the module docstring for the decisions (errors sent back, concurrency, `max_turns`).
    """
    name = getattr(provider, "name", None)
    if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
        raise InvalidRequestError(f"max_turns must be an int >= 1, not {max_turns!r}", provider=name)
    if "tools" in chat_kwargs:
        raise InvalidRequestError("pass the tools as run_tools(tools=...), not in the chat options", provider=name)
    if not tools:
        raise InvalidRequestError("run_tools() needs at least one tool", provider=name)
    if isinstance(tools, Tool) or callable(tools):
        raise InvalidRequestError("tools must be a list of functions or Tools", provider=name)
    bound = [tool_from_function(t) for t in tools]
    by_name = {tool.name: tool for tool in bound}
    if len(by_name) != len(bound):
        raise InvalidRequestError(f"two tools share a name: {[t.name for t in bound]}", provider=name)
    history = messages_from(messages, provider=name)
    run = ToolRun(response=ChatResponse(), messages=history)
    options: dict[str, Any] = dict(chat_kwargs)
    options["tools"] = bound
    while True:
        response = await provider.chat(list(history), **options)
        run.turns += 1
        run.response = response
        history.append(response.to_message())
        if not response.tool_calls:
            return run
        if run.turns >= max_turns:
            raise ToolLoopError(
                f"the model still called tools after max_turns={max_turns} model calls "
                f"({', '.join(c.name for c in response.tool_calls)}); raise max_turns or check the prompt",
                provider=response.provider or name,
                run=run,
            )
        results = await asyncio.gather(*(_answer(call, by_name) for call in response.tool_calls))
        history.extend(results)
        run.calls.extend(zip(response.tool_calls, results, strict=True))
        options.pop("tool_choice", None)  # a forced choice only for the first call (see the module doc)


async def _answer(call: ToolCall, tools: dict[str, Tool]) -> Message:
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(sorted(tools))
        return Message.tool_result(call.id, f"error: no tool named {call.name!r}; available: {known}", is_error=True)
    try:
        value = await tool.call(dict(call.arguments))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        return Message.tool_result(call.id, f"error: invalid arguments for {call.name}: {problems}", is_error=True)
    except Exception as exc:
        return Message.tool_result(call.id, f"error: {type(exc).__name__}: {exc}", is_error=True)
    return Message.tool_result(call.id, _as_text(value))


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(to_jsonable_python(value), ensure_ascii=False)
    except Exception:  # not JSON at all: its str, rather than failing the run
        return str(value)
