"""Messages, tool definitions, responses and stream chunks shared by every backend.

Everything here is a pydantic model so messages and responses round-trip through JSON
(`model_dump_json()` / `model_validate_json()`), including image bytes (base64 in JSON).

Layout: roles and message parts, messages and tool definitions, `ChatResponse`, then the stream
chunks and the "tool call" aliases. The reply's metadata that depends on nothing else here
(`Usage`, `FinishReason`, `TopLogprob` / `TokenLogprob`, `Attempt`) and the frozen base model
live in `_types_reply`, `ToolDefinition` (and `from_function`) in `_tooldef`; both are
re-exported: import them from here, as before.
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from zeph_providers._tooldef import ToolDefinition
from zeph_providers._types_reply import Attempt, FinishReason, TokenLogprob, TopLogprob, Usage
from zeph_providers._types_reply import Frozen as _Frozen
from zeph_providers.errors import InvalidRequestError, clip

__all__ = [
    "Attempt",
    "CachePointPart",
    "CacheSettings",
    "CacheTTL",
    "ChatResponse",
    "ContentChunk",
    "DocumentPart",
    "EndChunk",
    "FinishReason",
    "ImagePart",
    "LogprobsChunk",
    "Message",
    "MessageInput",
    "MessageLike",
    "Part",
    "RedactedThinkingChunk",
    "RedactedThinkingPart",
    "Role",
    "StreamChunk",
    "TextChunk",
    "TextPart",
    "ThinkingChunk",
    "ThinkingPart",
    "ToolCall",
    "ToolCallChunk",
    "ToolCallDeltaChunk",
    "ToolCallPart",
    "ToolDefinition",
    "ToolResultPart",
    "ToolUseChunk",
    "ToolUsePart",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
    "UsageChunk",
]


class Role(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class TextPart(_Frozen):
    type: Literal["text"] = "text"
    text: str


class ImagePart(_Frozen):
    """Raw image bytes; each backend encodes them (base64) in its API's shape."""

    type: Literal["image"] = "image"
    data: bytes
    mime_type: str = "image/png"

    @field_validator("data", mode="before")
    @classmethod
    def _decode_base64(cls, value: Any) -> Any:
        # JSON carries bytes as base64 text; accept that on the way back in.
        if isinstance(value, str):
            return base64.b64decode(value)
        return value

    @field_serializer("data", when_used="json")
    def _encode_base64(self, value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    @property
    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


class ToolUsePart(_Frozen):
    """A tool call the assistant made, kept in history so the next turn can answer it."""

    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolResultPart(_Frozen):
    type: Literal["tool_result"] = "tool_result"
    tool_call_id: str
    content: str
    is_error: bool = False


class ThinkingPart(_Frozen):
    type: Literal["thinking"] = "thinking"
    text: str
    signature: str | None = None


# ----- Claude-born parts (issue 12): redacted thinking, cache points, documents -------------------

CacheTTL = Literal["5m", "1h"]
"""A prompt-cache entry's lifetime (Anthropic's `cache_control.ttl`)."""


class RedactedThinkingPart(_Frozen):
    """A thinking block the API returned encrypted (Claude's `redacted_thinking`): opaque `data`,
    sent back unchanged next turn. Backends other than Claude leave it out of their requests (their
    APIs have no such block; it is Anthropic's ciphertext)."""

    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str


class CachePointPart(_Frozen):
    """A prompt-cache breakpoint: the content up to the part before it is cached (Claude's
    `cache_control` on the preceding block). `ttl` None takes the call's `CacheSettings.ttl` ("5m"
    without one). OpenAI caches prompts automatically and the local backend and Ollama keep their
    own KV cache, so there a cache point is a documented no-op, not an error."""

    type: Literal["cache_point"] = "cache_point"
    ttl: CacheTTL | None = None


class DocumentPart(_Frozen):
    """A document for the model to read: PDF (or other) bytes in `data`, or plain `text`, with an
    optional `title`. Exactly one of `data` / `text`. Backends without document input (capability
    `documents`) refuse it with `UnsupportedCapabilityError`."""

    type: Literal["document"] = "document"
    data: bytes | None = None
    text: str | None = None
    mime_type: str = "application/pdf"
    """The type of `data`; a `text` document is "text/plain"."""
    title: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, values: Any) -> Any:
        if isinstance(values, dict):
            data, text = values.get("data"), values.get("text")
            if (data is None) == (text is None):
                raise ValueError("a DocumentPart takes exactly one of `data` (bytes) or `text`")
            if text is not None and "mime_type" not in values:
                values = {**values, "mime_type": "text/plain"}
            if isinstance(data, str):  # JSON carries bytes as base64 text
                values = {**values, "data": base64.b64decode(data)}
        return values

    @field_serializer("data", when_used="json")
    def _encode_base64(self, value: bytes | None) -> str | None:
        return None if value is None else base64.b64encode(value).decode("ascii")

    @property
    def base64(self) -> str:
        return base64.b64encode(self.data or b"").decode("ascii")


