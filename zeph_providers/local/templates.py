"""Chat templates: messages -> prompt text, plus the end-of-turn tokens that stop generation.

By default the tokenizer's own `chat_template` renders the prompt. An explicit `chat_template`
("chatml", "llama3", "mistral", "phi3", "raw" — zeph-llm's set) overrides it with a Python
formatter. Without `tools`, tool calls and tool results in the history are rendered as plain
text in the conversation (byte-identical to before tools existed).

With `render(messages, tools=...)`: a Jinja template that uses `tools` renders natively (the
OpenAI-shaped tool list, assistant turns with `tool_calls` whose arguments are dicts, and "tool"
messages with `tool_call_id`, `name` and `content`); when it rejects those messages (e.g.
Mistral's 9-character call ids) they are retried as text in the syntax's own form, still with
the tool list. Templates without tool support (SmolLM2's ChatML, the builtin formatters) get the
tool list and instructions of the detected `ToolSyntax` in the system prompt (after an existing
system message's text, as Qwen2.5's template does), past calls written as the model would write
them, and tool results as the syntax's text (Hermes: `<tool_response>` blocks in a user turn).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from zeph_providers.errors import InvalidRequestError
from zeph_providers.local.toolsyntax import ToolSyntax, detect_syntax, openai_tools
from zeph_providers.types import Message, Role, TextPart, ToolDefinition, ToolResultPart, ToolUsePart

__all__ = ["END_TOKENS", "TEMPLATES", "ChatTemplate", "eos_token_ids", "message_text", "select_template", "to_turns"]

END_TOKENS: tuple[str, ...] = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "<|endoftext|>",
    "</s>",
    "<end_of_turn>",
)
"""End-of-turn / end-of-text markers recognised in templates and vocabularies."""

Turn = tuple[str, str]
"""(role, text) after flattening parts to text."""


def message_text(message: Message) -> str:
    """A message's content as prompt text: tool calls and results are written out inline."""
    pieces: list[str] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            pieces.append(part.text)
        elif isinstance(part, ToolUsePart):
            pieces.append(f"[tool call {part.id}: {part.name}({json.dumps(part.arguments, sort_keys=True)})]")
        elif isinstance(part, ToolResultPart):
            label = "tool error" if part.is_error else "tool result"
            pieces.append(f"[{label} for {part.tool_call_id}]\n{part.content}")
    return "\n".join(pieces)


def to_turns(messages: Sequence[Message]) -> list[Turn]:
    """(role, text) pairs; tool results are spoken by the user (no template needs a "tool" role)."""
    turns: list[Turn] = []
    for message in messages:
        role = "user" if message.role is Role.TOOL else message.role.value
        turns.append((role, message_text(message)))
    return turns


def _chatml(turns: list[Turn]) -> str:
    body = "".join(f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in turns)
    return body + "<|im_start|>assistant\n"


def _llama3(turns: list[Turn]) -> str:
    body = "".join(f"<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>" for role, text in turns)
    return "<|begin_of_text|>" + body + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def _mistral(turns: list[Turn]) -> str:
    """[INST] blocks; a system prompt is folded into the first user turn (Mistral has no system role)."""
    system = "\n\n".join(text for role, text in turns if role == "system")
    out = ["<s>"]
    first_user = True
    for role, text in turns:
        if role == "system":
            continue
        if role == "assistant":
            out.append(f" {text}</s>")
            continue
        if first_user and system:
            text = f"{system}\n\n{text}"
        first_user = False
        out.append(f"[INST] {text} [/INST]")
    if first_user and system:  # only a system prompt
        out.append(f"[INST] {system} [/INST]")
    return "".join(out)


def _phi3(turns: list[Turn]) -> str:
    body = "".join(f"<|{role}|>\n{text}<|end|>\n" for role, text in turns)
    return body + "<|assistant|>\n"


def _raw(turns: list[Turn]) -> str:
    """No markup: the texts one after another (for base models and completion-style prompts)."""
    return "\n".join(text for _, text in turns)


@dataclass(frozen=True)
class _Builtin:
    render: Callable[[list[Turn]], str]
    end_tokens: tuple[str, ...]
    add_special_tokens: bool = False


TEMPLATES: dict[str, _Builtin] = {
    "chatml": _Builtin(_chatml, ("<|im_end|>", "<|endoftext|>")),
    "llama3": _Builtin(_llama3, ("<|eot_id|>", "<|end_of_text|>")),
    "mistral": _Builtin(_mistral, ("</s>",)),
    "phi3": _Builtin(_phi3, ("<|end|>", "<|endoftext|>")),
    "raw": _Builtin(_raw, (), add_special_tokens=True),
}


