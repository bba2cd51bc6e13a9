"""One error layer for the HTTP backends: status -> typed error, context overflow, transport
failures and error events inside a 200 reply (a stream's `event: error`, an `{"error": ...}` body).

`Retry-After` and the status table are `zeph_providers.errors`' (`error_from_status`); this module
adds what every backend used to repeat: one `is_context_overflow()`, one reading of an error
object (`type`, `code`, `status_code`, `message`), and one transport mapping for httpx / httpx2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zeph_providers.backends._wire import ResponseLineTooLongError
from zeph_providers.errors import _CONTEXT_HINTS as _STATUS_CONTEXT_HINTS
from zeph_providers.errors import (
    BadResponseError,
    ContextLengthError,
    LlmError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    error_from_status,
)

__all__ = [
    "MAX_ERROR_TEXT",
    "error_event",
    "is_context_overflow",
    "map_transport_error",
    "status_error",
]

MAX_ERROR_TEXT = 500

_CONTEXT_HINTS = (
    *_STATUS_CONTEXT_HINTS,  # the messages `error_from_status` recognises
    "context_length_exceeded",  # error codes
    "exceed_context",
    "context_window",
    "string_above_max_length",
)

# The HTTP status each error `type` stands for (Anthropic's names; OpenAI shares some), used for
# error events inside a 200 reply that carry no status of their own.
_ERROR_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "server_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def is_context_overflow(text: str) -> bool:
    """The server's message or error code says the prompt does not fit the model's context."""
    lowered = text.lower()
    return any(hint in lowered for hint in _CONTEXT_HINTS)


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "..."


def status_error(
    status: int, message: str, *, provider: str | None, code: str = "", headers: Mapping[str, str] | Any = None
) -> LlmError:
    """An HTTP error status (with the body's message and its `code`/`type`) -> the typed error."""
    text = _short(message) + (f" ({code})" if code else "")
    if 400 <= status < 500 and status not in (401, 403, 429) and is_context_overflow(code):
        return ContextLengthError(f"HTTP {status}: {text}", provider=provider)
    return error_from_status(status, text, provider=provider, headers=headers)


def _status_of(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) == 3:
        return int(value)
    return None


def error_event(error: Any, *, provider: str | None, where: str = "in the stream") -> LlmError:
    """An error object inside a 200 reply -> typed by its status (`status_code`, a numeric `code`)
    or its `type` (e.g. `invalid_request_error` -> 400 -> InvalidRequestError, not retried)."""
    if isinstance(error, Mapping) and isinstance(error.get("error"), Mapping):
        error = error["error"]  # {"type": "error", "error": {...}}
    if isinstance(error, Mapping):
        message = str(error.get("message") or "") or "an error occurred"
        kind = str(error.get("type") or "")
        raw_code = error.get("code")
        status = _status_of(error.get("status_code")) or _status_of(error.get("status")) or _status_of(raw_code)
    else:
        message, kind, raw_code, status = str(error), "", None, None
    code = str(raw_code) if raw_code and not str(raw_code).isdigit() and str(raw_code) != kind else ""
    text = f"error {where}: " + (f"{kind}: " if kind else "") + _short(message) + (f" ({code})" if code else "")
    if status is None:
        status = _ERROR_TYPE_STATUS.get(kind)
    if is_context_overflow(f"{kind} {code} {message}") and (status is None or 400 <= status < 500):
        return ContextLengthError(text, provider=provider)
    if status is None or status < 400:
        return ProviderUnavailableError(text, provider=provider)
    return error_from_status(status, text, provider=provider)


def map_transport_error(exc: BaseException, provider: str | None) -> LlmError | None:
    """httpx / httpx2 transport failures (both packages share class names) and body problems -> typed."""
    if isinstance(exc, BadResponseError):  # raised by a body wrapper, seen through an SDK's wrapping
        return BadResponseError(exc.message, provider=provider)
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if "TimeoutException" in names or "APITimeoutError" in names:
        return ProviderTimeoutError(f"request timed out ({text})", provider=provider)
    if names & {"ConnectError", "ConnectionRefusedError", "APIConnectionError"}:
        return ProviderUnavailableError(f"cannot connect to the server ({text})", provider=provider)
    if names & {"RemoteProtocolError", "ReadError", "WriteError", "NetworkError", "ConnectionResetError"}:
        return ProviderUnavailableError(f"the connection broke ({text})", provider=provider)
    if names & {"DecodingError", "JSONDecodeError", "UnicodeDecodeError", "OverflowError"}:
        return BadResponseError(f"malformed response body ({text})", provider=provider)
    if isinstance(exc, ResponseLineTooLongError):
        return BadResponseError(f"a streamed line exceeded {exc.limit} bytes; refusing it", provider=provider)
    if isinstance(exc, RecursionError):  # json.loads on hostile, deeply nested JSON
        return BadResponseError(f"malformed response body: JSON nested too deeply ({text})", provider=provider)
    return None
