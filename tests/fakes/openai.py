"""OpenAI Chat Completions wire shapes: SSE framing, `chat.completion.chunk`s, usage chunks, bodies."""

from __future__ import annotations

import json
from typing import Any

SERVED_MODEL = "gpt-4o-mini-2024-07-18"
CREATED = 1_700_000_000


def sse(payload: dict[str, Any] | str) -> bytes:
    """One `data:` server-sent event; a dict is JSON-encoded, a string is sent as is."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


DONE = sse("[DONE]")
"""The stream terminator, `data: [DONE]`."""


def chunk(
    delta: dict[str, Any] | None = None,
    *,
    finish: str | None = None,
    response_id: str = "chatcmpl-conf",
    model: str = SERVED_MODEL,
    created: int = CREATED,
    fingerprint: str = "fp_conf",
) -> dict[str, Any]:
    """One `chat.completion.chunk` with a single choice carrying `delta`."""
    return {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}],
    }


def usage(prompt: int, completion: int, *, cached: int | None = 0) -> dict[str, Any]:
    """A `usage` object; `cached=None` leaves out the token details."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
        out["completion_tokens_details"] = {"reasoning_tokens": 0}
    return out


def usage_chunk(
    prompt: int,
    completion: int,
    *,
    cached: int | None = 0,
    response_id: str = "chatcmpl-conf",
    model: str = SERVED_MODEL,
    created: int = CREATED,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """The last chunk of a stream with `stream_options.include_usage`: no choices, a `usage`."""
    out: dict[str, Any] = {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": model}
    if fingerprint is not None:
        out["system_fingerprint"] = fingerprint
    out["choices"] = []
    out["usage"] = usage(prompt, completion, cached=cached)
    return out


def completion(
    text: str,
    *,
    prompt: int,
    completion_tokens: int,
    response_id: str = "chatcmpl-conf",
    model: str = SERVED_MODEL,
    created: int = CREATED,
    finish: str = "stop",
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """An unstreamed `chat.completion` body with one assistant message."""
    out: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage(prompt, completion_tokens, cached=None),
    }
    if fingerprint is not None:
        out["system_fingerprint"] = fingerprint
    return out


def text_stream(
    pieces: list[str],
    *,
    prompt: int,
    completion_tokens: int,
    response_id: str = "chatcmpl-conf",
    model: str = SERVED_MODEL,
    created: int = CREATED,
    fingerprint: str = "fp_conf",
    role_delta: dict[str, Any] | None = None,
) -> list[bytes]:
    """A whole plain-text stream: role chunk, one chunk per piece, finish chunk, usage chunk, `[DONE]`."""
    ids: dict[str, Any] = {"response_id": response_id, "model": model, "created": created}
    opening = role_delta if role_delta is not None else {"role": "assistant", "content": "", "refusal": None}
    events = [sse(chunk(opening, fingerprint=fingerprint, **ids))]
    events.extend(sse(chunk({"content": piece}, fingerprint=fingerprint, **ids)) for piece in pieces)
    events.append(sse(chunk(finish="stop", fingerprint=fingerprint, **ids)))
    events.append(sse(usage_chunk(prompt, completion_tokens, cached=None, fingerprint=fingerprint, **ids)))
    events.append(DONE)
    return events


def error_body(message: str, error_type: str = "") -> dict[str, Any]:
    """The `{"error": {message, type, param, code}}` body of an API error."""
    return {
        "error": {
            "message": message,
            "type": error_type or "invalid_request_error",
            "param": None,
            "code": error_type or None,
        }
    }
