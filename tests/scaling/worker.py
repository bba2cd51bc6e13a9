"""One replica for the cross-process tests: `python -m tests.scaling.worker '<json job>'`.

It builds its own `Registry` from the job's TOML, prints `ready`, waits for a line on stdin (so
the replicas start together), runs the job and prints one JSON line with what it saw.

Jobs:
- `{"job": "limit", "toml": ..., "provider": ..., "seconds": S}`: call the provider (fail mode)
  for S seconds; count answers, `RateLimitError`s and anything else.
- `{"job": "calls", "toml": ..., "provider": ..., "count": N}`: N calls, each outcome's type name;
  then the router's breaker status for its members.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from zeph_providers import Registry
from zeph_providers.errors import RateLimitError
from zeph_providers.types import Message


async def limit_job(registry: Registry, job: dict[str, Any]) -> dict[str, Any]:
    provider = registry.get(job["provider"])
    answered = limited = 0
    other: list[str] = []
    started = time.monotonic()
    until: float | None = None  # the run's length counts from the first call's end (client start-up)
    while until is None or time.monotonic() < until:
        try:
            await provider.chat([Message.user(f"w{answered}")])
            answered += 1
        except RateLimitError:
            limited += 1
            await asyncio.sleep(0.02)  # fail fast, then try again a little later
        except Exception as exc:
            other.append(f"{type(exc).__name__}: {exc}")
        until = until or time.monotonic() + job["seconds"]
    return {"answered": answered, "limited": limited, "other": other, "started": started, "ended": time.monotonic()}


async def calls_job(registry: Registry, job: dict[str, Any]) -> dict[str, Any]:
    provider = registry.get(job["provider"])
    outcomes: list[str] = []
    for _ in range(job["count"]):
        try:
            await provider.chat([Message.user("hi")])
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
    status = getattr(provider, "status", None)
    return {"outcomes": outcomes, "status": status() if status is not None else {}}


async def main(job: dict[str, Any]) -> None:
    registry = Registry.from_toml_string(job["toml"])
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        run = limit_job if job["job"] == "limit" else calls_job
        result = await run(registry, job)
    finally:
        await registry.aclose()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
