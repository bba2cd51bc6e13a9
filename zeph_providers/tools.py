"""Tools from Python functions, and a helper that runs the tool loop.

```python
from zeph_providers import MockProvider, ToolDefinition
from zeph_providers.tools import run_tools

def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict[str, object]:
    \"\"\"The current weather in a city.

    Args:
        city: The city's name, e.g. "Paris".
        unit: Celsius or Fahrenheit.
    \"\"\"
    return {"city": city, "temp": 18}

tool = ToolDefinition.from_function(get_weather)   # a Tool: a ToolDefinition holding the function
run = await run_tools(provider, "Weather in Paris?", tools=[get_weather])
run.response.text, run.messages                     # the final reply, the whole conversation
```

`ToolDefinition.from_function(fn)` (here `tool_from_function`) decides:
- name: `fn.__name__` (or `name=`), which must match `[A-Za-z0-9_-]{1,64}` (what the APIs accept;
  a lambda or a `functools.partial` needs `name=`);
- description: the docstring's first paragraph (or `description=`); parameter descriptions from
  a Google-style `Args:` section, a NumPy-style `Parameters` section or Sphinx `:param x:` lines;
- parameters: a JSON schema built by pydantic from the type hints (defaults, Optional, Literal,
  enums, nested models, lists, dicts; `Annotated[..., Field(...)]` constraints). An unannotated
  parameter is an error (the model must be told what to send: annotate it, `Any` for any JSON);
  so are `*args` / `**kwargs`. Additional properties are refused (`additionalProperties: false`).
- `strict` None (the provider's `strict_tools` default), as a hand-written `ToolDefinition`.

`run_tools(provider, messages, tools=[...], max_turns=8, **chat_kwargs)` decides:
- each turn calls `provider.chat()`; the reply's tool calls run concurrently (sync functions in a
  thread through `asyncio.to_thread`, async ones awaited), each with its arguments validated
  against the function's signature (pydantic, lax: "3" is accepted for an int);
- an unknown tool, invalid arguments or an exception in the tool go back to the model as an error
  result (`ToolResultPart.is_error`, the message as content); they are not raised. Cancellation is;
- history: one assistant message with all of the turn's calls, then one tool message per call in
  call order;
- `tool_choice` applies to the first call only; later turns use "auto" (a forced choice would make
  the model call tools forever), as the OpenAI Agents SDK's `reset_tool_choice` does;
- it stops at the first reply without tool calls and returns a `ToolRun` (the final `response`,
  every `messages`, the `calls` made). When `max_turns` model calls all asked for tools it raises
  `ToolLoopError` (its `run` holds the history so far, ending with the unanswered calls): it never
  loops forever and never passes an unfinished reply off as the answer.
- a non-str return value is sent as JSON (pydantic's encoder: models, dataclasses, dates...).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Unpack

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, create_model
from pydantic_core import to_jsonable_python

from zeph_providers._inputs import messages_from
from zeph_providers.errors import InvalidRequestError, LlmError, clip
from zeph_providers.options import ChatKwargs
from zeph_providers.types import ChatResponse, Message, ToolCall, ToolDefinition

__all__ = ["Tool", "ToolLoopError", "ToolRun", "run_tools", "run_tools_blocking", "tool_from_function"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Tool(ToolDefinition):
    """A `ToolDefinition` that holds the Python function it describes (`from_function`).

    Send it as any definition (`chat(..., tools=[tool])`); `run_tools` calls the function, and
    `await tool.call(arguments)` runs it once with validated arguments.
    """

    _function: Callable[..., Any] = PrivateAttr()
    _arguments: type[BaseModel] = PrivateAttr()
    _positional: tuple[str, ...] = PrivateAttr(default=())

    @property
    def function(self) -> Callable[..., Any]:
        return self._function

    @property
    def arguments_model(self) -> type[BaseModel]:
        """The pydantic model the arguments are validated with (fields aliased to parameter names)."""
        return self._arguments

    async def call(self, arguments: dict[str, Any]) -> Any:
        """Validate `arguments` against the signature, then run the function (a sync one in a thread).
        Invalid arguments raise pydantic's `ValidationError`; the function's own errors propagate."""
        values = self._arguments.model_validate(arguments)
        kwargs = {f.alias or key: getattr(values, key) for key, f in type(values).model_fields.items()}
        args = [kwargs.pop(name) for name in self._positional]
        fn = self._function
        if _is_async(fn):
            result = await fn(*args, **kwargs)
        else:
            result = await asyncio.to_thread(fn, *args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def tool_from_function(
    fn: Callable[..., Any] | Tool,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool | None = None,
) -> Tool:
    """`ToolDefinition.from_function`: see the module docstring for the rules."""
    if isinstance(fn, Tool):
        return fn
    if not callable(fn):
        raise InvalidRequestError(f"a tool must be a function; got {type(fn).__name__} {clip(repr(fn), 60)}")
    tool_name = name if name is not None else getattr(fn, "__name__", None)
    if not isinstance(tool_name, str) or not _NAME.match(tool_name):
        raise InvalidRequestError(
            f"tool name {tool_name!r} is not valid: use 1-64 letters, digits, '_' or '-' (pass name=...)"
        )
    summary, params_doc = parse_docstring(inspect.getdoc(fn) or "")
    model, positional = _arguments_model(fn, tool_name, params_doc)
    try:
        schema = model.model_json_schema()
    except Exception as exc:  # a default or a type pydantic cannot describe
        raise InvalidRequestError(f"tool {tool_name!r}: no JSON schema for its parameters ({exc})") from None
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    tool = Tool(
        name=tool_name,
        description=description if description is not None else summary,
        parameters=schema,
        strict=strict,
    )
    tool._function = fn
    tool._arguments = model
    tool._positional = positional
    return tool


def _arguments_model(
    fn: Callable[..., Any], tool: str, params_doc: dict[str, str]
) -> tuple[type[BaseModel], tuple[str, ...]]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"tool {tool!r}: cannot read the function's signature ({exc})") from None
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # a partial or a callable object: annotations from the signature
        target = getattr(fn, "func", None) or getattr(fn, "__call__", None)  # noqa: B004
        try:
            hints = typing.get_type_hints(target, include_extras=True) if target is not None else {}
        except Exception as exc:
            raise InvalidRequestError(f"tool {tool!r}: cannot resolve its type hints ({exc})") from None
    fields: dict[str, Any] = {}
    positional: list[str] = []
    for index, (pname, param) in enumerate(signature.parameters.items()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise InvalidRequestError(
                f"tool {tool!r}: {star}{pname} cannot be described to a model; use named parameters"
            )
        if pname not in hints and param.annotation is param.empty:
            raise InvalidRequestError(
                f"tool {tool!r}: parameter {pname!r} has no type hint; annotate it (Any for any JSON value)"
            )
        annotation = hints.get(pname, param.annotation)
        default = ... if param.default is param.empty else param.default
        fields[f"p{index}"] = (annotation, Field(default, alias=pname, description=params_doc.get(pname)))
        if param.kind is param.POSITIONAL_ONLY:
            positional.append(pname)
    try:
        model = create_model(
            f"{tool}_arguments",
            __config__=ConfigDict(extra="forbid", populate_by_name=False, arbitrary_types_allowed=False),
            **fields,
        )
    except Exception as exc:
        raise InvalidRequestError(f"tool {tool!r}: its parameters cannot be validated ({exc})") from None
    return model, tuple(positional)


_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Returns?|Yields?|Raises|Examples?|Notes?|See Also)\s*:?\s*$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """A cleaned docstring's first paragraph and its parameter descriptions (Google, NumPy, Sphinx)."""
    lines = doc.splitlines()
    summary: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped or _SECTION.match(stripped) or stripped.startswith(":"):
            break
        summary.append(stripped)
    params: dict[str, str] = {}
    for match in re.finditer(r"^\s*:param\s+(?:[^:]*\s)?(\w+):\s*(.+)$", doc, re.M):  # Sphinx
        params[match.group(1)] = match.group(2).strip()
    section: str | None = None
    current: str | None = None
    indent = 0
    for position, line in enumerate(lines):
        stripped = line.strip()
        header = _SECTION.match(stripped)
        underlined = position + 1 < len(lines) and set(lines[position + 1].strip()) == {"-"}
        if header and (stripped.endswith(":") or underlined):
            section, current = header.group(1), None
            continue
        if section not in ("Args", "Arguments", "Parameters", "Params") or not stripped or set(stripped) == {"-"}:
            continue
        lead = len(line) - len(line.lstrip())
        google = re.match(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", stripped)
        numpy = re.match(r"^(\w+)\s*:\s*[^:]*$", stripped) or re.match(r"^(\w+)$", stripped)
        if current is not None and lead > indent:  # a continuation of the current entry
            params[current] = f"{params[current]} {stripped}".strip()
        elif google and (google.group(2) or not numpy):
            current, indent = google.group(1).lstrip("*"), lead
            params[current] = google.group(2).strip()
        elif numpy:
            current, indent = numpy.group(1), lead
            params[current] = ""
    return " ".join(summary), {k: v for k, v in params.items() if v}


# ----- the tool loop ---------------------------------------------------------------------------


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


def run_tools_blocking(
    provider: Any,
    messages: Any,
    *,
    tools: Sequence[Callable[..., Any] | Tool],
    max_turns: int = 8,
    **chat_kwargs: Any,
) -> ToolRun:
    """`run_tools` for a `BlockingProvider` (from a `BlockingRegistry`): the loop runs on its event
    loop thread, so async tools run there and sync tools in worker threads, as with `run_tools`."""
    from zeph_providers.blocking import BlockingProvider

    if not isinstance(provider, BlockingProvider):
        raise InvalidRequestError("run_tools_blocking() takes a BlockingProvider (BlockingRegistry.get(...))")
    return provider.run_tools(messages, tools=tools, max_turns=max_turns, **chat_kwargs)
