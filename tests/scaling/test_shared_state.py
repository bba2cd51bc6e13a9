"""Rate limits and breakers shared across registries and processes, on a real Redis and in memory.

Every bound is computed from what happened (request counts the loopback server recorded, the
clients' own start/end stamps), never from how fast the machine is. A token bucket of capacity C
refilled at r a second admits at most C + r * t requests in any span of t seconds that starts
with a full bucket: the tests check exactly that, with t measured around all the replicas' calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.fault_server import FaultServer
from tests.scaling.conftest import RedisServer
from zeph_providers import Registry
from zeph_providers.breaker import Admission, SharedCircuitBreaker
from zeph_providers.config import loads_config
from zeph_providers.errors import RateLimitError
from zeph_providers.state import MemoryStore
from zeph_providers.state.redis import RedisStore
from zeph_providers.types import Message

ROOT = Path(__file__).resolve().parents[2]
NEVER_HANG = 240.0  # a hang guard for a replica process, not a speed requirement


def state_table(redis: RedisServer | None, **extra: object) -> str:
    if redis is None:
        return ""
    lines = ["[llm.state]", 'backend = "redis"', f'url = "{redis.url}"', f'key_prefix = "t{uuid.uuid4().hex[:8]}:"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in {"timeout_secs": 2.0, **extra}.items()]
    return "\n".join(lines) + "\n"


def remote(name: str, server: FaultServer, *, model: str = "m", **extra: object) -> str:
    lines = ["[[llm.providers]]", f'name = "{name}"', 'type = "compatible"', f'base_url = "{server.url}/v1"']
    lines += [f'model = "{model}"', "max_retries = 0"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def router(name: str, *members: str, **extra: object) -> str:
    lines = ["[[llm.providers]]", f'name = "{name}"', 'type = "router"', f"providers = {json.dumps(list(members))}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def run_replicas(*jobs: dict[str, Any]) -> list[dict[str, Any]]:
    """Start one worker process per job, let them go together, return each one's JSON result."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.scaling.worker", json.dumps(job)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        for job in jobs
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == b"ready", process.stderr.read() if process.stderr else ""
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            process.stdin.flush()
        results = []
        for process in processes:
            out, err = process.communicate(timeout=NEVER_HANG)
            assert process.returncode == 0, err.decode()
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


# ----- limits ------------------------------------------------------------------------------------


def test_two_processes_share_one_60_rpm_limit(redis_server: RedisServer, loopback: FaultServer) -> None:
    toml = state_table(redis_server) + remote("gpt", loopback, rpm=60, rate_limit="fail")
    job = {"job": "limit", "toml": toml, "provider": "gpt", "seconds": 3.0}
    results = run_replicas(job, job)
    assert [r["other"] for r in results] == [[], []]
    seen = loopback.requests()
    answered = sum(r["answered"] for r in results)
    assert len(seen) == answered  # every admitted call reached the server, none more
    elapsed = max(r["ended"] for r in results) - min(r["started"] for r in results)
    assert all(min(r["started"] for r in results) <= s.at <= max(r["ended"] for r in results) for s in seen)
    assert 60 <= len(seen) <= 60 + elapsed * 1.0  # capacity 60 + one a second, across both processes
    assert sum(r["limited"] for r in results) > 0


async def test_two_registries_in_one_process_share_a_memory_limit(loopback: FaultServer) -> None:
    store = MemoryStore(shared=True)
    toml = remote("gpt", loopback, rpm=60, rate_limit="fail")
    registries = [Registry(loads_config(toml), state=store) for _ in range(2)]
    started = time.monotonic()

    async def replica(registry: Registry) -> int:
        answered = 0
        until: float | None = None  # the 1.5 s run starts after the first call (client start-up)
        while until is None or time.monotonic() < until:
            try:
                await registry.get("gpt").chat([Message.user("x")])
                answered += 1
            except RateLimitError:
                await asyncio.sleep(0.02)
            until = until or time.monotonic() + 1.5
        return answered

    counts = await asyncio.gather(*(replica(r) for r in registries))
    elapsed = time.monotonic() - started
    assert len(loopback.requests()) == sum(counts)
    assert 60 <= sum(counts) <= 60 + elapsed * 1.0
    for registry in registries:
        await registry.aclose()


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_500_concurrent_callers_none_over_the_limit_none_lost(
    backend: str, redis_server: RedisServer, loopback: FaultServer
) -> None:
    toml = state_table(redis_server if backend == "redis" else None, timeout_secs=5.0)
    toml += remote("gpt", loopback, rpm=100, rate_limit="fail", max_connections=50)
    async with Registry.from_toml_string(toml) as registry:
        provider = registry.get("gpt")
        started = time.monotonic()
        results = await asyncio.gather(
            *(provider.chat([Message.user(f"c{i}")]) for i in range(500)), return_exceptions=True
        )
        elapsed = time.monotonic() - started
        store = registry.state
    answered = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, RateLimitError) and r.provider == "gpt" for r in refused), refused[:3]
    assert len(answered) + len(refused) == 500
    assert len(loopback.requests()) == len(answered)
    assert 100 <= len(answered) <= 100 + elapsed * 100 / 60
    if isinstance(store, RedisStore):
        assert store.fallbacks == 0  # the shared store answered every operation


