"""`ToolDefinition`, and tool definitions made from Python functions (`Tool`, `from_function`).

Split from `types.py` (which re-exports `ToolDefinition`) so that building a definition from a
function needs nothing of the messages and replies; the tool loop (`run_tools`) is in
`zeph_providers.tools`, which re-exports `Tool` too.

`ToolDefinition.from_function(fn)` (`tool_from_function`) decides:
- name: `fn.__name__` (or `name=`), which must match `[A-Za-z0-9_-]{1,64}` (what the APIs accept;
  a lambda or a `functools.partial` needs `name=`);
- description: the docstring's first paragraph (or `description=`); parameter descriptions from
  a Google-style `Args:` section, a NumPy-style `Parameters` section or Sphinx `:param x:` lines;
- parameters: a JSON schema built by pydantic from the type hints (defaults, Optional, Literal,
  enums, nested models, lists, dicts; `Annotated[..., Field(...)]` constraints). An unannotated
  parameter is an `InvalidRequestError` (the model must be told what to send: annotate it, `Any`
  for any JSON value); so are `*args` / `**kwargs`. Unknown arguments are refused
  (`additionalProperties: false`). Pydantic's generated titles are left out (noise for a model).
- `strict`: None by default (the provider's `strict_tools` default), as for a hand-written
  `ToolDefinition`; True asks for strict schema adherence, which OpenAI allows only when every
  property is required: a function with defaults is then refused by the backend (a typed error).
- `Tool.call(arguments)` validates the arguments against the signature (pydantic, lax: "3" is
  accepted for an int), runs a sync function in a thread (`asyncio.to_thread`) and awaits an
  async one.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, create_model

from zeph_providers._types_reply import Frozen as _Frozen
from zeph_providers.errors import InvalidRequestError, clip

__all__ = ["Tool", "ToolDefinition", "parse_docstring", "tool_from_function"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolDefinition(_Frozen):
    """A function the model may call; `parameters` is a JSON schema object."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None
    """Strict schema adherence (OpenAI `strict: true`): True asks for it (an error where the schema
    cannot be made strict), False never, None takes the provider's default (`strict_tools`)."""

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any] | Tool,
        *,
        name: str | None = None,
        description: str | None = None,
        strict: bool | None = None,
    ) -> Tool:
        """A tool definition made from a Python function: its name, its docstring's first paragraph
        (and `Args:` entries as parameter descriptions), a JSON schema from its type hints. The
        result is a `Tool` (`zeph_providers.tools.Tool`), a `ToolDefinition` that also holds the
        function (what `run_tools` calls). See `zeph_providers._tooldef` for the rules."""
        return tool_from_function(fn, name=name, description=description, strict=strict)



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
    numpy_style = False  # a NumPy section: its header underlined, entries `name : type`
    current: str | None = None
    indent = 0
    for position, line in enumerate(lines):
        stripped = line.strip()
        header = _SECTION.match(stripped)
        underlined = position + 1 < len(lines) and set(lines[position + 1].strip()) == {"-"}
        if header and (stripped.endswith(":") or underlined):
            section, current, numpy_style = header.group(1), None, underlined
            continue
        if section not in ("Args", "Arguments", "Parameters", "Params") or not stripped or set(stripped) == {"-"}:
            continue
        lead = len(line) - len(line.lstrip())
        if current is not None and lead > indent:  # a continuation of the current entry
            params[current] = f"{params[current]} {stripped}".strip()
            continue
        if numpy_style:
            entry = re.match(r"^(\w+)\s*(?::.*)?$", stripped)
            if entry:
                current, indent = entry.group(1), lead
                params[current] = ""
            continue
        google = re.match(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", stripped)
        if google:
            current, indent = google.group(1), lead
            params[current] = google.group(2).strip()
    return " ".join(summary), {k: v for k, v in params.items() if v}
