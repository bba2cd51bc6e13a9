"""Hostile responses: huge lines, endless streams and deeply nested JSON, for every remote backend.

Each call must end in a typed error (no RecursionError, SDK or httpx exception escapes), without
hanging (`HANG_GUARD`; no wall-clock ceiling: the endless stream lasts 600 s against a 0.5 s
deadline, so its typed timeout proves the deadline is honoured), with the traced Python memory
peak (tracemalloc, which also sees the in-process server's allocations) under `MEMORY_LIMIT`.
Streamed responses are read with a line limit (16 MiB for SSE,
`zeph_providers.backends._remote.MAX_STREAM_LINE_BYTES`; 8 MiB for Ollama's NDJSON), so a 50 MB
line is refused after its first 16 MiB: the server never gets to send the rest. A valid 10 MB
event is under the SSE limit and is delivered (the wire tests of the OpenAI and Claude backends
require that), within the same memory bound.
"""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from tests.reliability.helpers import (
    REMOTE_BACKENDS,
    assert_typed,
    new_id,
    provider_entry,
    registry_of,
    timed_chat,
    timed_embed,
)
from tests.servers.fault_server import FaultServer
from zeph_providers.errors import BadResponseError, LlmError, ProviderTimeoutError

TIMEOUT = 60.0
"""Calls that must end on their own (a refused line, nested JSON): generous, so a busy machine is no timeout."""
FOREVER_TIMEOUT = 0.5
"""The deadline of the endless stream (which lasts 600 s, far past `HANG_GUARD`)."""
HANG_GUARD = 120.0
MEMORY_LIMIT = 100 * 1024 * 1024

HOSTILE: tuple[tuple[str, type[LlmError]], ...] = (
    ("bigline:mb=50", BadResponseError),
    ("nested:depth=100000", BadResponseError),  # the whole event is [[[[...]]]]
    ("nested:depth=100000:where=content", BadResponseError),  # the text field is
    ("forever:ms=0:secs=600", ProviderTimeoutError),  # an endless stream, as fast as the server can write
)


def _chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(chain) < 20:
        chain.append(current)
        current = current.__cause__
    return chain


@pytest.mark.parametrize("backend", REMOTE_BACKENDS)
@pytest.mark.parametrize(("plan", "expected"), HOSTILE, ids=[plan for plan, _ in HOSTILE])
async def test_hostile_chat(fault_server: FaultServer, backend: str, plan: str, expected: type[LlmError]) -> None:
    timeout = FOREVER_TIMEOUT if plan.startswith("forever") else TIMEOUT
    registry = registry_of(
        provider_entry(backend, fault_server.url, f"fault:{plan}", timeout_secs=timeout, max_retries=0)
    )
    request_id = new_id(backend)
    tracemalloc.start()
    try:
        async with asyncio.timeout(HANG_GUARD):
            outcome = await timed_chat(registry.get("p"), request_id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await registry.aclose()
    error = assert_typed(outcome.error)
    assert type(error) is expected, repr(error)
    assert error.provider == "p"
    # The original failure may be kept as the cause; what reaches the caller is typed.
    assert not isinstance(error, RecursionError)
    assert fault_server.attempts(request_id) == 1
    assert peak < MEMORY_LIMIT, f"traced peak {peak / 1e6:.0f} MB"
    if plan.startswith("nested"):
        assert any(isinstance(e, RecursionError) for e in _chain(error)) or "nested" in str(error)


@pytest.mark.parametrize("backend", REMOTE_BACKENDS)
async def test_ten_megabyte_line(fault_server: FaultServer, backend: str) -> None:
    """Under the SSE line limit: delivered whole; over Ollama's 8 MiB NDJSON limit: refused. Memory bounded."""
    registry = registry_of(
        provider_entry(backend, fault_server.url, "fault:bigline:mb=10", timeout_secs=TIMEOUT, max_retries=0)
    )
    request_id = new_id(backend)
    tracemalloc.start()
    try:
        async with asyncio.timeout(HANG_GUARD):
            outcome = await timed_chat(registry.get("p"), request_id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await registry.aclose()
    if backend == "ollama":
        assert isinstance(assert_typed(outcome.error), BadResponseError), repr(outcome.error)
    else:
        assert outcome.error is None, repr(outcome.error)
        assert outcome.response is not None
        assert len(outcome.response.text) == 10 * 1024 * 1024 + len(f"echo:{request_id}")
    assert peak < MEMORY_LIMIT, f"traced peak {peak / 1e6:.0f} MB"


@pytest.mark.parametrize("backend", ["openai", "compatible", "ollama"])
@pytest.mark.parametrize("plan", ["bigline:mb=10", "nested:depth=100000", "nested:depth=100000:where=content"])
async def test_hostile_embeddings(fault_server: FaultServer, backend: str, plan: str) -> None:
    registry = registry_of(
        provider_entry(backend, fault_server.url, f"fault:{plan}", timeout_secs=TIMEOUT, max_retries=0)
    )
    request_id = new_id(backend)
    tracemalloc.start()
    try:
        async with asyncio.timeout(HANG_GUARD):
            vectors, error, _ = await timed_embed(registry.get("p"), [request_id])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await registry.aclose()
    assert vectors is None
    assert isinstance(assert_typed(error), BadResponseError), repr(error)
    assert peak < MEMORY_LIMIT, f"traced peak {peak / 1e6:.0f} MB"
