"""The Chat Completions reply pieces that are plain JSON -> our types: usage, logprobs, extra text.

Split from `openai.py` (the stream, the chunk translator and the provider) to keep both short.
Every function takes a parsed JSON value (or an SDK model, `field` reads either) and the
provider's name for the `BadResponseError` a malformed value raises.
"""

from __future__ import annotations

from typing import Any

from zeph_providers.backends._wire import count
from zeph_providers.errors import BadResponseError
from zeph_providers.types import TokenLogprob, TopLogprob, Usage

__all__ = ["extra_text", "field", "logprobs", "usage"]


def field(obj: Any, name: str) -> Any:
    """A field of an SDK model or of a plain JSON dict (the non-streamed body is parsed here)."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def usage(raw: Any, provider: str) -> Usage:
    if not isinstance(raw, dict):
        raise BadResponseError("malformed response: `usage` is not an object", provider=provider)
    details = field(raw, "prompt_tokens_details")
    cached = field(details, "cached_tokens") if isinstance(details, dict) else None
    output_details = field(raw, "completion_tokens_details")
    reasoning = field(output_details, "reasoning_tokens") if isinstance(output_details, dict) else None
    prompt = count(field(raw, "prompt_tokens"), "prompt_tokens", provider=provider)
    # `prompt_tokens` includes the cached ones: `Usage.input_tokens` is the uncached rest (a server
    # claiming more cached than prompt tokens is capped at the prompt, so the prompt total holds).
    cache_read = min(count(cached, "cached_tokens", provider=provider), prompt)
    return Usage(
        input_tokens=prompt - cache_read,
        output_tokens=count(field(raw, "completion_tokens"), "completion_tokens", provider=provider),
        cache_read_tokens=cache_read,
        reasoning_tokens=count(reasoning, "reasoning_tokens", provider=provider),
    )


def _top_logprob(raw: Any, provider: str) -> TopLogprob:
    if not isinstance(raw, dict):
        raise BadResponseError("malformed logprobs entry (not an object)", provider=provider)
    token, logprob, raw_bytes = raw.get("token"), raw.get("logprob"), raw.get("bytes")
    if not isinstance(token, str) or isinstance(logprob, bool) or not isinstance(logprob, int | float):
        raise BadResponseError("malformed logprobs entry (token / logprob)", provider=provider)
    if raw_bytes is not None and not (isinstance(raw_bytes, list) and all(isinstance(b, int) for b in raw_bytes)):
        raise BadResponseError("malformed logprobs entry (bytes)", provider=provider)
    return TopLogprob(token=token, logprob=float(logprob), bytes=None if raw_bytes is None else tuple(raw_bytes))


def logprobs(raw: Any, provider: str) -> tuple[TokenLogprob, ...]:
    """A choice's `logprobs` object -> the entries of its `content` then its `refusal` list."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise BadResponseError("malformed response: `logprobs` is not an object", provider=provider)
    out: list[TokenLogprob] = []
    for key in ("content", "refusal"):
        for entry in raw.get(key) or ():
            first = _top_logprob(entry, provider)
            tops = entry.get("top_logprobs") or ()
            if not isinstance(tops, list):
                raise BadResponseError("malformed logprobs entry (top_logprobs)", provider=provider)
            out.append(
                TokenLogprob(
                    token=first.token,
                    logprob=first.logprob,
                    bytes=first.bytes,
                    top_logprobs=tuple(_top_logprob(top, provider) for top in tops),
                )
            )
    return tuple(out)


def extra_text(delta: Any, *names: str) -> str:
    for name in names:
        value = field(delta, name)
        if isinstance(value, str) and value:
            return value
    return ""