async def test_a_429_in_one_registry_blocks_the_other(redis_server: RedisServer, loopback: FaultServer) -> None:
    toml = state_table(redis_server)
    toml += remote("gpt", loopback, model="fault:429:retry-after=30,ok", rpm=1000, rate_limit="fail")
    async with Registry.from_toml_string(toml) as first, Registry.from_toml_string(toml) as second:
        with pytest.raises(RateLimitError) as server_said:
            await first.get("gpt").chat([Message.user("a")])
        assert server_said.value.retry_after == 30.0
        await first.get("gpt").rate_limiter.drain()  # type: ignore[attr-defined]
        with pytest.raises(RateLimitError) as we_said:
            await second.get("gpt").chat([Message.user("a")])
        assert "client-side" in str(we_said.value)
        assert 0 < (we_said.value.retry_after or 0) <= 30
    assert len(loopback.requests()) == 1


# ----- breakers ----------------------------------------------------------------------------------


def test_a_breaker_opened_in_process_a_is_honoured_in_process_b(
    redis_server: RedisServer, loopback: FaultServer
) -> None:
    toml = state_table(redis_server) + remote("bad", loopback, model="fault:500")
    toml += router("r", "bad", failure_threshold=2, cooldown_secs=600)
    (a,) = run_replicas({"job": "calls", "toml": toml, "provider": "r", "count": 2})
    assert all(outcome.startswith("AllProvidersFailedError") for outcome in a["outcomes"])
    assert len(loopback.requests()) == 2
    (b,) = run_replicas({"job": "calls", "toml": toml, "provider": "r", "count": 3})
    assert all("circuit open" in outcome for outcome in b["outcomes"]), b["outcomes"]
    assert b["status"]["bad"]["state"] == "open"
    assert len(loopback.requests()) == 2  # process B sent nothing to the failing member


async def test_in_memory_a_breaker_opened_by_one_registry_is_honoured_by_another(loopback: FaultServer) -> None:
    store = MemoryStore(shared=True)
    toml = remote("bad", loopback, model="fault:500") + router("r", "bad", failure_threshold=2, cooldown_secs=600)
    one, two = Registry(loads_config(toml), state=store), Registry(loads_config(toml), state=store)
    for _ in range(2):
        with pytest.raises(Exception, match="HTTP 500"):
            await one.get("r").chat([Message.user("x")])
    with pytest.raises(Exception, match="circuit open"):
        await two.get("r").chat([Message.user("x")])
    assert len(loopback.requests()) == 2
    await one.aclose()
    await two.aclose()


async def test_one_half_open_probe_across_replicas(redis_server: RedisServer) -> None:
    stores = [RedisStore(redis_server.url, key_prefix="probe:") for _ in range(10)]
    cooling = [SharedCircuitBreaker(store, "r:cooling", 1, 600.0) for store in stores]
    first = await cooling[0].admit()
    assert first is Admission.NORMAL
    await cooling[0].report(first, False)
    assert {await b.admit() for b in cooling} == {None}  # open for every replica
    # cooldown 0: tripped and at once half-open; ten replicas ask together, one gets the probe
    ready = [SharedCircuitBreaker(store, "r:ready", 1, 0.0) for store in stores]
    first = await ready[0].admit()
    assert first is Admission.NORMAL
    await ready[0].report(first, False)
    admissions = await asyncio.gather(*(b.admit() for b in ready))
    assert admissions.count(Admission.PROBE) == 1
    assert admissions.count(None) == 9
    prober = ready[admissions.index(Admission.PROBE)]
    await prober.report(Admission.PROBE, True)  # the probe succeeded: closed for everyone
    assert {await b.admit() for b in ready} == {Admission.NORMAL}
    for store in stores:
        assert store.fallbacks == 0
        await store.aclose()


