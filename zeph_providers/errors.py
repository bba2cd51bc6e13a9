"""The error hierarchy: one base, `LlmError`, and a precise subclass for each way a call fails.

Every error names the provider it came from. Messages are scrubbed of every secret the library
has seen (see `register_secret`), so wrapping an SDK error that quotes a header cannot leak a key.
The scrubbing reaches everything an app can print from one of our errors: `str`, `repr`, notes,
and the whole `__cause__` / `__context__` chain (exception groups included) that
`traceback.format_exception` and `logging.exception` walk.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from zeph_providers._secrets import (
    _RAW_CAUSE,
    _RAW_CONTEXT,
    clip,
    quote_value,
    redact,
    redact_exception,
    register_secret,
)

if TYPE_CHECKING:
    from zeph_providers.types import Attempt

__all__ = [
    "AllProvidersFailedError",
    "AuthenticationError",
    "BadResponseError",
    "BudgetExceededError",
    "ConfigError",
    "ConfigProblem",
    "ContextLengthError",
    "InferenceError",
    "InvalidRequestError",
    "LlmError",
    "ProviderClosedError",
    "ProviderNotFoundError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimitError",
    "RefusalError",
    "StructuredOutputError",
    "UnsupportedCapabilityError",
    "error_from_status",
    "clip",
    "parse_retry_after",
    "quote_value",
    "redact",
    "redact_exception",
    "register_secret",
]



class LlmError(Exception):
    """Base of every error this library raises; `provider` names where it came from."""

    _scrubs_itself = True
    """Its message is redacted when built (see `_secrets._scrub_one`)."""
    retryable: bool = False
    attempts: Sequence[Attempt] = ()
    """The tries the failed call made (set when the error leaves a stream; a router lists every member's)."""

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        self.provider = provider
        self.message = redact(message)
        super().__init__(self.message)
        # Built inside `except`: the handled exception becomes our __context__ (and usually the
        # __cause__ of `raise ... from exc`), so scrub it now, before anything can print it.
        redact_exception(sys.exc_info()[1])

    # `raise ... from exc` stores the cause without asking us; reading it (as traceback and logging
    # do) scrubs the chain first. Built-in descriptors underneath, so `raise ... from` still works.
    @property
    def __cause__(self) -> BaseException | None:
        cause: BaseException | None = _RAW_CAUSE.__get__(self)
        redact_exception(cause)
        return cause

    @__cause__.setter
    def __cause__(self, value: BaseException | None) -> None:
        _RAW_CAUSE.__set__(self, value)

    @property
    def __context__(self) -> BaseException | None:
        context: BaseException | None = _RAW_CONTEXT.__get__(self)
        redact_exception(context)
        return context

    @__context__.setter
    def __context__(self, value: BaseException | None) -> None:
        _RAW_CONTEXT.__set__(self, value)

    def add_note(self, note: str) -> None:
        super().add_note(redact(note))

    def __str__(self) -> str:
        if self.provider:
            return f"provider {self.provider!r}: {self.message}"
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config: where (provider index/name, field) and what."""

    message: str
    index: int | None = None
    provider: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where: list[str] = []
        if self.index is not None:
            label = f"providers[{self.index}]"
            if self.provider:
                label += f" ({quote_value(self.provider)})"
            where.append(label)
        elif self.provider:
            where.append(f"provider {quote_value(self.provider)}")
        if self.field:
            where.append(f"field {quote_value(self.field)}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class ConfigError(LlmError):
    """A config file or dict is invalid; lists every problem found, not only the first."""

    def __init__(
        self,
        message: str,
        *,
        problems: Sequence[ConfigProblem] = (),
        source: str | None = None,
        provider: str | None = None,
    ) -> None:
        self.problems = list(problems)
        self.source = source
        lines = [f"{source}: {message}" if source else message]
        lines.extend(f"  - {problem}" for problem in self.problems)
        super().__init__("\n".join(lines), provider=provider)


class ProviderNotFoundError(LlmError, KeyError):
    """`registry.get(name)` for a name the config does not declare."""

    def __init__(self, name: str, available: Sequence[str]) -> None:
        self.name = name
        self.available = list(available)
        listed = ", ".join(repr(n) for n in self.available) or "none"
        super().__init__(f"no provider named {name!r}; configured providers: {listed}", provider=name)

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return self.message


class AuthenticationError(LlmError):
    """The API key is missing, wrong or lacks permission (HTTP 401/403)."""


class RateLimitError(LlmError):
    """HTTP 429; `retry_after` is the server's requested wait in seconds, when it gave one.

    `client_side` is True when the library's own limiter (`rpm`/`tpm`, `zeph_providers.limits`)
    refused the call before anything was sent: it says nothing about the server's health (a
    router does not count it against the member's circuit breaker)."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        retry_after: float | None = None,
        client_side: bool = False,
    ) -> None:
        self.retry_after = retry_after
        self.client_side = client_side
        super().__init__(message, provider=provider)


class ProviderTimeoutError(LlmError, TimeoutError):
    """The call (or the local queue/worker) did not finish within its deadline."""

    retryable = True


class ContextLengthError(LlmError):
    """The prompt plus requested output does not fit the model's context window."""


class InvalidRequestError(LlmError, ValueError):
    """The request itself is wrong (the server rejected it: HTTP 400/404/422, or the library refused
    it before sending: a bad argument, a message it cannot read); retrying will not help.

    Also a `ValueError`, so code that caught the `ValueError` (pydantic's `ValidationError`) that
    `Message.user(42)` used to raise still catches the typed error it raises now.
    """


