"""The reply's metadata types, re-exported by `zeph_providers.types` (import them from there).

`Usage` (token counts with one meaning on every backend), `FinishReason`, `TopLogprob` /
`TokenLogprob` (log probabilities) and `Attempt` (one try at serving a call), plus `Frozen`, the
frozen, extra-forbidding base model every message part, chunk and record uses. Split from
`types.py` because they depend on nothing else there; `types.py` builds messages, `ChatResponse`
and the stream chunks on them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["Attempt", "FinishReason", "Frozen", "TokenLogprob", "TopLogprob", "Usage"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Usage(Frozen):
    """Token counts of one reply, with one meaning on every backend (docs/backends.md, "Usage").

    The input fields are disjoint: each prompt token is counted in exactly one of `input_tokens`,
    `cache_read_tokens` and `cache_write_tokens`, and each is billed at its own rate
    (`zeph_providers.pricing`: input, cache read, cache write). This is Anthropic's shape; OpenAI's
    `prompt_tokens` (which includes the cached tokens) is split into `input_tokens` +
    `cache_read_tokens` by the OpenAI backend. The whole prompt is `prompt_tokens`.
    """

    input_tokens: int = 0
    """Uncached input tokens: the prompt tokens billed at the normal input rate (the whole prompt
    minus cache reads and cache writes). Ollama and the local backend have no billing cache: all of
    their prompt tokens are here."""
    output_tokens: int = 0
    """Every generated token, reasoning / thinking tokens included (as both APIs bill them)."""
    cache_read_tokens: int = 0
    """Input tokens served from the provider's prompt cache (billed at the cache-read rate):
    Anthropic's `cache_read_input_tokens`, OpenAI's `prompt_tokens_details.cached_tokens`."""
    cache_write_tokens: int = 0
    """Input tokens written to the provider's prompt cache (billed at the cache-write rate):
    Anthropic's `cache_creation_input_tokens`; OpenAI caches without a write charge (always 0)."""
    reasoning_tokens: int = 0
    """Of `output_tokens`, those spent reasoning (OpenAI `completion_tokens_details.reasoning_tokens`)."""
    cache_write_5m_tokens: int = 0
    """Of `cache_write_tokens`, those written to 5-minute cache entries (Claude's
    `cache_creation.ephemeral_5m_input_tokens`; 0 where the API sends no breakdown)."""
    cache_write_1h_tokens: int = 0
    """Of `cache_write_tokens`, those written to 1-hour cache entries (`ephemeral_1h_input_tokens`)."""

    @property
    def prompt_tokens(self) -> int:
        """All input tokens, cached or not: `input_tokens + cache_read_tokens + cache_write_tokens`
        (what OpenAI calls `prompt_tokens`; the figure a context window limits)."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        """`prompt_tokens + output_tokens`: every token of the call (OpenAI's `total_tokens`)."""
        return self.prompt_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cache_write_5m_tokens=self.cache_write_5m_tokens + other.cache_write_5m_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens + other.cache_write_1h_tokens,
        )


FinishReason = Literal["stop", "length", "tool_use", "content_filter", "error", "pause_turn", "refusal"]
"""Why a reply ended. "pause_turn": Claude paused a long server-tool turn (send the reply back as
is to let it continue); "refusal": the model declined (Claude's `stop_reason: refusal`)."""


class TopLogprob(Frozen):
    """One candidate token at a position and its log probability."""

    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None
    """The token's UTF-8 bytes, when the API sends them (a token may be part of a character)."""


class TokenLogprob(TopLogprob):
    """One generated token, its log probability and the most likely alternatives (`top_logprobs`)."""

    top_logprobs: tuple[TopLogprob, ...] = ()


class Attempt(Frozen):
    """One try at serving a call: a provider (a router's member), one request to it.

    `outcome` is "ok", or the name of the typed error the try ended with (`ProviderTimeoutError`,
    `RateLimitError`, ...), or "cancelled" when the caller stopped it. Times are seconds.
    `cached` marks a try answered from the response cache (`zeph_providers.cache`): its outcome is
    "ok", `provider` is the provider whose cache answered, and nothing was sent to a server.
    """

    provider: str
    outcome: str = "ok"
    error: str | None = None
    """The error's message (already redacted), when the try failed."""
    wait: float = 0.0
    """Seconds waited before this try (retry backoff; 0 for the first)."""
    time_to_first_chunk: float | None = None
    duration: float = 0.0
    cached: bool = False
    """True when the response cache answered this try (a replayed reply; nothing was sent)."""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def timed_out(self) -> bool:
        """Whether this try ran out of time: the server may still have finished the work."""
        return self.outcome == "ProviderTimeoutError"