# ----- Redis goes away -----------------------------------------------------------------------------


async def test_redis_killed_and_restarted_mid_run_no_caller_error(
    redis_server: RedisServer, loopback: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="zeph_providers.state")
    toml = state_table(redis_server, timeout_secs=0.5, retry_secs=0.2)
    toml += remote("gpt", loopback, rpm=100_000) + router("r", "gpt")
    errors: list[BaseException] = []
    answered = 0
    stop = asyncio.Event()
    async with Registry.from_toml_string(toml) as registry:
        store = registry.state
        assert isinstance(store, RedisStore)

        async def caller() -> None:
            nonlocal answered
            while not stop.is_set():
                try:
                    await registry.get("r").chat([Message.user("x")])
                    answered += 1
                except BaseException as exc:
                    errors.append(exc)
                await asyncio.sleep(0.005)

        callers = [asyncio.ensure_future(caller()) for _ in range(4)]
        await _until(lambda: answered >= 20)
        redis_server.kill()
        before = answered
        await _until(lambda: answered >= before + 20 and not store.available)
        assert store.fallbacks > 0
        redis_server.start()
        await _until(lambda: store.available)
        after = answered
        await _until(lambda: answered >= after + 20)
        stop.set()
        await asyncio.gather(*callers)
    assert errors == []
    messages = [r.getMessage() for r in caplog.records if r.name == "zeph_providers.state"]
    assert sum("unreachable" in m for m in messages) == 1  # one warning for the whole outage
    assert sum("reachable again" in m for m in messages) == 1


async def _until(condition: Any, limit: float = NEVER_HANG) -> None:
    """Wait until `condition()` holds (a hang guard, not a timing assertion)."""
    until = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < until, "condition never held"
        await asyncio.sleep(0.02)


# ----- the password ------------------------------------------------------------------------------

PASSWORD = "s3cret-Pa55word-XYZ"


async def test_the_redis_password_is_never_printed(
    tmp_path: Path, loopback: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = RedisServer(tmp_path, password=PASSWORD).start()
    try:
        good = RedisServer(tmp_path, password=PASSWORD)
        good.port = server.port
        wrong = good.url.replace(PASSWORD, PASSWORD + "-wrong")
        toml = state_table(good) + remote("gpt", loopback, rpm=10)
        async with Registry.from_toml_string(toml) as registry:
            await registry.get("gpt").chat([Message.user("x")])
            assert isinstance(registry.state, RedisStore) and registry.state.fallbacks == 0
            shown = [repr(registry), repr(registry.state), str(registry.state), repr(registry.config)]
            shown.append(repr(registry.config.state))
        async with Registry.from_toml_string(toml.replace(good.url, wrong)) as refused:
            await refused.get("gpt").chat([Message.user("x")])  # Redis says no: local state, no error
            assert isinstance(refused.state, RedisStore) and not refused.state.available
            shown.append(repr(refused.state))
        with pytest.raises(Exception) as bad_scheme:
            loads_config(toml.replace("redis://", "http://"))
        shown.append(str(bad_scheme.value))
        shown.append(caplog.text)
        assert any("unreachable" in r.getMessage() for r in caplog.records)
        for text in shown:
            assert PASSWORD not in text
    finally:
        server.kill()


async def test_a_large_similarity_index_stays_readable_and_bounded(redis_server: RedisServer) -> None:
    """Past Lua's unpack() limit (a few thousand values) the index still reads, the store stays
    shared (no fallback), and it keeps at most INDEX_LIMIT entries, the soonest to expire going first."""
    from zeph_providers.state.redis import INDEX_LIMIT

    store = RedisStore(redis_server.url, key_prefix="big:")
    try:
        for n in range(INDEX_LIMIT + 500):
            await store.index_add("ns", f"k{n}", [float(n), 1.0], ttl_s=60.0 + n)
        items = await store.index_items("ns")
        assert store.available
        assert len(items) == INDEX_LIMIT
        assert {key for key, _ in items} == {f"k{n}" for n in range(500, INDEX_LIMIT + 500)}
    finally:
        await store.aclose()