@dataclass(frozen=True)
class ChatTemplate:
    """A resolved template for one tokenizer: renders prompts and knows its end tokens."""

    name: str
    end_tokens: tuple[str, ...]
    add_special_tokens: bool
    """Whether encoding the prompt adds the tokenizer's BOS (templates that write it themselves: no)."""
    _tokenizer: Any = None
    _builtin: _Builtin | None = None
    source: str | None = None
    """The Jinja source of the template, when it is one (the tokenizer's or a GGUF file's)."""
    special_tokens: tuple[tuple[str, str], ...] = ()
    """Values the Jinja source may use (bos_token, eos_token), for templates rendered without a tokenizer."""

    @classmethod
    def from_jinja(cls, source: str, *, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
        """A template from Jinja source alone (a GGUF file's `tokenizer.chat_template`), rendered
        with transformers' own Jinja environment, as `apply_chat_template` would."""
        ends = tuple(token for token in END_TOKENS if token in source or token == eos_token)
        specials = (("bos_token", bos_token), ("eos_token", eos_token))
        return cls("gguf", ends, add_special_tokens=False, source=source, special_tokens=specials)

    @property
    def syntax(self) -> ToolSyntax:
        """The tool-call syntax this template's model writes (see `toolsyntax.detect_syntax`)."""
        return detect_syntax(self.name, self.source)

    @property
    def native_tools(self) -> bool:
        """Whether the Jinja source renders a `tools` list itself."""
        return self._builtin is None and self.source is not None and _USES_TOOLS.search(self.source) is not None

    def render(self, messages: Sequence[Message], *, tools: Sequence[ToolDefinition] | None = None) -> str:
        """The prompt text, ending where the assistant's reply begins (`tools`: offered to the model)."""
        if not tools:
            turns = to_turns(messages)
            if self._builtin is not None:
                return self._builtin.render(turns)
            return self._render_jinja([{"role": role, "content": text} for role, text in turns])
        syntax = self.syntax
        if self.native_tools:
            listed = openai_tools(tools)
            try:
                return self._render_jinja(_native_conversation(messages), tools=listed)
            except InvalidRequestError:  # e.g. call ids the template refuses: the same turns as text
                return self._render_jinja(_text_conversation(messages, syntax), tools=listed)
        conversation = _text_conversation(messages, syntax, instructions=syntax.instructions(tools))
        if self._builtin is not None:
            return self._builtin.render([(turn["role"], turn["content"]) for turn in conversation])
        return self._render_jinja(conversation)

    def _render_jinja(self, conversation: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None) -> str:
        extra: dict[str, Any] = {"tools": tools} if tools is not None else {}
        try:
            if self._tokenizer is None and self.source is not None:
                from transformers.utils.chat_template_utils import render_jinja_template

                render: Any = render_jinja_template
                specials: dict[str, Any] = dict(self.special_tokens)
                rendered, _ = render(  # (one text per conversation, generation indices)
                    [conversation], chat_template=self.source, add_generation_prompt=True, **extra, **specials
                )
                return str(rendered[0])
            text = self._tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True, **extra
            )
        except Exception as exc:  # jinja errors: e.g. a template that insists on alternating roles
            raise InvalidRequestError(f"the model's chat template rejected the conversation: {exc}") from exc
        return str(text)


_USES_TOOLS = re.compile(r"\btools\b")


def _texts(message: Message) -> str:
    return "\n".join(part.text for part in message.parts if isinstance(part, TextPart))


def _native_conversation(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages as OpenAI-style dicts for a template with native tool support."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        calls = [part for part in message.parts if isinstance(part, ToolUsePart)]
        results = [part for part in message.parts if isinstance(part, ToolResultPart)]
        if message.role is Role.TOOL or results:
            for result in results:
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": result.tool_call_id,
                        "name": names.get(result.tool_call_id, ""),
                        "content": result.content,
                    }
                )
            continue
        turn: dict[str, Any] = {"role": message.role.value, "content": _texts(message)}
        if calls:
            turn["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": dict(c.arguments)}}
                for c in calls
            ]
            names.update((c.id, c.name) for c in calls)
        out.append(turn)
    return out


def _text_conversation(
    messages: Sequence[Message], syntax: ToolSyntax, *, instructions: str | None = None
) -> list[dict[str, Any]]:
    """Messages as plain role/content turns, tool calls and results in `syntax`'s text form.

    `instructions` (the tool list) ends the system prompt, merged with an existing system message.
    Consecutive tool results share one turn (parallel calls answered together).
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        results = [part for part in message.parts if isinstance(part, ToolResultPart)]
        if message.role is Role.TOOL or results:
            text = syntax.results_text(results)
            if out and out[-1].get("_results"):
                out[-1]["content"] += "\n" + text
            else:
                out.append({"role": syntax.result_role, "content": text, "_results": True})
            continue
        calls = [part for part in message.parts if isinstance(part, ToolUsePart)]
        text = "\n".join(piece for piece in (_texts(message), syntax.calls_text(calls) if calls else "") if piece)
        out.append({"role": message.role.value, "content": text})
    for turn in out:
        turn.pop("_results", None)
    if instructions is not None:
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{instructions}" if out[0]["content"] else instructions
        else:
            out.insert(0, {"role": "system", "content": instructions})
    return out


def select_template(name: str, tokenizer: Any) -> ChatTemplate:
    """The template to use: `name` if explicit, else the tokenizer's own (ChatML when it has none)."""
    if name == "auto":
        own = getattr(tokenizer, "chat_template", None)
        if isinstance(own, str) and own:
            ends = tuple(token for token in END_TOKENS if token in own)
            return ChatTemplate("tokenizer", ends, add_special_tokens=False, _tokenizer=tokenizer, source=own)
        name = "chatml"
    builtin = TEMPLATES.get(name)
    if builtin is None:
        raise ValueError(f"unknown chat template {name!r}; known: auto, {', '.join(TEMPLATES)}")
    return ChatTemplate(name, builtin.end_tokens, builtin.add_special_tokens, _tokenizer=tokenizer, _builtin=builtin)


def eos_token_ids(tokenizer: Any, template: ChatTemplate, generation_config: Any = None) -> list[int]:
    """Token ids that end a reply: the tokenizer's eos, the model's configured eos, the template's end tokens."""
    ids: list[int] = []

    def add(value: Any) -> None:
        if isinstance(value, int) and value >= 0 and value not in ids:
            ids.append(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                add(item)

    add(getattr(tokenizer, "eos_token_id", None))
    if generation_config is not None:
        add(getattr(generation_config, "eos_token_id", None))
    unk = getattr(tokenizer, "unk_token_id", None)
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    for token in template.end_tokens:
        token_id = vocab.get(token)
        if isinstance(token_id, int) and token_id != unk:
            add(token_id)
    return ids
