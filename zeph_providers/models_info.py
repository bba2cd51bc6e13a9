"""Model metadata: `ModelInfo` (what `provider.list_models()` returns), known context windows, a short cache.

Decisions (docs/backends.md, "Model metadata"):

- `await provider.list_models()` returns `ModelInfo`s in the order the server lists them, each
  naming the provider that listed it. Remote lists are cached per provider for
  `MODELS_CACHE_SECS` (60 s; `refresh=True` skips the cache): enough to let a UI or a CLI call
  it freely, short enough that a newly pulled or released model shows up soon.
- `provider.context_window` (a property, no I/O) is the configured model's context window in
  tokens when known without a request: a local model's configured `n_ctx` (llama.cpp) or
  `max_position_embeddings` (transformers, once loaded), or `KNOWN_CONTEXT_WINDOWS` for Claude
  and OpenAI models; None when unknown. `await provider.fetch_context_window()` may ask the
  server: Ollama's `/api/show` (`<architecture>.context_length`), Anthropic's models API
  (`max_input_tokens`), an OpenAI-compatible server's `/v1/models` where it sends a window
  (vLLM `max_model_len`, llama.cpp `meta.n_ctx`, OpenRouter-style `context_length`); the
  result is remembered, and the property reports it from then on.
- `await provider.count_tokens(messages)`: the API's own count where it has one (Claude's
  `messages/count_tokens`; a compatible llama.cpp server's `/apply-template` + `/tokenize`; the
  local backend's tokenizer, off the event loop). Elsewhere
  (OpenAI: no tokenizer endpoint, and `tiktoken` is not a dependency; Ollama: no tokenize
  endpoint; a router: its members tokenise differently) it raises `UnsupportedCapabilityError`.
- A backend without a listing raises `UnsupportedCapabilityError` (the `BaseProvider` default),
  never an empty list.

`KNOWN_CONTEXT_WINDOWS` is a maintained table: update it when a provider publishes a model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from zeph_providers.errors import UnsupportedCapabilityError

__all__ = [
    "KNOWN_CONTEXT_WINDOWS",
    "MODELS_CACHE_SECS",
    "ModelInfo",
    "ModelsCache",
    "known_context_window",
    "members_models",
    "smallest_window",
]

MODELS_CACHE_SECS = 60.0
"""How long one provider's `list_models()` answer is reused (seconds)."""


class ModelInfo(BaseModel):
    """One model a provider can serve, with what its API says about it (None where it says nothing)."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    id: str
    """The model id to put in `model = ...` (Ollama: its `name`, e.g. `qwen3:8b`)."""
    provider: str
    """The configured provider that listed it (a router's members list under their own names)."""
    context_window: int | None = None
    """Input tokens the model takes, when the API says so or the table knows it."""
    max_output_tokens: int | None = None
    """The most tokens one reply may have, where the API says so (Anthropic's `max_tokens`)."""
    created: int | None = None
    """When the model was published or pulled, in Unix seconds, where sent."""
    owned_by: str | None = None
    """OpenAI's `owned_by`, where sent."""
    display_name: str | None = None
    """Anthropic's `display_name`, where sent."""
    details: dict[str, Any] = Field(default_factory=dict)
    """Backend-specific facts as sent (Ollama: `details`, `size`, `digest`; llama.cpp: `meta`)."""


# Context windows in tokens (input + output share it for OpenAI; for Claude it is the input limit).
# Sources, read November 2026: Anthropic "Models overview" (docs.anthropic.com/en/docs/about-claude/
# models/overview: every Claude 3.x / 4.x model has a 200K window; 1M for Sonnet 4 / 4.5 only
# with the long-context beta header, not the default); OpenAI model pages (platform.openai.com/
# docs/models/<id>). The longest matching prefix wins, so dated snapshots match their family.
KNOWN_CONTEXT_WINDOWS: dict[str, int] = {
    # Anthropic
    "claude-3-": 200_000,
    "claude-3-5-": 200_000,
    "claude-3-7-": 200_000,
    "claude-haiku-4": 200_000,
    "claude-sonnet-4": 200_000,
    "claude-opus-4": 200_000,
    # OpenAI
    "gpt-3.5-turbo": 16_385,
    "gpt-4": 8_192,
    "gpt-4-32k": 32_768,
    "gpt-4-turbo": 128_000,
    "gpt-4o": 128_000,
    "chatgpt-4o": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.5": 128_000,
    "gpt-5": 400_000,
    "gpt-5-chat": 128_000,
    "o1": 200_000,
    "o1-mini": 128_000,
    "o1-preview": 128_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o4-mini": 200_000,
}


def known_context_window(model: str) -> int | None:
    """The table's window for `model` (longest matching prefix; `ft:` and `org/` prefixes ignored)."""
    name = model.strip().lower()
    if name.startswith("ft:"):
        name = name[3:]
    name = name.rsplit("/", 1)[-1]
    best: tuple[int, int] | None = None
    for prefix, window in KNOWN_CONTEXT_WINDOWS.items():
        if name.startswith(prefix) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), window)
    return best[1] if best is not None else None


class ModelsCache:
    """One provider's `list_models()` answer, reused for `ttl` seconds; concurrent callers share one fetch."""

    def __init__(self, ttl: float = MODELS_CACHE_SECS, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._value: list[ModelInfo] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, fetch: Callable[[], Awaitable[list[ModelInfo]]], *, refresh: bool = False) -> list[ModelInfo]:
        async with self._lock:
            if refresh or self._value is None or self.clock() - self._at >= self.ttl:
                self._value = list(await fetch())
                self._at = self.clock()
            return list(self._value)

    def clear(self) -> None:
        self._value = None


# ----- a router over several members -----------------------------------------------------------


async def members_models(members: Mapping[str, Any], *, provider: str, refresh: bool = False) -> list[ModelInfo]:
    """A router's `list_models()`: every member's list, in member order, each entry naming its member.

    Members that cannot list (`UnsupportedCapabilityError`, or no `list_models` at all: a plugin)
    are left out; any other error propagates (a partial union would pass for the whole one). When
    no member can list, `UnsupportedCapabilityError`.
    """
    out: list[ModelInfo] = []
    listed = False
    for member in members.values():
        list_models = getattr(member, "list_models", None)
        if list_models is None:
            continue
        try:
            out.extend(await list_models(refresh=refresh))
        except UnsupportedCapabilityError:
            continue
        listed = True
    if not listed:
        raise UnsupportedCapabilityError("list_models", provider=provider, detail="no member lists its models")
    return out


def smallest_window(windows: Iterable[int | None]) -> int | None:
    """The window every member can take (a call may fall back to any): the smallest; None if one is unknown."""
    values = list(windows)
    if not values or any(value is None for value in values):
        return None
    return min(value for value in values if value is not None)
