"""A bounded load test over real loopback HTTP: 2,000 requests at concurrency 200 through one registry.

One router over three members of different backends (compatible, claude, ollama), each pointed at
the fault server with a `chaos:` model: every attempt fails with probability 0.3, with a fault drawn
from 500 / 503 / 429 / bad JSON / close mid-body / reset before the reply / reset after the first
chunk, deterministically from (seed, member, request id, attempt), so the run does not depend on
scheduling. Checked: every request gets exactly its own answer (the id the server echoes) or a
typed error, each with its attempts recorded; every completion the server served beyond the one
the caller got is explained by an attempt of that request that timed out (a member's deadline
cancels a try after the server chose to answer; the router falls back, another member serves it
again: duplicate work on the server, never a second answer to the caller); client sockets, file
descriptors and threads return to their starting counts
after `registry.aclose()`. (Memory growth is measured by `bench/bench_load_memory.py`, not
asserted here: RSS depends on the allocator and on what else the machine runs.)
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
from collections.abc import Callable

import psutil  # type: ignore[import-untyped]

from tests.reliability.helpers import CHAOS_MEMBERS, chaos_router_registry
from tests.servers.fault_server import FaultServer, echo_text
from zeph_providers import Message
from zeph_providers.errors import (
    AllProvidersFailedError,
    LlmError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from zeph_providers.types import ChatResponse

TOTAL = 2000
CONCURRENCY = 200
MEMBERS = CHAOS_MEMBERS
WALL_LIMIT = 600.0  # a hang guard, not a speed requirement (the machine may be slow and busy)



def _client_sockets(port: int) -> int:
    """This process's TCP connections to the server's port (the client side only)."""
    return sum(1 for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port == port)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _settle(check: Callable[[], bool], *, secs: float = 5.0) -> None:
    """Poll (bounded) until `check()` is true: the server closes its side once the client has."""
    for _ in range(int(secs / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)


async def test_load_every_request_gets_its_own_answer_or_a_typed_error() -> None:
    with FaultServer() as server:
        # Warm up (lazy SDK imports, the loop's executor) with a registry of its own, then measure.
        warm = chaos_router_registry(server.url)
        await asyncio.gather(
            *(warm.get("r").chat([Message.user(f"warm-{i}")]) for i in range(30)), return_exceptions=True
        )
        await warm.aclose()
        await _settle(lambda: _client_sockets(server.port) == 0)
        server.clear()
        # The loop's default executor (it runs getaddrinfo for the HTTP stack) grows up to its
        # max_workers on demand and lives as long as the loop: start all its threads now.
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, time.sleep, 0.05) for _ in range(64)))
        threads_before = threading.active_count()
        sockets_before = _client_sockets(server.port)
        fds_before = _fds()

        registry = chaos_router_registry(server.url)
        router = registry.get("r")
        results: list[ChatResponse | BaseException | None] = [None] * TOTAL
        pending: collections.deque[int] = collections.deque(range(TOTAL))
        peak_sockets = 0

        async def worker() -> None:
            nonlocal peak_sockets
            while pending:
                i = pending.popleft()
                try:
                    results[i] = await router.chat([Message.user(f"req-{i}")])
                except Exception as exc:
                    results[i] = exc
                if i % 250 == 0:
                    peak_sockets = max(peak_sockets, _client_sockets(server.port))

        started = time.monotonic()
        async with asyncio.timeout(WALL_LIMIT):
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.monotonic() - started
        sockets_during = _client_sockets(server.port)
        await registry.aclose()
        await _settle(lambda: _client_sockets(server.port) == sockets_before and _fds() <= fds_before)

        # Every request has exactly one outcome: its own answer, or a typed error.
        assert all(r is not None for r in results)
        answered: dict[int, ChatResponse] = {}
        failed: dict[int, LlmError] = {}
        for i, result in enumerate(results):
            if isinstance(result, ChatResponse):
                assert result.text == echo_text(f"req-{i}"), (i, result.text)
                assert result.provider in MEMBERS
                answered[i] = result
            else:
                assert isinstance(result, LlmError), f"request {i}: untyped {result!r}"
                failed[i] = result
        assert len(answered) + len(failed) == TOTAL
        assert {type(e) for e in failed.values()} <= {
            AllProvidersFailedError,
            ProviderUnavailableError,  # a stream reset after its first chunk: no fallback by design
            ProviderTimeoutError,
        }

        # The server's view: every id reached it; a completion it served for an id beyond the one
        # the caller got (or any, for a failed id) is explained by a try of that id that timed out:
        # the member's deadline cut it off after the server had chosen to answer, and the router (or
        # the retry loop) asked again. Fallback after a timeout can duplicate work on the server;
        # the caller still gets exactly one answer (docs/reliability.md, "Duplicate work").
        served = collections.Counter(s.request_id for s in server.requests() if s.mode == "ok")
        server_ids = {s.request_id for s in server.requests()}
        for i in range(TOTAL):
            assert f"req-{i}" in server_ids, f"request {i} never reached the server"
        duplicates = 0
        for i, result in enumerate(results):
            assert isinstance(result, ChatResponse | LlmError)
            attempts = list(result.attempts)
            assert attempts, f"request {i}: no attempts recorded"
            timed_out = sum(1 for a in attempts if a.timed_out)
            extra = served[f"req-{i}"] - (1 if isinstance(result, ChatResponse) else 0)
            assert 0 <= extra <= timed_out, (i, served[f"req-{i}"], [(a.provider, a.outcome) for a in attempts])
            duplicates += extra
        for i, response in answered.items():
            last = response.attempts[-1]
            assert (last.provider, last.outcome) == (response.provider, "ok"), (i, response.attempts)
            ok_models = {s.model for s in server.requests(f"req-{i}") if s.mode == "ok"}
            assert MEMBERS[response.provider][1] in ok_models
        assert len(answered) > TOTAL * 0.8  # fallback and retries hide most of a 30% fault rate
        assert failed  # and the seed does produce some end-to-end failures

        # Resources: back to the start after aclose().
        assert sockets_during <= 3 * 100  # at most max_connections per member
        assert _client_sockets(server.port) == sockets_before == 0
        assert _fds() <= fds_before
        assert threading.active_count() == threads_before, [t.name for t in threading.enumerate()]
        print(
            f"\nload: {TOTAL} requests at concurrency {CONCURRENCY} in {elapsed:.1f}s; "
            f"{len(answered)} answered, {len(failed)} typed errors "
            f"({collections.Counter(type(e).__name__ for e in failed.values())}); "
            f"server saw {len(server.requests())} attempts ({duplicates} duplicate completions); "
            f"peak client sockets {peak_sockets}"
        )
