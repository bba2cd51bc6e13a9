"""The error hierarchy: one base, `LlmError`, and a precise subclass for each way a call fails.

Every error names the provider it came from. Messages are scrubbed of every secret the library
has seen (see `register_secret`), so wrapping an SDK error that quotes a header cannot leak a key.
The scrubbing reaches everything an app can print from one of our errors: `str`, `repr`, notes,
and the whole `__cause__` / `__context__` chain (exception groups included) that
`traceback.format_exception` and `logging.exception` walk.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

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
    "UnsupportedCapabilityError",
    "error_from_status",
    "clip",
    "parse_retry_after",
    "quote_value",
    "redact",
    "redact_exception",
    "register_secret",
]

_REDACTED = "[REDACTED]"
_secrets: set[str] = set()
_by_length: tuple[str, ...] = ()
_secrets_lock = threading.Lock()

_FRAGMENT = 8
"""A prefix or suffix of a secret at least this long is redacted too: text cut before it reached
us (an error body clipped at 500 characters) must not print the first half of a key."""


def register_secret(value: str | None) -> None:
    """Remember a secret so that no error message or log line built later can contain it."""
    global _by_length
    if value and len(value) >= 4:
        with _secrets_lock:
            if value in _secrets:
                return
            _secrets.add(value)
            # Longest first: a secret that contains another must be replaced whole, or its tail leaks.
            _by_length = tuple(sorted(_secrets, key=len, reverse=True))
        install_log_redaction()


def _is_token_char(char: str) -> bool:
    return char.isalnum() or char in "-_"


def _fragments(text: str, secret: str) -> list[tuple[int, int]]:
    """Spans of `text` holding a maximal prefix or suffix (>= _FRAGMENT chars) of `secret`, where a cut
    could have left it: a prefix must end the word it is in (the cut came right after it), a suffix
    must start its word. So "xllamacpp" survives a key ending in "-for-llamacpp", and "ollama pull"
    a key starting "ollama-p..."; a key cut in half never shows its first or last half."""
    spans: list[tuple[int, int]] = []
    if len(secret) <= _FRAGMENT:
        return spans
    head, tail = secret[:_FRAGMENT], secret[-_FRAGMENT:]
    start = text.find(head)
    while start != -1:
        end = start + _FRAGMENT
        while end < len(text) and end - start < len(secret) and text[end] == secret[end - start]:
            end += 1
        if end == len(text) or not _is_token_char(text[end]):
            spans.append((start, end))
        start = text.find(head, start + 1)
    found = text.find(tail)
    while found != -1:
        begin, offset = found, len(secret) - _FRAGMENT
        while begin > 0 and offset > 0 and text[begin - 1] == secret[offset - 1]:
            begin -= 1
            offset -= 1
        if begin == 0 or not _is_token_char(text[begin - 1]):
            spans.append((begin, found + _FRAGMENT))
        found = text.find(tail, found + 1)
    return spans


def redact(text: str) -> str:
    """Replace every registered secret in `text` (and any cut-off piece of one) with a placeholder."""
    known = _by_length
    if not known or not text:
        return text
    for secret in known:  # longest first
        if secret in text:
            text = text.replace(secret, _REDACTED)
    # Pieces of secrets left by a cut: found on the same text for every secret, then merged, so
    # redacting one secret's piece cannot hide the rest of another's.
    spans = sorted(span for secret in known for span in _fragments(text, secret))
    if not spans:
        return text
    out: list[str] = []
    pos = 0
    start, end = spans[0]
    for begin, finish in spans[1:]:
        if begin <= end:
            end = max(end, finish)
            continue
        out.extend((text[pos:start], _REDACTED))
        pos, start, end = end, begin, finish
    out.extend((text[pos:start], _REDACTED, text[end:]))
    return "".join(out)


def clip(text: str, limit: int = 500) -> str:
    """Redact, THEN shorten to at most about `limit` characters: never a partial secret."""
    text = redact(text)
    if len(text) <= limit:
        return text
    cut = text[:limit]
    # Do not leave half a placeholder either.
    marker = cut.rfind("[")
    if marker != -1 and _REDACTED.startswith(cut[marker:]):
        cut = cut[:marker] + _REDACTED
    return f"{cut}... ({len(text)} characters)"


def quote_value(value: object, limit: int = 60) -> str:
    """`repr(value)` for an error message, redacted and shortened (a 10 MB value stays one line)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(redact(value[: limit * 4])[:limit]) + f"... ({len(value)} characters)"
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    text = redact(text)
    if len(text) > limit + 20:
        text = text[:limit] + f"... ({len(text)} characters)"
    return text


