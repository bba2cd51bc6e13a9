"""Per-call overhead of the shared state: rate limiter + circuit breaker + cache lookup, Redis vs memory.

What one call through a provider with `rpm`/`tpm`, a router breaker and a response cache adds:
`limiter.acquire()` + `reservation.settle()` + `breaker.admit()` + `breaker.report()` +
`store.cache_get()`, timed per call with `concurrency` callers in flight at once (each call waits
`--upstream-ms` for its "model" between the checks before and the bookkeeping after; that wait is
not counted), on the in-process store and on a real Redis (a `redis-server` this script starts
on a free loopback port, nothing on disk). The limits are set high enough never to make a caller
wait: this measures the bookkeeping, not the limiting. The Redis figure is four round trips
(bucket take, breaker admit, cache GET, bucket settle; a success writes nothing to the breaker)
plus the client's CPU: on a busy machine, 64 callers queue for the one event loop.
Goal (issue 14): Redis p50 added latency <= 1 ms on loopback.

    python bench/bench_scaling.py            # 6 400 calls per store, concurrency 64, 100 ms upstream
    python bench/bench_scaling.py --quick    # a smoke run (numbers mean nothing)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zeph_providers.breaker import CircuitBreaker, SharedCircuitBreaker
from zeph_providers.limits import RateLimiter
from zeph_providers.state import MemoryStore, StateStore


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*command, "--dir", directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    until = time.monotonic() + 60
    while time.monotonic() < until:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    process.kill()
    raise RuntimeError("redis-server did not start")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(
    store: StateStore, breaker: CircuitBreaker, calls: int, concurrency: int, upstream: float
) -> dict[str, Any]:
    limiter = RateLimiter("bench", rpm=10_000_000, tpm=1_000_000_000, store=store)
    latencies: list[float] = []
    remaining = calls

    async def one() -> None:
        started = time.perf_counter()
        reservation = await limiter.acquire(120)
        admission = await breaker.admit()
        assert admission is not None
        await store.cache_get("bench:key")
        before = time.perf_counter()
        await asyncio.sleep(upstream)  # the model's answer: not the store's time
        after = time.perf_counter()
        await breaker.report(admission, True)
        await reservation.settle(100)
        latencies.append(before - started + time.perf_counter() - after)

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    for _ in range(min(200, calls)):  # warm-up: connections, scripts loaded
        await one()
    latencies.clear()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return {
        "calls": len(latencies),
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p95_ms": percentile(latencies, 0.95) * 1000,
        "calls_per_s": len(latencies) / wall,
    }


async def run(calls: int, concurrency: int, upstream: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    memory = MemoryStore()
    results["memory"] = await measure(memory, CircuitBreaker(), calls, concurrency, upstream)
    if shutil.which("redis-server") is None:
        results["redis"] = None
        print("redis-server not installed: Redis row skipped")
        return results
    from zeph_providers.state.redis import RedisStore

    with tempfile.TemporaryDirectory() as directory:
        process, url = start_redis(directory)
        try:
            store = RedisStore(url, key_prefix="bench:", timeout_secs=2.0)
            breaker = SharedCircuitBreaker(store, "bench:member")
            results["redis"] = await measure(store, breaker, calls, concurrency, upstream)
            results["redis"]["fallbacks"] = store.fallbacks
            await store.aclose()
        finally:
            process.kill()
            process.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 calls per store")
    parser.add_argument("--calls", type=int, default=6_400)
    parser.add_argument("--upstream-ms", type=float, default=100.0, help="the simulated model call per request")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    calls = 300 if args.quick else args.calls
    results = asyncio.run(run(calls, args.concurrency, args.upstream_ms / 1000))
    print(
        f"per-call overhead of limiter + breaker + cache lookup, concurrency {args.concurrency}, "
        f"{args.upstream_ms:g} ms simulated upstream per call (not counted)"
    )
    print(f"{'store':<8} {'calls':>7} {'p50 ms':>8} {'p95 ms':>8} {'calls/s':>9}")
    for name, row in results.items():
        if row is not None:
            print(f"{name:<8} {row['calls']:>7} {row['p50_ms']:>8.3f} {row['p95_ms']:>8.3f} {row['calls_per_s']:>9.0f}")
    memory, redis = results["memory"], results.get("redis")
    if redis is not None:
        ratio = redis["p50_ms"] / memory["p50_ms"] if memory["p50_ms"] else float("inf")
        verdict = "meets" if redis["p50_ms"] <= 1.0 else "misses"
        print(f"redis p50 {redis['p50_ms']:.3f} ms = {ratio:.1f}x memory; {verdict} the 1 ms goal")
        if redis.get("fallbacks"):
            print(f"warning: {redis['fallbacks']} operations fell back to local state (Redis too slow?)")
    if args.json is not None:
        args.json.write_text(json.dumps({"benchmark": "scaling", "quick": args.quick, "results": results}, indent=2))


if __name__ == "__main__":
    main()
