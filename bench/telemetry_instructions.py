"""Instruction counts of a traced call, for `valgrind --tool=callgrind` (repeatable on a shared
machine, where times are not): run N calls in one mode, twice with different N, and subtract, so
start-up and imports cancel out.

    count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/telemetry_instructions.py "$1" "$2" 2>&1 | grep -o 'Collected : [0-9]*' | grep -o '[0-9]*$'; }
    for mode in off on floor; do a=$(count $mode 50); b=$(count $mode 250); echo "$mode $(( (b - a) / 200 ))"; done

Modes: `off` (mock provider, `telemetry = false`), `on` (the same with the OpenTelemetry SDK
configured as `bench_telemetry.py` does) and `floor` (the SDK's own span + three histogram
points, no library at all). Figures: docs/observability.md.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_telemetry


async def _calls(mode: str, count: int) -> None:
    from zeph_providers import Message

    registry = bench_telemetry._registry("mock", None, mode == "on")
    provider = registry.get("p")
    messages = [Message.user("Say hello.")]
    for _ in range(count):
        await provider.chat(messages, max_tokens=8)
    await registry.aclose()


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("off", "on", "floor"):
        raise SystemExit("usage: telemetry_instructions.py off|on|floor N")
    mode, count = sys.argv[1], int(sys.argv[2])
    bench_telemetry._install_sdk()
    if mode == "floor":
        bench_telemetry._sdk_floor(count)
    else:
        asyncio.run(_calls(mode, count))


if __name__ == "__main__":
    main()
