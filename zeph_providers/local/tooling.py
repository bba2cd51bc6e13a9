"""Tools and structured output for the local backend: render a request, and read the reply back.

Public surface (what engines, the provider and end-to-end tests use):

- `prepare(template, messages, params) -> Prepared`, called by both engines on the worker thread:
  renders the conversation (with `params.tools`) through the chat template and decides the
  `Constraint` the reply is decoded under, from `params.tool_choice` and `params.schema`:

  | request | prefill | constraint |
  |---|---|---|
  | `response_format` only | "" | `Constraint(schema)`: the whole reply is the JSON value |
  | tools, `tool_choice` "required" | the syntax's opener (1) | `Constraint(span of any tool)` |
  | tools, `tool_choice` = a tool's name | same | `Constraint(span of that tool)` |
  | tools, "auto" / None | "" | `Constraint(span of any tool, trigger=syntax.trigger, rearm=True)` |

  (1) `"<tool_call>\\n"` (Hermes), `"[TOOL_CALLS]"` (Mistral), "" (Llama 3). "auto" is a lazy
  grammar: free text until the trigger, then a constrained call, then free again.

  With tools AND `response_format`: a forced call wins (the reply is the call; the schema is for
  a later answer, as on OpenAI). With "auto" the two cannot both be enforced by one grammar
  (free text until a trigger, or a schema-valid answer), so `check_request` refuses it with
  `InvalidRequestError` rather than enforce only one. Tools on the "raw" template (no roles to
  put calls and results in) are refused too. `tool_choice` "none" never reaches here: `resolve()`
  drops the tools.
- `ReplyParser(prepared, tools, provider=...)`, used by the provider on the event loop:
  `feed(text)` / `close()` turn the streamed reply text into `ContentChunk`s, `ToolCallDeltaChunk`s
  and `ToolUseChunk`s. It starts after `prepared.prefill` (a forced call starts inside the call),
  holds back text that may be the start of a trigger (markup never leaks as content), streams a
  call's name (with its id) as soon as it is known and then the raw JSON text of its arguments
  (the fragments of one call concatenate to text whose `json.loads` is the final arguments),
  and emits the complete call when its JSON value ends. Ids are stable (a hash of the prompt,
  the call's index and name), so `chat()` and a stream produce equal responses. Malformed call
  text (invalid JSON, an unknown tool, arguments that are not an object, a cut-off call) raises
  `BadResponseError` naming the provider. A call whose "arguments" come before its "name"
  (unconstrained output) gets all its deltas at its end; so does a reply that is bare call JSON
  without its trigger (Llama 3's usual form; Mistral's list when `[TOOL_CALLS]` was not decoded):
  it is only known to be a call, not content, once complete, and its deltas are re-serialised.

The syntaxes themselves are in `toolsyntax`; rendering in `templates`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zeph_providers.backends._convert import stable_tool_call_id
from zeph_providers.backends._tools import parse_arguments
from zeph_providers.backends._wire import loads
from zeph_providers.errors import BadResponseError, InvalidRequestError, UnsupportedCapabilityError
from zeph_providers.local.engine import (
    JSON_LAYOUT,
    Constraint,
    GenerationParams,
    Prepared,
    closed_objects,
    decoding_schema,
)
from zeph_providers.local.toolsyntax import ToolSyntax
from zeph_providers.types import ContentChunk, StreamChunk, ToolCall, ToolCallDeltaChunk, ToolDefinition, ToolUseChunk

if TYPE_CHECKING:
    from zeph_providers.local.templates import ChatTemplate
    from zeph_providers.types import Message

__all__ = [
    "JSON_LAYOUT",
    "ReplyParser",
    "check_request",
    "closed_objects",
    "decoding_schema",
    "forced_tools",
    "prepare",
]


def forced_tools(params: GenerationParams, *, provider: str | None = None) -> tuple[ToolDefinition, ...] | None:
    """The tools a forced call chooses among (None: the model may answer without calling)."""
    choice = params.tool_choice or "auto"
    if not params.tools or choice == "auto":
        return None
    if choice == "required":
        return params.tools
    for tool in params.tools:
        if tool.name == choice:
            return (tool,)
    names = ", ".join(tool.name for tool in params.tools)
    raise InvalidRequestError(
        f"tool_choice names the tool {choice!r}, which is not among the tools given ({names})", provider=provider
    )


def check_request(params: GenerationParams, *, provider: str | None = None, template: str | None = None) -> None:
    """Refuse, before any work, what `prepare` cannot honour (see the module docstring)."""
    forced = forced_tools(params, provider=provider)
    if params.tools and forced is None and params.schema is not None:
        raise InvalidRequestError(
            'tools with tool_choice "auto" and a response_format cannot both be enforced by the local backend '
            "(one grammar cannot allow free text until a call and a schema-valid answer); force a tool "
            '(tool_choice="required" or a name) or ask for the structured answer in a turn without tools',
            provider=provider,
        )
    if params.tools and template == "raw":
        raise UnsupportedCapabilityError(
            "tools",
            provider=provider,
            detail='the "raw" chat template has no roles to put tool calls and results in; use the model\'s own',
        )


def prepare(template: ChatTemplate, messages: Sequence[Message], params: GenerationParams) -> Prepared:
    """The prompt for `messages` under `template`, with the constraint `params` asks for.

    Constraint schemas are decoded with objects closed and one JSON layout (`decoding_schema`)."""
    if not params.tools:
        constraint = Constraint(decoding_schema(params.schema)) if params.schema is not None else None
        prompt = template.render(messages)
        return Prepared(prompt=prompt, constraint=constraint, add_special_tokens=template.add_special_tokens)
    check_request(params, template=template.name)
    syntax = template.syntax
    forced = forced_tools(params)
    prompt = template.render(messages, tools=params.tools)
    if forced is not None:
        return Prepared(
            prompt=prompt + syntax.prefill,
            prefill=syntax.prefill,
            constraint=Constraint(decoding_schema(syntax.span_schema(forced))),
            syntax=syntax,
            add_special_tokens=template.add_special_tokens,
        )
    constraint = Constraint(decoding_schema(syntax.span_schema(params.tools)), trigger=syntax.trigger, rearm=True)
    return Prepared(prompt=prompt, constraint=constraint, syntax=syntax, add_special_tokens=template.add_special_tokens)


# ----- reading the reply back -------------------------------------------------------------------

_WS = " \t\r\n"


class _CallScan:
    """One call's JSON object text as it arrives: its structure, name, and where its arguments are."""

    def __init__(self, args_keys: tuple[str, ...]) -> None:
        self.args_keys = args_keys
        self.raw = ""
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.string_is_key = False
        self.expect_key = False
        self.key: str | None = None
        self.key_start = 0
        self.value_start: int | None = None
        self.primitive = False
        self.name: str | None = None
        self.args_start: int | None = None
        self.args_end: int | None = None
        self.done = False

    def feed(self, char: str) -> None:
        i = len(self.raw)
        self.raw += char
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == '"':
                self.in_string = False
                if self.depth == 1 and self.string_is_key:
                    try:
                        self.key = str(json.loads(self.raw[self.key_start : i + 1]))
                    except ValueError:
                        self.key = None
                elif self.depth == 1:
                    self._value_end(i + 1)
            return
        if char == '"':
            self.in_string = True
            self.string_is_key = self.depth == 1 and self.expect_key
            if self.string_is_key:
                self.key_start = i
            elif self.depth == 1 and self.value_start is None:
                self._value_begin(i)
        elif char in "{[":
            if self.depth == 0:
                self.expect_key = True
            elif self.depth == 1 and self.value_start is None:
                self._value_begin(i)
            self.depth += 1
        elif char in "}]":
            self.depth -= 1
            if self.depth == 1:
                self._value_end(i + 1)
            elif self.depth <= 0:
                if self.primitive:
                    self._value_end(i)
                self.done = True
        elif self.depth == 1 and char == ":":
            self.expect_key = False
        elif self.depth == 1 and char == ",":
            if self.primitive:
                self._value_end(i)
            self.expect_key = True
        elif self.depth == 1 and char not in _WS and not self.expect_key and self.value_start is None:
            self._value_begin(i)
            self.primitive = True

    def _value_begin(self, start: int) -> None:
        self.value_start = start
        if self.key in self.args_keys and self.args_start is None:
            self.args_start = start

    def _value_end(self, end: int) -> None:
        start, self.value_start, self.primitive = self.value_start, None, False
        if start is None:
            return
        text = self.raw[start:end].rstrip(_WS)
        if self.key == "name" and self.name is None:
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            self.name = value if isinstance(value, str) else None
        if start == self.args_start:
            self.args_end = start + len(text)