class CacheSettings(_Frozen):
    """Prompt caching for a call (`cache=` per call, or `cache` in a Claude provider's config).

    `automatic` sends Anthropic's top-level `cache_control` (the API puts the breakpoint on the last
    cacheable block, so a growing conversation keeps hitting its cache); `system` and `tools` mark
    the system prompt and the tool definitions; `CachePointPart`s mark any message. Each uses one of
    the API's 4 breakpoints. `cache=True` is `CacheSettings()`; `cache=False` sends no breakpoint of
    its own (explicit `CachePointPart`s in messages still count: they are part of the request).
    """

    automatic: bool = True
    system: bool = False
    tools: bool = False
    ttl: CacheTTL = "5m"


Part = Annotated[
    TextPart
    | ImagePart
    | ToolUsePart
    | ToolResultPart
    | ThinkingPart  # (the original five)
    | RedactedThinkingPart
    | CachePointPart
    | DocumentPart,  # issue 12
    Field(discriminator="type"),
]


PART_TYPES = (
    TextPart,
    ImagePart,
    ToolUsePart,
    ToolResultPart,
    ThinkingPart,
    RedactedThinkingPart,
    CachePointPart,
    DocumentPart,
)
"""The classes of `Part`, for run-time checks."""


def _need(value: object, kind: type | tuple[type, ...], what: str) -> None:
    """A builder's argument check: a typed error (also a ValueError) rather than pydantic's."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidRequestError(f"{what}; got {type(value).__name__} {clip(repr(value), 80)}")


class ToolCall(_Frozen):
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    def to_part(self) -> ToolUsePart:
        return ToolUsePart(id=self.id, name=self.name, arguments=self.arguments)


class Message(_Frozen):
    role: Role
    parts: tuple[Part, ...] = ()

    @classmethod
    def system(cls, text: str) -> Message:
        _need(text, str, "Message.system() takes the prompt as a str")
        return cls(role=Role.SYSTEM, parts=(TextPart(text=text),))

    @classmethod
    def user(cls, text: str = "", *, images: Sequence[ImagePart] | None = None) -> Message:
        _need(text, str, "Message.user() takes the text as a str")
        parts: list[Part] = [TextPart(text=text)] if text else []
        for image in images or ():
            _need(image, ImagePart, "Message.user(images=...) takes ImageParts")
            parts.append(image)
        return cls(role=Role.USER, parts=tuple(parts))

    @classmethod
    def assistant(
        cls,
        text: str = "",
        *,
        tool_calls: Sequence[ToolCall] | None = None,
        thinking: str | None = None,
    ) -> Message:
        _need(text, str, "Message.assistant() takes the text as a str")
        if thinking is not None:
            _need(thinking, str, "Message.assistant(thinking=...) takes a str")
        parts: list[Part] = []
        if thinking:
            parts.append(ThinkingPart(text=thinking))
        if text:
            parts.append(TextPart(text=text))
        for call in tool_calls or ():
            _need(call, ToolCall, "Message.assistant(tool_calls=...) takes ToolCalls")
            parts.append(call.to_part())
        return cls(role=Role.ASSISTANT, parts=tuple(parts))

    @classmethod
    def tool_result(cls, tool_call_id: str, content: str | Any, *, is_error: bool = False) -> Message:
        """The answer to one tool call; non-string content is sent as JSON."""
        _need(tool_call_id, str, "Message.tool_result() takes the call's id as a str")
        _need(is_error, bool, "Message.tool_result(is_error=...) takes a bool")
        if isinstance(content, str):
            text = content
        else:
            try:
                text = json.dumps(content)
            except (TypeError, ValueError) as exc:
                raise InvalidRequestError(
                    f"Message.tool_result(): content must be a str or JSON-serialisable ({exc})"
                ) from None
        return cls(
            role=Role.TOOL,
            parts=(ToolResultPart(tool_call_id=tool_call_id, content=text, is_error=is_error),),
        )

    @property
    def text(self) -> str:
        return "".join(part.text for part in self.parts if isinstance(part, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        return [part for part in self.parts if isinstance(part, ImagePart)]

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [ToolCall(id=p.id, name=p.name, arguments=p.arguments) for p in self.parts if isinstance(p, ToolUsePart)]

    @property
    def tool_results(self) -> list[ToolResultPart]:
        return [part for part in self.parts if isinstance(part, ToolResultPart)]


_NOT_COMPARED = frozenset({"attempts", "cost", "cached"})


class ChatResponse(BaseModel):
    """One complete assistant reply; `stream.response` and `chat()` return equal ones."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    thinking: str = ""
    thinking_signature: str | None = None
    """Claude's signature over the thinking text, needed to send the thinking back next turn."""
    usage: Usage = Field(default_factory=Usage)
    finish_reason: FinishReason = "stop"
    model: str = ""
    provider: str = ""
    logprobs: list[TokenLogprob] | None = None
    """Per-token log probabilities of `text`, when asked for (`logprobs=True`); None otherwise."""
    thinking_blocks: list[ThinkingPart | RedactedThinkingPart] = Field(default_factory=list)
    """Every thinking block of the reply, in order, each with its own signature (Claude:
    `thinking` and `redacted_thinking` blocks). Empty when the backend streams thinking as one run
    of text (`thinking` holds it then). `thinking` is these blocks' text joined, `thinking_signature`
    the last signature."""
    stop_sequence: str | None = None
    """The stop sequence that ended the reply, when the API says which (Claude)."""
    parsed: Any = Field(default=None, exclude=True)
    """The structured-output object when `response_format` was given (not serialised)."""
    attempts: list[Attempt] = Field(default_factory=list)
    """Every try made to produce this reply (retries and router fallbacks), in order; the last one
    answered. Not part of equality: two equal replies may have taken different paths."""
    cost: float | None = None
    """What the call cost in USD, when its price is known (`zeph_providers.pricing`); None when
    unknown, never a guessed zero. Not part of equality."""
    cached: bool = False
    """True when the reply was replayed from the response cache (`zeph_providers.cache`): the same
    chunks as the reply that was stored, so the same text, tool calls and usage; its `cost` is 0.0
    (nothing was paid for it). Not part of equality: a replayed reply equals the one it replays."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChatResponse):
            return NotImplemented
        mine = {k: v for k, v in self.__dict__.items() if k not in _NOT_COMPARED}
        theirs = {k: v for k, v in other.__dict__.items() if k not in _NOT_COMPARED}
        return mine == theirs

    def to_message(self) -> Message:
        """The reply as an assistant message, to append to the conversation."""
        parts: list[Part] = []
        if self.thinking_blocks:  # every block, in order, signed ones with empty text included
            parts.extend(self.thinking_blocks)
        elif self.thinking or self.thinking_signature:  # a signed block with empty text must go back too
            parts.append(ThinkingPart(text=self.thinking, signature=self.thinking_signature))
        if self.text:
            parts.append(TextPart(text=self.text))
        parts.extend(call.to_part() for call in self.tool_calls)
        return Message(role=Role.ASSISTANT, parts=tuple(parts))


class ContentChunk(_Frozen):
    type: Literal["content"] = "content"
    text: str


class ThinkingChunk(_Frozen):
    type: Literal["thinking"] = "thinking"
    text: str
    signature: str | None = None
    block: int | None = None
    """Which thinking block this piece belongs to (Claude: the content block index): a new value
    starts a new block in `ChatResponse.thinking_blocks`. None: one undivided run of thinking."""


class RedactedThinkingChunk(_Frozen):
    """A whole `redacted_thinking` block (Claude): opaque data to send back, nothing to show."""

    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str
    block: int | None = None


class ToolUseChunk(_Frozen):
    """A complete tool call, emitted once its streamed fragments are reassembled."""

    type: Literal["tool_use"] = "tool_use"
    tool_call: ToolCall


class ToolCallDeltaChunk(_Frozen):
    """A piece of a tool call while it streams: which call (`index`), and the new argument text.

    The first delta of a call carries its `name` (and its `id` when the API sends one early);
    later ones carry only argument fragments. The complete `ToolUseChunk` still arrives when the
    call ends, and the assembler ignores deltas, so `stream.response == await chat()` holds. The
    `arguments` fragments of one call, concatenated, are its final arguments as JSON text (the
    text the model or API produced; `json.loads` of it equals `ToolCall.arguments`).
    """

    type: Literal["tool_call_delta"] = "tool_call_delta"
    index: int
    """The call's position among this reply's tool calls (0-based, in the order they start)."""
    id: str = ""
    name: str = ""
    arguments: str = ""


class LogprobsChunk(_Frozen):
    """Log probabilities of the tokens of the text delivered so far (in order), when asked for."""

    type: Literal["logprobs"] = "logprobs"
    tokens: tuple[TokenLogprob, ...]


class UsageChunk(_Frozen):
    """Token counts, emitted exactly once per response."""

    type: Literal["usage"] = "usage"
    usage: Usage


class EndChunk(_Frozen):
    type: Literal["end"] = "end"
    finish_reason: FinishReason = "stop"
    model: str = ""
    provider: str | None = None
    """The provider that actually answered, when not the stream's own (a router names its member)."""
    stop_sequence: str | None = None
    """The stop sequence that ended the reply, when the API says which (Claude)."""


StreamChunk = Annotated[
    ContentChunk
    | ThinkingChunk
    | ToolUseChunk
    | ToolCallDeltaChunk
    | UsageChunk
    | EndChunk
    | RedactedThinkingChunk
    | LogprobsChunk,
    Field(discriminator="type"),
]


MessageLike: TypeAlias = Message | Mapping[str, Any]
"""One message: a `Message`, or an OpenAI-style dict (`{"role": "user", "content": "..."}`)."""

MessageInput: TypeAlias = str | MessageLike | Sequence[MessageLike]
"""What `chat()` / `chat_stream()` take as `messages`: a str (one user message), one message, or a
list of them (`zeph_providers._inputs` has the rules)."""


# ----- names: one vocabulary -------------------------------------------------------------------
# "Tool call" is the library's word (`resp.tool_calls`, `ToolCall`); the part and chunk classes
# keep the Messages API's "tool use" names for compatibility, with "tool call" aliases. A streamed
# piece of text is `TextChunk` (the same class as `ContentChunk`), as a message's is `TextPart`.
ToolCallPart = ToolUsePart
ToolCallChunk = ToolUseChunk
TextChunk = ContentChunk
