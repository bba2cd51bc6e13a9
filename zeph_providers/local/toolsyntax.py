"""Tool-call syntaxes of the local backend: how a model family writes a call, and how it is shown one.

A `ToolSyntax` is data plus text helpers, shared by `templates` (rendering tools, past calls and
tool results as text when the chat template has no native tool support) and `tooling` (the
constraint a call is decoded under, and parsing the reply). Three families:

- `HERMES` (Hermes, Qwen2.5, and the default for templates without tool support such as
  SmolLM2's ChatML): `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, one block per
  call (parallel calls: several blocks); tool results go back as `<tool_response>...</tool_response>`
  in a user turn (Qwen2.5's own template does the same).
- `LLAMA3` (Llama 3.1 JSON tool calling): `{"name": ..., "parameters": {...}}`, optionally after
  `<|python_tag|>` (the lazy-grammar trigger); a reply that is such a JSON object is a call too.
  Tool results are an `ipython` turn.
- `MISTRAL`: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` (parallel: the list);
  results are `[TOOL_RESULTS]{"call_id": ..., "content": ...}[/TOOL_RESULTS]` in a user turn. A
  reply that is such a list without the (special, often undecoded) `[TOOL_CALLS]` is read as calls.

`detect_syntax(name, source)` picks one from the template's Jinja source (its own call markup),
or from the builtin formatter's name (llama3, mistral); everything else is Hermes.

The constrained span of a call (`span_schema`) is one JSON value: a call object
`{"name": {"const": tool}, "<args key>": <the tool's parameters schema>}` with both keys required
and listed name first (grammar engines generate properties in schema order, which lets the
parser stream the arguments as soon as the name is known), `anyOf` such objects for several
tools, and for Mistral an array of them. `$defs` of tool schemas (pydantic models) are hoisted to
the span's root so their `#/$defs/...` references still resolve.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zeph_providers.errors import InvalidRequestError

if TYPE_CHECKING:
    from zeph_providers.types import ToolDefinition, ToolResultPart, ToolUsePart

__all__ = ["HERMES", "LLAMA3", "MISTRAL", "SYNTAXES", "ToolSyntax", "detect_syntax", "openai_tools"]


def openai_tools(tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    """Tools in the OpenAI shape chat templates expect (`{"type": "function", "function": {...}}`)."""
    return [
        {
            "type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
        }
        for tool in tools
    ]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class ToolSyntax:
    """One family's tool-call markup; see the module docstring."""

    name: str
    trigger: str
    """The text that starts a call (the lazy grammar's trigger)."""
    prefill: str
    """Put at the start of the reply for a forced call: the constrained value follows it."""
    closer: str = ""
    """Text that ends one call block (Hermes' `</tool_call>`), consumed when present."""
    is_list: bool = False
    """The span is a JSON list of calls (Mistral)."""
    args_key: str = "arguments"
    """The key the arguments are written under (Llama 3: "parameters"); "arguments" is also read."""
    bare_json: str = ""
    """A reply that starts with this character and is complete call JSON is a call without its trigger
    (Llama 3 writes calls bare; engines that drop special tokens drop `<|python_tag|>`, `[TOOL_CALLS]`)."""
    result_role: str = "user"
    """The role tool results are spoken in when rendered as text."""

    # ----- the constrained span ---------------------------------------------------------------

    def span_schema(self, tools: Sequence[ToolDefinition]) -> dict[str, Any]:
        """The JSON schema of one constrained span calling any of `tools` (one tool: exactly it)."""
        if not tools:
            raise InvalidRequestError("a tool-call constraint needs at least one tool")
        defs: dict[str, dict[str, Any]] = {"$defs": {}, "definitions": {}}
        calls = [self._call_schema(tool, defs) for tool in tools]
        one: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
        schema: dict[str, Any] = {"type": "array", "items": one, "minItems": 1} if self.is_list else dict(one)
        schema.update({key: found for key, found in defs.items() if found})
        return schema

    def _call_schema(self, tool: ToolDefinition, defs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        parameters = dict(tool.parameters) if tool.parameters else {"type": "object", "properties": {}}
        for key, merged in defs.items():  # references say #/$defs/... (or #/definitions/...): hoist to the root
            hoisted = parameters.pop(key, None)
            if not isinstance(hoisted, dict):
                continue
            for name, value in hoisted.items():
                if name in merged and merged[name] != value:
                    raise InvalidRequestError(
                        f"tools define two different schemas named {name!r} in {key}; the local backend "
                        "merges tool schemas into one grammar, so rename one of them"
                    )
                merged[name] = value
        parameters.setdefault("type", "object")
        return {
            "type": "object",
            "properties": {"name": {"const": tool.name}, self.args_key: parameters},
            "required": ["name", self.args_key],
            "additionalProperties": False,
        }

    # ----- text forms (templates without native tool support) ----------------------------------

    def instructions(self, tools: Sequence[ToolDefinition]) -> str:
        """The system-prompt text that lists `tools` and says how to call them."""
        listed = openai_tools(tools)
        if self.name == "llama3":
            body = "\n\n".join(_dumps(tool) for tool in listed)
            return (
                "You have access to the following functions. To call a function, respond with "
                "<|python_tag|> followed by a JSON object in the format "
                '{"name": function name, "parameters": dictionary of argument name and its value}. '
                "Do not use variables.\n\n" + body
            )
        if self.name == "mistral":
            return (
                f"[AVAILABLE_TOOLS]{_dumps(listed)}[/AVAILABLE_TOOLS]\n"
                "To call one or more tools, reply with [TOOL_CALLS] followed by a JSON list of "
                '{"name": <function-name>, "arguments": <args-json-object>} objects.'
            )
        body = "\n".join(_dumps(tool) for tool in listed)
        return (
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n"
            f"<tools>\n{body}\n</tools>\n\n"
            "For each function call, return a json object with function name and arguments within "
            "<tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
        )

    def calls_text(self, calls: Sequence[ToolUsePart]) -> str:
        """Past tool calls as the model itself would have written them."""
        if self.name == "mistral":
            listed = [{"name": call.name, "arguments": call.arguments, "id": call.id} for call in calls]
            return f"[TOOL_CALLS]{_dumps(listed)}"
        if self.name == "llama3":
            return "\n".join(
                f"<|python_tag|>{_dumps({'name': call.name, 'parameters': call.arguments})}" for call in calls
            )
        return "\n".join(
            f"<tool_call>\n{_dumps({'name': call.name, 'arguments': call.arguments})}\n</tool_call>" for call in calls
        )

    def results_text(self, results: Sequence[ToolResultPart]) -> str:
        """Tool results as the turn's text (spoken in `result_role`)."""
        if self.name == "mistral":
            return "".join(
                f"[TOOL_RESULTS]{_dumps({'call_id': r.tool_call_id, 'content': r.content})}[/TOOL_RESULTS]"
                for r in results
            )
        if self.name == "llama3":
            return "\n".join(r.content for r in results)
        return "\n".join(f"<tool_response>\n{r.content}\n</tool_response>" for r in results)


HERMES = ToolSyntax("hermes", trigger="<tool_call>", prefill="<tool_call>\n", closer="</tool_call>")
LLAMA3 = ToolSyntax(
    "llama3", trigger="<|python_tag|>", prefill="", args_key="parameters", bare_json="{", result_role="ipython"
)
MISTRAL = ToolSyntax("mistral", trigger="[TOOL_CALLS]", prefill="[TOOL_CALLS]", is_list=True, bare_json="[")
SYNTAXES: dict[str, ToolSyntax] = {s.name: s for s in (HERMES, LLAMA3, MISTRAL)}


def detect_syntax(name: str, source: str | None) -> ToolSyntax:
    """The syntax a template's model writes calls in: from its Jinja `source`, else its builtin `name`."""
    if source:
        if "[TOOL_CALLS]" in source:
            return MISTRAL
        if "<tool_call>" in source:
            return HERMES
        if "<|python_tag|>" in source or "<|start_header_id|>" in source:
            return LLAMA3
        return HERMES
    return {"llama3": LLAMA3, "mistral": MISTRAL}.get(name, HERMES)
