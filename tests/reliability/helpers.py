"""Shared pieces of the reliability suite: provider entries pointed at the fault server, one timed call."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zeph_providers import Message, Registry
from zeph_providers.backends._remote import RemoteProvider
from zeph_providers.errors import LlmError
from zeph_providers.protocol import LlmProvider
from zeph_providers.retry import RetryPolicy
from zeph_providers.types import ChatResponse, StreamChunk

REMOTE_BACKENDS: tuple[str, ...] = ("openai", "compatible", "claude", "ollama")
FAST_BACKOFF = 0.05
"""Retry base delay for the suite (the library's 0.5 s would only make it slower, not stricter)."""
"""Seconds past a deadline a call may take before the suite calls it a hang (not a perf bound)."""


def provider_entry(backend: str, url: str, model: str, *, name: str = "p", **overrides: Any) -> dict[str, Any]:
    """One `[[llm.providers]]` entry of type `backend` that talks to the fault server at `url`."""
    entry: dict[str, Any] = {"name": name, "model": model, "timeout_secs": 1.5, "max_retries": 2}
    if backend == "openai":
        entry.update(type="openai", base_url=f"{url}/v1", api_key="sk-fault-suite-key-0000", embedding_model=model)
    elif backend == "compatible":
        entry.update(type="compatible", base_url=f"{url}/v1", embedding_model=model)
    elif backend == "claude":
        entry.update(type="claude", base_url=url, api_key="sk-ant-fault-suite-key-0000")
    elif backend == "ollama":
        entry.update(type="ollama", base_url=url, embedding_model=model)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    entry.update(overrides)
    return entry


def registry_of(*entries: dict[str, Any]) -> Registry:
    return Registry.from_dict({"llm": {"providers": list(entries)}})


def fast_retries(provider: LlmProvider) -> LlmProvider:
    """Shrink a remote provider's backoff base (max_retries and Retry-After handling unchanged)."""
    if isinstance(provider, RemoteProvider):
        provider.retry_policy = RetryPolicy(max_retries=provider.retry_policy.max_retries, base_delay=FAST_BACKOFF)
    return provider


CHAOS_FAIL_RATE = 0.3
CHAOS_MEMBERS = {
    "m1": ("compatible", f"chaos:p={CHAOS_FAIL_RATE}:seed=1"),
    "m2": ("claude", f"chaos:p={CHAOS_FAIL_RATE}:seed=2"),
    "m3": ("ollama", f"chaos:p={CHAOS_FAIL_RATE}:seed=3"),
}
"""The load test's members (and bench/bench_load_memory.py's): one of each HTTP backend, random faults."""


def chaos_router_registry(url: str) -> Registry:
    """A round-robin router "r" over `CHAOS_MEMBERS` on the fault server at `url`, fast retries."""
    entries = [
        provider_entry(backend, url, model, name=name, timeout_secs=15, max_retries=1)
        for name, (backend, model) in CHAOS_MEMBERS.items()
    ]
    router = {
        "name": "r",
        "type": "router",
        "providers": list(CHAOS_MEMBERS),
        "strategy": "round_robin",
        "timeout_secs": 30,
        # Random faults, not a sick member: keep the breakers closed so every request is routed.
        "failure_threshold": 10_000,
        "failure_window": 0,
        "cooldown_secs": 0.01,
    }
    registry = registry_of(*entries, router)
    for name in CHAOS_MEMBERS:
        fast_retries(registry.get(name))
    return registry


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


@dataclass
class Outcome:
    """What one call did: its response or error (anything raised is kept, typed or not) and how long it took."""

    response: ChatResponse | None
    error: BaseException | None
    elapsed: float
    chunks: list[StreamChunk]


async def timed_chat(provider: LlmProvider, request_id: str, *, stream: bool = False) -> Outcome:
    """One chat call with `request_id` as the user message; never raises."""
    chunks: list[StreamChunk] = []
    started = time.monotonic()
    try:
        if stream:
            async with provider.chat_stream([Message.user(request_id)]) as live:
                async for chunk in live:
                    chunks.append(chunk)
                response = live.response
        else:
            response = await provider.chat([Message.user(request_id)])
    except Exception as exc:  # the suite asserts what it was
        return Outcome(None, exc, time.monotonic() - started, chunks)
    return Outcome(response, None, time.monotonic() - started, chunks)


async def timed_embed(
    provider: LlmProvider, texts: Sequence[str]
) -> tuple[list[list[float]] | None, BaseException | None, float]:
    started = time.monotonic()
    try:
        vectors = await provider.embed_batch(list(texts))
    except Exception as exc:
        return None, exc, time.monotonic() - started
    return vectors, None, time.monotonic() - started


def assert_typed(error: BaseException | None) -> LlmError:
    """The error is one of ours (an `LlmError`), not a bare SDK / httpx / RecursionError."""
    assert error is not None, "expected an error, the call succeeded"
    assert isinstance(error, LlmError), f"untyped {type(error).__name__} escaped: {error!r}"
    return error
