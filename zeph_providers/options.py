"""The request contract: what a caller may ask of one call, in one place.

`ChatKwargs` lists the per-call keywords once; `chat()`, `chat_stream()` (async and blocking) take
them as `**kwargs: Unpack[ChatKwargs]`. `ChatOptions` is the same set, normalised, plus the one
monotonic `deadline` computed when the call starts: the stream, the retry loop, the SDK timeouts and
the router all read that one value.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypedDict

from zeph_providers.types import CacheSettings, ToolDefinition

__all__ = ["PROVIDER_OPTIONS", "Capabilities", "ChatKwargs", "ChatOptions", "ReasoningEffort", "ResponseFormat"]

ResponseFormat = dict[str, Any] | type[Any]
"""A JSON schema dict, or a pydantic model class whose schema is sent and which parses the reply."""

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
"""How hard a reasoning model thinks (OpenAI's `reasoning_effort` values; models take a subset)."""

PROVIDER_OPTIONS = ("reasoning_effort", "parallel_tool_calls", "logprobs", "top_logprobs")
"""Typed per-call options only some backends honour: a backend lists those it does in
`BaseProvider.accepted_options`, and any other one, when set, is refused with a typed error."""


@dataclass(frozen=True)
class Capabilities:
    streaming: bool = True
    embeddings: bool = False
    tools: bool = False
    vision: bool = False
    structured_output: bool = False
    thinking: bool = False
    documents: bool = False
    """Accepts `DocumentPart`s (Claude; OpenAI's file input); others refuse them."""

    def names(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name)]


class ChatKwargs(TypedDict, total=False):
    """The per-call keywords of `chat()` / `chat_stream()`; every one is optional."""

    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    seed: int | None
    stop: Sequence[str] | str | None
    tools: Sequence[ToolDefinition] | None
    tool_choice: str | None
    """"auto", "none", "required", or the name of one tool to force."""
    response_format: ResponseFormat | None
    timeout: float | None
    """Seconds for the whole call, stream included, across retries and router members."""
    extra: dict[str, Any] | None
    """Backend-specific values (e.g. `repeat_penalty` for the local backend)."""
    reasoning_effort: ReasoningEffort | None
    """Reasoning effort for reasoning models (OpenAI); refused by backends without it."""
    parallel_tool_calls: bool | None
    """Whether the model may call several tools in one turn (OpenAI); None: the API's default."""
    logprobs: bool | None
    """Return per-token log probabilities in `ChatResponse.logprobs` (OpenAI and compatible)."""
    top_logprobs: int | None
    """With `logprobs`, also this many most likely alternatives per token (0-20)."""
    cache: CacheSettings | bool | None
    """Prompt caching for this call (Claude; see `CacheSettings`); None: the provider's config.
    `cache=False` means "no caching" everywhere: it also bypasses the response cache (on every
    backend, which take it without complaint)."""
    response_cache: bool | None
    """The response cache for this call (`zeph_providers.cache`): False bypasses it (no lookup, no
    store); None or True use the provider's `[llm.providers.response_cache]` (True on a provider
    without one is refused)."""
    structured_retries: int | None
    """`chat()` only: re-asks after a reply that does not match `response_format` (None: the
    provider's `structured_retries`, default 1; 0: none). See `zeph_providers.structured`."""


_KWARG_NAMES = frozenset(ChatKwargs.__annotations__)


