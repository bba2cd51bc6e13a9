"""Chat templates: messages -> prompt text, plus the end-of-turn tokens that stop generation.

By default the tokenizer's own `chat_template` renders the prompt. An explicit `chat_template`
("chatml", "llama3", "mistral", "phi3", "raw" — zeph-llm's set) overrides it with a Python
formatter. The local backend has no native tools, so tool calls and tool results are rendered as
plain text in the conversation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from zeph_providers.errors import InvalidRequestError
from zeph_providers.types import Message, Role, TextPart, ToolResultPart, ToolUsePart

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

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text, ending where the assistant's reply begins."""
        turns = to_turns(messages)
        if self._builtin is not None:
            return self._builtin.render(turns)
        conversation = [{"role": role, "content": text} for role, text in turns]
        try:
            if self._tokenizer is None and self.source is not None:
                from transformers.utils.chat_template_utils import render_jinja_template

                render: Any = render_jinja_template
                specials: dict[str, Any] = dict(self.special_tokens)
                rendered, _ = render(  # (one text per conversation, generation indices)
                    [conversation], chat_template=self.source, add_generation_prompt=True, **specials
                )
                return str(rendered[0])
            text = self._tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja errors: e.g. a template that insists on alternating roles
            raise InvalidRequestError(f"the model's chat template rejected the conversation: {exc}") from exc
        return str(text)


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