class ProviderUnavailableError(LlmError):
    """The server could not be reached or failed (5xx, connection refused or reset)."""

    retryable = True


class ProviderClosedError(ProviderUnavailableError):
    """A registry, provider, stream or engine used after `aclose()`/`close()`; not retryable."""

    retryable = False


class AllProvidersFailedError(ProviderUnavailableError):
    """Every member a router tried failed; `errors` holds each member's error, in the order tried."""

    def __init__(self, errors: Sequence[LlmError], *, provider: str | None = None, message: str = "") -> None:
        self.errors: list[LlmError] = list(errors)
        # Retrying the router helps only if some member's failure was transient.
        self.retryable = any(error.retryable for error in self.errors)
        listed = "; ".join(f"{error.provider or '?'}: {type(error).__name__}: {error.message}" for error in self.errors)
        head = message or f"all {len(self.errors)} provider(s) failed"
        super().__init__(f"{head}: {listed}" if listed else head, provider=provider)

    @property
    def exceptions(self) -> tuple[LlmError, ...]:
        """The member errors, named like `ExceptionGroup.exceptions`."""
        return tuple(self.errors)

    def as_exception_group(self) -> ExceptionGroup[LlmError]:
        """The member errors as an `ExceptionGroup`, for `except*` handling."""
        return ExceptionGroup(str(self), self.errors)


class BudgetExceededError(LlmError):
    """A provider's (or the registry's) `budget_usd` is spent: the call was refused before it was sent."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        budget_usd: float = 0.0,
        spent_usd: float = 0.0,
    ) -> None:
        super().__init__(message, provider=provider)
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd


class InferenceError(LlmError):
    """The local model failed while generating (worker crash, out of memory, ...)."""


class UnsupportedCapabilityError(LlmError):
    """The provider lacks a capability the call needs (embeddings, tools, vision, ...)."""

    def __init__(self, capability: str, *, provider: str | None = None, detail: str = "") -> None:
        self.capability = capability
        message = f"does not support {capability}"
        if detail:
            message += f" ({detail})"
        super().__init__(message, provider=provider)


class BadResponseError(LlmError):
    """The server answered with something malformed: invalid JSON, a truncated stream, ..."""

    retryable = True


class RefusalError(BadResponseError):
    """The model refused to answer a structured-output call (finish reason "refusal").

    Raised instead of the parse failure the refusal text would cause; `refusal` is that text. A
    `BadResponseError` so code catching parse failures still catches it, but never retried: the same
    request would most likely be refused again.
    """

    retryable = False

    def __init__(self, refusal: str, *, provider: str | None = None) -> None:
        self.refusal = refusal
        super().__init__(f"the model refused: {refusal}" if refusal else "the model refused", provider=provider)
class StructuredOutputError(BadResponseError):
    """The reply does not parse as JSON or does not validate against the call's `response_format`.

    `validation_error` is the parser's or validator's message, `raw` the payload that failed (the
    reply text, or the value a backend read elsewhere, e.g. Claude's answer tool), `raw_text` the
    reply's text as the model wrote it, and `finish_reason` why the reply ended: "length" means it
    was cut at `max_tokens`, and the message then says so (the fix is a larger limit, not a better
    prompt). `chat()` re-asks `structured_retries` times before raising it (`zeph_providers.structured`).
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        validation_error: str = "",
        raw: str = "",
        raw_text: str | None = None,
        finish_reason: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.validation_error = redact(validation_error)
        self.raw = redact(raw)
        self.raw_text = self.raw if raw_text is None else redact(raw_text)
        self.finish_reason = finish_reason

    @property
    def cut(self) -> bool:
        """The reply ended at `max_tokens` (finish reason "length")."""
        return self.finish_reason == "length"


def parse_retry_after(headers: Mapping[str, str] | Any) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date) or `retry-after-ms`."""
    if headers is None:
        return None
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            return max(0.0, float(millis) / 1000.0)
        value = headers.get("retry-after")
    except Exception:
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import datetime as _dt

        when = parsedate_to_datetime(value)
        return max(0.0, (when - _dt.datetime.now(when.tzinfo)).total_seconds())
    except (TypeError, ValueError):
        return None


_CONTEXT_HINTS = (
    "context length",
    "context_length",
    "context window",
    "maximum context",
    "too many tokens",
    "prompt is too long",
    "exceeds the context",
    "exceed_context_size",
    "input is too long",
)


def error_from_status(
    status: int,
    message: str,
    *,
    provider: str | None,
    headers: Mapping[str, str] | Any = None,
) -> LlmError:
    """Map an HTTP status (and the server's message) to the typed error it means."""
    lowered = message.lower()
    if status in (401, 403):
        return AuthenticationError(f"HTTP {status}: {message}; check the API key", provider=provider)
    if status == 429:
        return RateLimitError(f"HTTP 429: {message}", provider=provider, retry_after=parse_retry_after(headers))
    if status == 408:
        return ProviderTimeoutError(f"HTTP 408: {message}", provider=provider)
    if status == 413 or (400 <= status < 500 and any(h in lowered for h in _CONTEXT_HINTS)):
        return ContextLengthError(f"HTTP {status}: {message}", provider=provider)
    if status >= 500 or status == 0:
        return ProviderUnavailableError(f"HTTP {status}: {message}", provider=provider)
    return InvalidRequestError(f"HTTP {status}: {message}", provider=provider)
