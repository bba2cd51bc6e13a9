"""The gateway's own errors and the HTTP status of every error a call can end with.

Each API module (`_openai`, `_anthropic`) writes these in its own error shape; the status and the
headers (`Retry-After`) are decided here, once:

| error                                   | status | why |
|-----------------------------------------|--------|-----|
| `GatewayError` subclasses               | their own (401, 403, 404, 413, 400, 429) | the gateway refused the request |
| `ProviderNotFoundError`                 | 404    | the request's `model` names no provider |
| `RateLimitError`                        | 429    | `Retry-After`: the upstream's wait, rounded up (1 s when unknown) |
| `BudgetExceededError`                   | 429    | `insufficient_quota`; waiting does not help: no Retry-After |
| `ContextLengthError`                    | 400    | code `context_length_exceeded` |
| `InvalidRequestError`, `UnsupportedCapabilityError` | 400 | the request cannot be served as asked |
| `ProviderTimeoutError`                  | 504    | the upstream did not answer in time |
| `AuthenticationError`                   | 502    | the upstream refused OUR key; the client's is fine: not 401 |
| `ProviderClosedError`                   | 503    | the gateway is shutting down |
| `AllProvidersFailedError`               | the members' common status, else 502 | |
| `ProviderUnavailableError`, `BadResponseError` | 502 | the upstream failed |
| any other error                         | 500    | the message is generic: never a traceback |
"""

from __future__ import annotations

import math

from zeph_providers.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    BadResponseError,
    BudgetExceededError,
    ContextLengthError,
    InvalidRequestError,
    LlmError,
    ProviderClosedError,
    ProviderNotFoundError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    UnsupportedCapabilityError,
    redact,
)

__all__ = [
    "BadRequest",
    "BodyTooLarge",
    "Forbidden",
    "GatewayError",
    "KeyOverLimit",
    "NotFound",
    "Unauthorized",
    "error_code",
    "error_message",
    "error_status",
]


class GatewayError(Exception):
    """A request the gateway itself refuses; `status`, an OpenAI-style `code`, and the `param` at fault."""

    status: int = 400
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = redact(message)
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})
        super().__init__(self.message)


class BadRequest(GatewayError):
    """Malformed JSON, an unknown field that would change the reply, `max_tokens` over the cap, ..."""

    status = 400
    code = "invalid_request"


class Unauthorized(GatewayError):
    """No key, or a key the gateway does not know."""

    status = 401
    code = "invalid_api_key"


class Forbidden(GatewayError):
    """A key used for a provider it may not use, or a non-loopback client without keys configured."""

    status = 403
    code = "permission_denied"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class BodyTooLarge(GatewayError):
    status = 413
    code = "request_too_large"


class KeyOverLimit(GatewayError):
    """The client key's own rate limit or budget is spent (not an upstream's)."""

    status = 429
    code = "rate_limit_exceeded"


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds if seconds is not None else 1.0)))}


def error_status(exc: BaseException) -> tuple[int, dict[str, str]]:
    """The HTTP status and extra headers for any error a request can end with (table above)."""
    if isinstance(exc, GatewayError):
        return exc.status, dict(exc.headers)
    if not isinstance(exc, LlmError):
        return 500, {}
    if isinstance(exc, ProviderNotFoundError):
        return 404, {}
    if isinstance(exc, RateLimitError):
        return 429, _retry_after(exc.retry_after)
    if isinstance(exc, BudgetExceededError):
        return 429, {}
    if isinstance(exc, ContextLengthError | InvalidRequestError | UnsupportedCapabilityError):
        return 400, {}
    if isinstance(exc, ProviderTimeoutError):
        return 504, {}
    if isinstance(exc, AuthenticationError):
        return 502, {}
    if isinstance(exc, AllProvidersFailedError):
        verdicts = [error_status(member) for member in exc.errors]
        statuses = {status for status, _ in verdicts}
        if len(statuses) == 1:
            return verdicts[-1]
        return 502, {}
    if isinstance(exc, ProviderClosedError):
        return 503, {}
    if isinstance(exc, ProviderUnavailableError | BadResponseError):
        return 502, {}
    return 500, {}


def error_code(exc: BaseException) -> str | None:
    """OpenAI's `error.code` for an error (`context_length_exceeded`, `model_not_found`, ...)."""
    if isinstance(exc, GatewayError):
        return exc.code
    if isinstance(exc, AllProvidersFailedError) and exc.errors:
        codes = {error_code(member) for member in exc.errors}
        return codes.pop() if len(codes) == 1 else "upstream_error"
    if isinstance(exc, ProviderNotFoundError):
        return "model_not_found"
    if isinstance(exc, ContextLengthError):
        return "context_length_exceeded"
    if isinstance(exc, RateLimitError):
        return "rate_limit_exceeded"
    if isinstance(exc, BudgetExceededError):
        return "insufficient_quota"
    if isinstance(exc, UnsupportedCapabilityError):
        return "unsupported_capability"
    if isinstance(exc, InvalidRequestError):
        return "invalid_request"
    if isinstance(exc, ProviderTimeoutError):
        return "upstream_timeout"
    if isinstance(exc, AuthenticationError):
        return "upstream_authentication_failed"
    if isinstance(exc, ProviderClosedError):
        return "shutting_down"
    if isinstance(exc, LlmError):
        return "upstream_error"
    return "internal_error"


def error_message(exc: BaseException) -> str:
    """What the client is told: our errors' (already redacted) text; for anything else a generic
    line (its details go to the log, never to the client)."""
    if isinstance(exc, GatewayError):
        return exc.message
    if isinstance(exc, LlmError):
        return redact(str(exc))
    return "internal error in the gateway (details are in its log)"