# ----- scrubbing an exception chain -------------------------------------------------------


def _scrub_one(exc: BaseException) -> None:
    """Make `str(exc)` and `exc.__notes__` free of secrets, in place."""
    if not _by_length:
        return
    try:
        args = exc.args
        if any(isinstance(a, str) and redact(a) != a for a in args):
            exc.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        notes = getattr(exc, "__notes__", None)
        if isinstance(notes, list):
            notes[:] = [redact(n) if isinstance(n, str) else n for n in notes]
        if isinstance(exc, LlmError):
            return
        text = str(exc)
        if redact(text) == text:
            return
        # str() built from attributes (ollama's ResponseError.error, ...): scrub the string ones.
        for key, value in list(vars(exc).items()):
            if isinstance(value, str) and redact(value) != value:
                setattr(exc, key, redact(value))
        text = str(exc)
        if redact(text) != text:
            # Still leaking through a computed __str__: replace the message outright.
            safe = redact(text)
            cls = type(exc)
            namespace = {"_safe": safe, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
            try:  # same name and module in a traceback, still an instance of the original class
                exc.__class__ = type(cls.__name__, (_Redacted, cls), namespace)
            except TypeError:
                exc.args = (safe,)
    except Exception:  # scrubbing must never raise out of error handling
        pass


class _Redacted:
    """Mixed into an exception whose computed `__str__` would print a secret."""

    __slots__ = ()
    _safe = ""

    def __str__(self) -> str:
        return self._safe

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._safe!r})"


def redact_exception(exc: BaseException | None) -> None:
    """Scrub `exc`, its cause and context chain, and any exception group members, in place."""
    if exc is None or not _by_length:
        return
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        _scrub_one(current)
        stack.append(BaseException.__dict__["__cause__"].__get__(current))
        stack.append(BaseException.__dict__["__context__"].__get__(current))
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)


_RAW_CAUSE = BaseException.__dict__["__cause__"]
_RAW_CONTEXT = BaseException.__dict__["__context__"]


# ----- log records (public face: zeph_providers.redaction) ---------------------------------

_log_lock = threading.Lock()
_log_installed = False


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Scrub one log record in place: message and arguments, exception text, stack info."""
    if not _by_length:
        return record
    try:
        message = record.getMessage()
        safe = redact(message)
        if safe != message:
            record.msg = safe
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            redact_exception(record.exc_info[1])
            if not record.exc_text:
                record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
    except Exception:  # a record whose args do not format: leave it to the handler's own error path
        pass
    return record


def install_log_redaction() -> None:
    """Scrub every log record the process creates from now on (idempotent, thread-safe)."""
    global _log_installed
    if _log_installed:
        return
    with _log_lock:
        if _log_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return redact_record(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _log_installed = True


class LlmError(Exception):
    """Base of every error this library raises; `provider` names where it came from."""

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
    """HTTP 429; `retry_after` is the server's requested wait in seconds, when it gave one."""

    retryable = True

    def __init__(self, message: str, *, provider: str | None = None, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, provider=provider)


class ProviderTimeoutError(LlmError, TimeoutError):
    """The call (or the local queue/worker) did not finish within its deadline."""

    retryable = True


class ContextLengthError(LlmError):
    """The prompt plus requested output does not fit the model's context window."""


class InvalidRequestError(LlmError):
    """The server rejected the request itself (HTTP 400/404/422); retrying will not help."""


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
