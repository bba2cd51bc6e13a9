"""The Chat Completions reply pieces that are plain JSON -> our types: usage, logprobs, extra text,
a whole `chat.completion` body -> the one chunk `chat()` replays, embedding vectors.

Split from `openai.py` (the stream, the chunk translator and the provider) to keep both short.
Every function takes a parsed JSON value (or an SDK model, `_convert.get_field` reads either) and the
provider's name for the `BadResponseError` a malformed value raises.
"""

from __future__ import annotations

from typing import Any

from zeph_providers.backends._convert import get_field as field
from zeph_providers.backends._errors import error_event
from zeph_providers.backends._wire import count
from zeph_providers.errors import BadResponseError
from zeph_providers.types import TokenLogprob, TopLogprob, Usage

__all__ = ["completion_chunk", "embedding_vectors", "extra_text", "field", "logprobs", "usage"]


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


def completion_chunk(body: Any, provider: str) -> dict[str, Any]:
    """A non-streamed `chat.completion` body -> one `chat.completion.chunk` for the translator."""
    if not isinstance(body, dict):
        raise BadResponseError("malformed response (the body is not a JSON object)", provider=provider)
    if body.get("error") and not body.get("choices"):  # an error object in a 200 body
        raise error_event(body["error"], provider=provider, where="in the response body")
    choices = body.get("choices")
    if not isinstance(choices, list):
        raise BadResponseError(
            "the response has no `choices` (is this an OpenAI-compatible chat endpoint?)", provider=provider
        )
    choice = next((c for c in choices if isinstance(c, dict) and (c.get("index") or 0) == 0), None)
    if choice is None:
        raise BadResponseError("the response has no choice", provider=provider)
    message = choice.get("message") or {}
    if not isinstance(message, dict):
        raise BadResponseError("malformed response (`message` is not an object)", provider=provider)
    delta = dict(message)
    calls = message.get("tool_calls")
    if isinstance(calls, list):  # a whole body: a call's position is its index
        delta["tool_calls"] = [
            {**call, "index": call.get("index") if isinstance(call.get("index"), int) else position}
            if isinstance(call, dict)
            else call
            for position, call in enumerate(calls)
        ]
    return {
        "id": body.get("id"),
        "model": body.get("model"),
        "usage": body.get("usage"),
        # A complete body without a finish reason is taken as "stop": it is whole by definition.
        "choices": [
            {
                "index": 0,
                "delta": delta,
                "logprobs": choice.get("logprobs"),
                "finish_reason": choice.get("finish_reason") or "stop",
            }
        ],
    }


def embedding_vectors(data: Any, expected: int, dimensions: int | None, provider: str) -> list[list[float]]:
    """The SDK's `embeddings.create(...).data` -> vectors in input order, checked for count and length."""
    if not isinstance(data, list):
        # Checked first: sorting a hostile string `data` would build a list of every character.
        raise BadResponseError("malformed embeddings response (`data` is not a list)", provider=provider)
    try:
        items = sorted(data, key=lambda item: int(item.index))
        vectors = [[float(v) for v in item.embedding] for item in items]
    except (AttributeError, TypeError, ValueError) as exc:
        raise BadResponseError(f"malformed embeddings response ({exc})", provider=provider) from exc
    if len(vectors) != expected:
        detail = f"asked for {expected} embeddings, the server returned {len(vectors)}"
        raise BadResponseError(detail, provider=provider)
    if dimensions is not None and any(len(vector) != dimensions for vector in vectors):
        raise BadResponseError(
            f"asked for {dimensions}-dimension embeddings, the server returned "
            f"{len(next(v for v in vectors if len(v) != dimensions))} (does the model take `dimensions`?)",
            provider=provider,
        )
    return vectors