@dataclass(frozen=True)
class ChatOptions:
    """Per-call options; `None` means "use the provider's configured default"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[ToolDefinition, ...] = ()
    tool_choice: str | None = None
    """"auto", "none", "required", or the name of one tool to force."""
    response_format: ResponseFormat | None = None
    timeout: float | None = None
    """Seconds for the whole call, stream included, across retries."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend-specific values (e.g. `repeat_penalty` for the local backend)."""
    reasoning_effort: ReasoningEffort | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    cache: CacheSettings | bool | None = None
    """Prompt caching for this call (Claude); None: the provider's configured default. False also
    bypasses the response cache."""
    response_cache: bool | None = None
    """False bypasses the response cache for this call; None/True use it where configured."""
    structured_retries: int | None = None
    """Re-asks after a reply that does not match `response_format` (None: the provider's default)."""
    stream: bool = True
    """Whether the caller consumes a stream. `chat()` sets it to False; a backend may then make one
    non-streamed request, provided it yields the same chunk vocabulary (so the assembled reply is
    the same). Backends that cannot ignore it."""
    deadline: float | None = None
    """The call's deadline as a `time.monotonic()` value, computed once when the call is opened
    (`timeout` seconds from then). Everything that waits on the call's behalf reads this value."""

    @classmethod
    def from_kwargs(cls, kwargs: ChatKwargs, *, stream: bool = True) -> ChatOptions:
        """Normalise the public keywords (a bare `stop` string, `None` sequences)."""
        unknown = set(kwargs) - _KWARG_NAMES
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
        stop = kwargs.get("stop")
        return cls(
            max_tokens=kwargs.get("max_tokens"),
            temperature=kwargs.get("temperature"),
            top_p=kwargs.get("top_p"),
            top_k=kwargs.get("top_k"),
            seed=kwargs.get("seed"),
            stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
            tools=tuple(kwargs.get("tools") or ()),
            tool_choice=kwargs.get("tool_choice"),
            response_format=kwargs.get("response_format"),
            timeout=kwargs.get("timeout"),
            extra=dict(kwargs.get("extra") or {}),
            reasoning_effort=kwargs.get("reasoning_effort"),
            parallel_tool_calls=kwargs.get("parallel_tool_calls"),
            logprobs=kwargs.get("logprobs"),
            top_logprobs=kwargs.get("top_logprobs"),
            cache=kwargs.get("cache"),
            response_cache=kwargs.get("response_cache"),
            structured_retries=kwargs.get("structured_retries"),
            stream=stream,
        )

    def to_kwargs(self) -> ChatKwargs:
        """The public keywords these options stand for (what a `chat_stream()` call would take)."""
        return ChatKwargs(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
            stop=list(self.stop),
            tools=list(self.tools),
            tool_choice=self.tool_choice,
            response_format=self.response_format,
            timeout=self.timeout,
            extra=dict(self.extra),
            reasoning_effort=self.reasoning_effort,
            parallel_tool_calls=self.parallel_tool_calls,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs,
            cache=self.cache,
            response_cache=self.response_cache,
            structured_retries=self.structured_retries,
        )

    def started(self, default_timeout: float | None = None, *, now: float | None = None) -> ChatOptions:
        """These options with the call's deadline fixed (once): an existing deadline is kept.

        A `None` timeout takes `default_timeout`.
        """
        options = self
        if options.timeout is None and default_timeout is not None:
            options = replace(options, timeout=default_timeout)
        if options.deadline is None and options.timeout is not None:
            start = time.monotonic() if now is None else now
            options = replace(options, deadline=start + options.timeout)
        return options

    def within(self, timeout: float | None) -> ChatOptions:
        """These options for a sub-call capped at `timeout` seconds from now (a router member's own
        timeout): the deadline becomes the earlier of the two; the call's own deadline never moves."""
        if timeout is None:
            return self
        cap = time.monotonic() + timeout
        if self.deadline is not None and self.deadline <= cap:
            return self
        return replace(self, deadline=cap, timeout=timeout if self.timeout is None else min(self.timeout, timeout))

    def remaining(self) -> float | None:
        """Seconds left before the deadline (negative once passed), or None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def json_schema(self) -> dict[str, Any] | None:
        """The response_format as a JSON schema dict (pydantic classes converted)."""
        fmt = self.response_format
        if fmt is None:
            return None
        if isinstance(fmt, dict):
            return fmt
        schema = fmt.model_json_schema()
        return dict(schema)

    def schema_name(self) -> str:
        fmt = self.response_format
        if isinstance(fmt, type):
            return fmt.__name__
        if isinstance(fmt, dict):
            return str(fmt.get("title") or "response")
        return "response"

    def provider_options(self) -> list[str]:
        """The names of the `PROVIDER_OPTIONS` these options set (what a backend must honour or refuse)."""
        return [name for name in PROVIDER_OPTIONS if getattr(self, name) is not None]

    @property
    def bypasses_response_cache(self) -> bool:
        """Whether this call skips the response cache: `response_cache=False` or `cache=False`."""
        return self.response_cache is False or self.cache is False

    def with_changes(self, **changes: Any) -> ChatOptions:
        return replace(self, **changes)
