"""RSS growth of one registry under load: the measurement `tests/reliability/test_load.py` used to assert.

    PYTHONPATH=. python bench/bench_load_memory.py            # 2,000 requests at concurrency 200
    PYTHONPATH=. python bench/bench_load_memory.py --quick    # 200 requests at concurrency 20

The same set-up as the load test (one round-robin router over compatible, claude and ollama members
pointed at the in-process fault server with a 30% `chaos:` fault rate), warmed up first; it prints
the process RSS before the run, after `registry.aclose()`, and the growth. RSS depends on the
allocator and on what else the machine runs, so it is a figure to watch here, not a test ceiling.
The historical bound (200 MB for the full run) is printed next to it for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.reliability.helpers import chaos_router_registry
from tests.servers.fault_server import FaultServer
from zeph_providers import Message

REFERENCE_BOUND_MB = 200



async def _run(url: str, total: int, concurrency: int) -> tuple[int, int, float]:
    warm = chaos_router_registry(url)
    await asyncio.gather(*(warm.get("r").chat([Message.user(f"warm-{i}")]) for i in range(30)), return_exceptions=True)
    await warm.aclose()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    registry = chaos_router_registry(url)
    router = registry.get("r")
    pending = list(range(total))

    async def worker() -> None:
        while pending:
            i = pending.pop()
            with contextlib.suppress(Exception):  # typed errors are part of the chaos; memory is measured
                await router.chat([Message.user(f"req-{i}")])

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    await registry.aclose()
    return rss_before, process.memory_info().rss, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 requests at concurrency 20")
    args = parser.parse_args()
    total, concurrency = (200, 20) if args.quick else (2000, 200)
    with FaultServer() as server:
        before, after, elapsed = asyncio.run(_run(server.url, total, concurrency))
    print(
        f"load memory: {total} requests at concurrency {concurrency} in {elapsed:.1f}s; "
        f"RSS {before / 1e6:.0f} MB -> {after / 1e6:.0f} MB, growth {(after - before) / 1e6:.0f} MB "
        f"(reference bound for the full run: {REFERENCE_BOUND_MB} MB)"
    )


if __name__ == "__main__":
    main()
