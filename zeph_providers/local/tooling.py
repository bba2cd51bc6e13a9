"""Tools and structured output for the local backend: render a request, and read the reply back.

`prepare(template, messages, params)` is what both engines call on the worker thread: it renders
the conversation through the chat template and decides the `Constraint` the reply is decoded under
(a JSON schema for `response_format`; tool calls come with the tool-call syntax work). Engines only
decode; the provider parses the text stream back into content and tool calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from zeph_providers.local.engine import Constraint, GenerationParams, Prepared

if TYPE_CHECKING:
    from zeph_providers.local.templates import ChatTemplate
    from zeph_providers.types import Message

__all__ = ["prepare"]


def prepare(template: ChatTemplate, messages: Sequence[Message], params: GenerationParams) -> Prepared:
    """The prompt for `messages` under `template`, with the constraint `params` asks for."""
    prompt = template.render(messages)
    constraint = Constraint(params.schema) if params.schema is not None else None
    return Prepared(prompt=prompt, constraint=constraint, add_special_tokens=template.add_special_tokens)