class ReplyParser:
    """Reply text -> content, tool-call deltas and complete tool calls (see the module docstring)."""

    def __init__(self, prepared: Prepared, tools: Sequence[ToolDefinition], *, provider: str | None = None) -> None:
        self.provider = provider
        self.syntax: ToolSyntax | None = prepared.syntax if tools else None
        self.tools = {tool.name for tool in tools}
        self.calls: list[ToolCall] = []
        """The complete calls so far, in order."""
        self._seed = prepared.prompt
        self._state = "text"
        self._pending = ""
        self._started = False  # some non-whitespace content was emitted
        self._in_list = False
        self._scan: _CallScan | None = None
        self._sent = 0  # argument characters of the current call already streamed
        self._named = False  # the current call's first delta was sent
        self._early: list[StreamChunk] = []
        self._resumed = False  # non-whitespace text followed the last call
        syntax = self.syntax
        constraint = prepared.constraint
        if syntax is not None and constraint is not None and constraint.trigger is None:
            self._state = "open"  # a forced call: the prefill opened it
        elif syntax is not None and prepared.prefill:
            self._early = self.feed(prepared.prefill)

    # ----- public ------------------------------------------------------------------------------

    def feed(self, text: str) -> list[StreamChunk]:
        """The chunks `text` (the next piece of the reply) completes."""
        out, self._early = self._early, []
        if self.syntax is None:
            if text:
                out.append(ContentChunk(text=text))
            return out
        self._pending += text
        self._run(out)
        return _merged(out)

    def close(self) -> list[StreamChunk]:
        """The chunks the end of the reply completes; a call left open is a `BadResponseError`."""
        out, self._early = self._early, []
        if self.syntax is None:
            return out
        self._run(out)
        state, pending = self._state, self._pending
        self._pending = ""
        if state == "text" and pending and (self._resumed or not self.calls):
            out.append(ContentChunk(text=pending))
        elif state == "bare":
            self._bare(pending, out)
        elif state == "open" or (state == "list" and not self.calls):
            raise self._bad(f"the reply ended before its {self.syntax.name} tool call began ({pending!r})")
        elif state == "call":
            raw = self._scan.raw if self._scan is not None else ""
            raise self._bad(f"the reply ended inside a tool call (cut off or malformed JSON): {raw[:200]!r}")
        return _merged(out)

    # ----- the state machine -------------------------------------------------------------------

    def _run(self, out: list[StreamChunk]) -> None:
        syntax = self.syntax
        assert syntax is not None
        while self._pending:
            before = (self._state, len(self._pending))
            if self._state == "text":
                self._text(syntax, out)
            elif self._state in ("open", "list"):
                self._open(syntax)
            elif self._state == "call":
                self._call(syntax, out)
            elif self._state == "after":
                self._after(syntax)
            else:  # "bare": decided at close()
                return
            if (self._state, len(self._pending)) == before:
                return  # waiting for more text

    def _text(self, syntax: ToolSyntax, out: list[StreamChunk]) -> None:
        if self.calls and not self._resumed:  # whitespace right after a call is markup, not content
            self._pending = self._pending.lstrip(_WS)
            if not self._pending:
                return
            self._resumed = True
        pending = self._pending
        if syntax.bare_json and not self._started and not self.calls:
            stripped = pending.lstrip(_WS)
            if not stripped:
                return
            if syntax.trigger.startswith(stripped):
                return  # maybe the trigger itself, still arriving
            if stripped.startswith(syntax.bare_json) and not stripped.startswith(syntax.trigger):
                self._state = "bare"
                return
        found = pending.find(syntax.trigger)
        if found >= 0:
            self._content(pending[:found], out)
            self._pending = pending[found + len(syntax.trigger) :]
            self._state = "open"
            return
        hold = _partial_suffix(pending, syntax.trigger)
        self._content(pending[: len(pending) - hold], out)
        self._pending = pending[len(pending) - hold :]

    def _content(self, text: str, out: list[StreamChunk]) -> None:
        if text:
            out.append(ContentChunk(text=text))
            self._started = self._started or bool(text.strip(_WS))

    def _open(self, syntax: ToolSyntax) -> None:
        pending = self._pending.lstrip(_WS)
        self._pending = pending
        if not pending:
            return
        first = pending[0]
        if self._state == "list" and self._in_list:
            if first == ",":
                self._pending = pending[1:]
            elif first == "]":
                self._pending, self._state, self._in_list = pending[1:], "text", False
            elif first == "{":
                self._begin_call()
            else:
                raise self._bad(f"unexpected {pending[:40]!r} in a {syntax.name} tool-call list")
            return
        if first == "[" and syntax.is_list:
            self._pending, self._state, self._in_list = pending[1:], "list", True
        elif first == "{":
            self._begin_call()
        else:
            raise self._bad(f"a {syntax.name} tool call does not start with a JSON object: {pending[:40]!r}")

    def _begin_call(self) -> None:
        keys = ("arguments", "parameters")
        self._scan, self._sent, self._named, self._state = _CallScan(keys), 0, False, "call"

    def _call(self, syntax: ToolSyntax, out: list[StreamChunk]) -> None:
        scan = self._scan
        assert scan is not None
        used = 0
        for char in self._pending:
            scan.feed(char)
            used += 1
            if scan.done:
                break
        self._pending = self._pending[used:]
        self._stream_deltas(scan, out)
        if scan.done:
            self._resumed = False
            self._finish_call(scan, out)
            self._scan = None
            self._state = "list" if self._in_list else "after" if syntax.closer else "text"

    def _after(self, syntax: ToolSyntax) -> None:
        pending = self._pending.lstrip(_WS)
        if not pending:
            self._pending = ""
            return
        if pending.startswith(syntax.closer):
            self._pending, self._state = pending[len(syntax.closer) :], "text"
        elif syntax.closer.startswith(pending):
            self._pending = pending  # maybe the closing tag, still arriving
        else:
            self._state = "text"

    # ----- calls -------------------------------------------------------------------------------

    def _call_id(self, name: str) -> str:
        return stable_tool_call_id(self._seed, len(self.calls), name)

    def _stream_deltas(self, scan: _CallScan, out: list[StreamChunk]) -> None:
        if scan.name is None:
            return
        if not self._named:
            self._check_name(scan.name)
            out.append(ToolCallDeltaChunk(index=len(self.calls), id=self._call_id(scan.name), name=scan.name))
            self._named = True
        if scan.args_start is None:
            return
        end = scan.args_end if scan.args_end is not None else len(scan.raw)
        fragment = scan.raw[scan.args_start + self._sent : end]
        if fragment:
            out.append(ToolCallDeltaChunk(index=len(self.calls), arguments=fragment))
            self._sent += len(fragment)

    def _finish_call(self, scan: _CallScan, out: list[StreamChunk]) -> None:
        value = loads(scan.raw, provider=self.provider, what="tool call")
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise self._bad(f"a tool call is not a JSON object with a name: {scan.raw[:200]!r}")
        name = value["name"]
        self._check_name(name)
        if scan.args_start is not None and scan.args_end is not None:
            raw_args = scan.raw[scan.args_start : scan.args_end]
        else:
            raw_args = "{}"
        arguments = parse_arguments(raw_args, provider=self.provider, tool=name)
        if not self._named:  # the arguments came before the name: all of it now
            out.append(ToolCallDeltaChunk(index=len(self.calls), id=self._call_id(name), name=name))
        rest = raw_args[self._sent :]
        if rest:
            out.append(ToolCallDeltaChunk(index=len(self.calls), arguments=rest))
        call = ToolCall(id=self._call_id(name), name=name, arguments=arguments)
        self.calls.append(call)
        out.append(ToolUseChunk(tool_call=call))

    def _check_name(self, name: str) -> None:
        if name not in self.tools:
            known = ", ".join(sorted(self.tools))
            raise self._bad(f"the model called an unknown tool {name!r} (tools given: {known})")

    def _bare(self, text: str, out: list[StreamChunk]) -> None:
        """A reply that starts like call JSON without its trigger: calls if it is exactly that, else content."""
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        items = value if isinstance(value, list) and value else [value]
        if not all(self._is_call(item) for item in items):
            self._content(text, out)
            return
        for item in items:  # each call's own JSON text, for its argument deltas
            scan = _CallScan(("parameters", "arguments"))
            for char in json.dumps(item, ensure_ascii=False):
                scan.feed(char)
            self._finish_call(scan, out)

    def _is_call(self, value: Any) -> bool:
        if not isinstance(value, dict) or value.get("name") not in self.tools:
            return False
        return isinstance(value.get("parameters", value.get("arguments", {})), dict)

    def _bad(self, message: str) -> BadResponseError:
        return BadResponseError(message, provider=self.provider)


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of `text` that is a proper start of `marker`."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def _merged(chunks: list[StreamChunk]) -> list[StreamChunk]:
    """Adjacent content chunks joined (one feed's text is one chunk)."""
    out: list[StreamChunk] = []
    for chunk in chunks:
        if isinstance(chunk, ContentChunk) and out and isinstance(out[-1], ContentChunk):
            previous: Any = out[-1]
            out[-1] = ContentChunk(text=previous.text + chunk.text)
        else:
            out.append(chunk)
    return out
