"""Response cache: replayed hits vs live loopback calls, requests/s at concurrency 64, same run.

`live`: an OpenAI-compatible provider against `bench/loopback_server.py` (a real HTTP round trip
on 127.0.0.1) with no cache. `hit (memory)`: the same provider with `[llm.providers.response_cache]`
after one warm-up call, so every measured call is replayed from the in-process store. `hit (redis)`:
the same with `[llm.state] backend = "redis"` against a `redis-server` this script starts on a free
port (only when `zeph_providers.state.redis` and `redis-server` are available). Rounds alternate
the arms so drift in the machine's load hits all alike; the median round of each is reported, with
the ratio to `live`.

    python bench/bench_cache.py [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_remote import MODEL, drive, loopback_server

CONCURRENCY = 64


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """A throwaway redis-server on a free port (None when unavailable)."""
    binary = shutil.which("redis-server")
    if binary is None or importlib.util.find_spec("zeph_providers.state.redis") is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(30)


def _registry(url: str, cache: bool, redis_url: str | None = None) -> Any:
    from zeph_providers import Registry

    entry: dict[str, Any] = {"name": "p", "type": "compatible", "model": MODEL, "base_url": f"{url}/v1"}
    entry["max_retries"] = 0
    if cache:
        entry["response_cache"] = {"ttl_secs": 3600}
    llm: dict[str, Any] = {"telemetry": False, "providers": [entry]}
    if redis_url is not None:
        llm["state"] = {"backend": "redis", "url": redis_url}
    return Registry.from_dict({"llm": llm})


async def _round(registry: Any, total: int) -> tuple[float, float, int]:
    from zeph_providers import Message

    provider = registry.get("p")
    messages = [Message.user("Say hello.")]
    hits = 0

    async def chat() -> int:
        nonlocal hits
        response = await provider.chat(messages, max_tokens=8)
        hits += response.cached
        return len(response.text)

    result = await drive(chat, total, CONCURRENCY)
    return float(result["per_s"]), float(result["cpu_us_per_call"]), hits


async def _compare(url: str, redis_url: str | None, total: int, rounds: int) -> dict[str, Any]:
    arms = {"live": _registry(url, False), "hit (memory)": _registry(url, True)}
    if redis_url is not None:
        arms["hit (redis)"] = _registry(url, True, redis_url)
    for registry in arms.values():
        await _round(registry, total // 4)  # warm: connections, imports, and the cache entry
    rates: dict[str, list[float]] = {arm: [] for arm in arms}
    cpu: dict[str, list[float]] = {arm: [] for arm in arms}
    hit_share: dict[str, float] = {}
    for _ in range(rounds):
        for arm, registry in arms.items():
            per_s, cpu_us, hits = await _round(registry, total)
            rates[arm].append(per_s)
            cpu[arm].append(cpu_us)
            hit_share[arm] = hits / total
    for registry in arms.values():
        await registry.aclose()
    live = statistics.median(rates["live"])
    return {
        "concurrency": CONCURRENCY,
        "calls_per_round": total,
        "rounds": rounds,
        "arms": {
            arm: {
                "per_s": round(statistics.median(rates[arm]), 1),
                "ratio_to_live": round(statistics.median(rates[arm]) / live, 2),
                "cpu_us_per_call": round(statistics.median(cpu[arm]), 1),
                "hit_share": hit_share[arm],
                "all_rounds": [round(v, 1) for v in rates[arm]],
            }
            for arm in arms
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="tiny rounds, for a smoke test")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    rounds = 2 if args.quick else 5
    total = 200 if args.quick else 3000
    with loopback_server() as url, redis_server() as redis_url:
        result = asyncio.run(_compare(url, redis_url, total, rounds))
    if redis_url is None:
        result["note"] = "hit (redis) not measured: zeph_providers.state.redis or redis-server unavailable"
        print(result["note"])
    for arm, row in result["arms"].items():
        print(
            f"{arm:>14}: {row['per_s']:>9.1f} req/s  ({row['ratio_to_live']:.2f}x live)  "
            f"CPU/call {row['cpu_us_per_call']:.0f} us  hits {row['hit_share']:.0%}"
            f"   (concurrency {CONCURRENCY}, median of {rounds} rounds)"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
