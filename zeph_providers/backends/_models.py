"""Model listings on the wire: each API's model objects -> `ModelInfo` (pure functions, no I/O).

- OpenAI `/v1/models`: `{"object": "list", "data": [{"id", "created", "owned_by"}]}`; compatible
  servers add a window some of the time: vLLM `max_model_len`, OpenRouter / LM Studio
  `context_length`, llama.cpp `meta.n_ctx` (the server's window; else `meta.n_ctx_train`).
- Anthropic `/v1/models`: `{"data": [{"id", "display_name", "created_at", "max_input_tokens",
  "max_tokens"}], "has_more", "last_id"}`, paged.
- Ollama `/api/tags`: `{"models": [{"name", "model", "modified_at", "size", "digest", "details"}]}`;
  the window is in `/api/show`'s `model_info` as `<general.architecture>.context_length`.

A field of the wrong type is `BadResponseError`; a missing optional one is None.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from zeph_providers.backends._wire import count
from zeph_providers.errors import BadResponseError, UnsupportedCapabilityError
from zeph_providers.models_info import ModelInfo, known_context_window

__all__ = [
    "COUNT_TOKENS_FIELDS",
    "anthropic_model",
    "anthropic_models",
    "anthropic_token_count",
    "llamacpp_count",
    "ollama_context_length",
    "ollama_models",
    "openai_models",
]

COUNT_TOKENS_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking"})
"""The `messages.create` arguments Anthropic's `messages/count_tokens` takes (sampling does not change the count)."""


def _items(body: Any, key: str, provider: str) -> list[dict[str, Any]]:
    items = body.get(key) if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise BadResponseError(f"malformed model list: `{key}` is not a list of objects", provider=provider)
    return items


def _text(item: dict[str, Any], name: str, provider: str, *, required: bool = False) -> str | None:
    value = item.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise BadResponseError(f"malformed model list: `{name}` is not text", provider=provider)
    return value


def _number(value: Any, what: str, provider: str) -> int | None:
    return None if value is None else count(value, what, provider=provider)


def _timestamp(value: Any, what: str, provider: str) -> int | None:
    """Unix seconds from an ISO 8601 text (Anthropic, Ollama); None when absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadResponseError(f"malformed model list: `{what}` is not a date", provider=provider)
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError as exc:
        message = f"malformed model list: `{what}` is not a date ({value[:40]!r})"
        raise BadResponseError(message, provider=provider) from exc


def openai_models(body: Any, provider: str) -> list[ModelInfo]:
    out = []
    for item in _items(body, "data", provider):
        model_id = _text(item, "id", provider, required=True)
        assert model_id is not None
        meta = item.get("meta") if isinstance(item.get("meta"), dict) else None
        window = _number(item.get("max_model_len"), "max_model_len", provider)
        if window is None:
            window = _number(item.get("context_length"), "context_length", provider)
        if window is None and meta is not None:  # llama.cpp: the server's n_ctx, else the trained one
            window = _number(meta.get("n_ctx"), "meta.n_ctx", provider)
            if window is None:
                window = _number(meta.get("n_ctx_train"), "meta.n_ctx_train", provider)
        details = {"meta": meta} if meta is not None else {}
        out.append(
            ModelInfo(
                id=model_id,
                provider=provider,
                context_window=window if window is not None else known_context_window(model_id),
                created=_number(item.get("created"), "created", provider),
                owned_by=_text(item, "owned_by", provider),
                details=details,
            )
        )
    return out


def anthropic_model(item: dict[str, Any], provider: str) -> ModelInfo:
    model_id = _text(item, "id", provider, required=True)
    assert model_id is not None
    window = _number(item.get("max_input_tokens"), "max_input_tokens", provider)
    return ModelInfo(
        id=model_id,
        provider=provider,
        context_window=window if window is not None else known_context_window(model_id),
        max_output_tokens=_number(item.get("max_tokens"), "max_tokens", provider),
        created=_timestamp(item.get("created_at"), "created_at", provider),
        display_name=_text(item, "display_name", provider),
    )


def anthropic_models(body: Any, provider: str) -> tuple[list[ModelInfo], str | None]:
    """One page: its models, and the id to continue after (None on the last page)."""
    models = [anthropic_model(item, provider) for item in _items(body, "data", provider)]
    more = body.get("has_more") is True and bool(models)
    last = body.get("last_id") or (models[-1].id if models else None)
    return models, (str(last) if more and last else None)


def ollama_models(body: Any, provider: str) -> list[ModelInfo]:
    out = []
    for item in _items(body, "models", provider):
        name = _text(item, "name", provider) or _text(item, "model", provider, required=True)
        assert name is not None
        details: dict[str, Any] = {}
        for key in ("details", "size", "digest"):
            if item.get(key) is not None:
                details[key] = item[key]
        out.append(
            ModelInfo(
                id=name,
                provider=provider,
                created=_timestamp(item.get("modified_at"), "modified_at", provider),
                details=details,
            )
        )
    return out


def ollama_context_length(model_info: Any) -> int | None:
    """`/api/show`'s `model_info["<architecture>.context_length"]`, or None when not there."""
    if not isinstance(model_info, dict):
        return None
    arch = model_info.get("general.architecture")
    value = model_info.get(f"{arch}.context_length") if isinstance(arch, str) else None
    if value is None:  # an architecture name we do not see: any single `*.context_length`
        found = [v for k, v in model_info.items() if isinstance(k, str) and k.endswith(".context_length")]
        value = found[0] if len(found) == 1 else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def anthropic_token_count(body: Any, provider: str) -> int:
    """`POST /v1/messages/count_tokens`'s answer: `{"input_tokens": N}`."""
    value = body.get("input_tokens") if isinstance(body, dict) else None
    if value is None:
        raise BadResponseError("malformed count_tokens answer: no `input_tokens`", provider=provider)
    return count(value, "input_tokens", provider=provider)


async def llamacpp_count(provider: Any, request: dict[str, Any], timeout: Any) -> int:
    """A compatible server's prompt count through llama.cpp's own endpoints, beside `/v1`:
    `POST /apply-template` (the messages and tools, rendered by the server's chat template) then
    `POST /tokenize` (`add_special`, as a chat request tokenises). A server without them (404, 405,
    501: vLLM, TGI, hosted APIs) gives `UnsupportedCapabilityError`. `provider` is an
    `OpenAIProvider`: its SDK client sends these (auth, transport); its `base_url` ends in `/v1`."""
    import httpx2
    import openai

    root = provider.base_url.removesuffix("/v1")
    post = provider._client.post
    try:
        rendered = await post(
            f"{root}/apply-template", body=request, cast_to=httpx2.Response, options={"timeout": timeout}
        )
        prompt = rendered.json().get("prompt")
        if not isinstance(prompt, str):
            raise BadResponseError("malformed /apply-template answer: no `prompt`", provider=provider.name)
        body = {"content": prompt, "add_special": True, "parse_special": True}
        tokenized = await post(f"{root}/tokenize", body=body, cast_to=httpx2.Response, options={"timeout": timeout})
    except openai.APIStatusError as exc:
        if exc.status_code in (404, 405, 501):
            detail = "the server has no llama.cpp-style /apply-template and /tokenize"
            raise UnsupportedCapabilityError("count_tokens", provider=provider.name, detail=detail) from exc
        raise
    tokens = tokenized.json().get("tokens")
    if not isinstance(tokens, list):
        raise BadResponseError("malformed /tokenize answer: no `tokens` list", provider=provider.name)
    return len(tokens)
