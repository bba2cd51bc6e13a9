"""Secrets: the registry of values that must never be printed, and the scrubbing built on it.

`redact()` replaces every registered secret (longest first) and any cut-off piece of one where a
cut could have left it; `clip()` redacts THEN shortens; `redact_exception()` scrubs a whole
exception chain; `redact_record()`/`install_log_redaction()` scrub log records of every logger.
The bottom layer of the package: it imports nothing of ours, and `errors` builds on it.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

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
        if getattr(type(exc), "_scrubs_itself", False):  # LlmError redacts its own message
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
