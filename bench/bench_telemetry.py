"""Tracing on vs off: requests/s of the same client at concurrency 64, in the same run.

`on`: a registry with `telemetry = true` while the OpenTelemetry SDK is configured as an app would
(a `TracerProvider` with a `BatchSpanProcessor` to an exporter that drops the spans, a
`MeterProvider` with a metric reader), so every span and histogram point is really built.
`off`: the same config with `[llm] telemetry = false`. Rounds alternate off/on so drift in the
machine's load hits both alike; the median round of each is reported.

Targets: the OpenAI-compatible backend against `bench/loopback_server.py` (a real HTTP round trip
on 127.0.0.1) and the mock backend (no I/O at all: the worst case, pure overhead). A first row
measures the mock before the SDK is configured: what `opentelemetry-api` alone costs an app that
never set up OpenTelemetry (the no-op providers).

    python bench/bench_telemetry.py [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_remote import MODEL, drive, loopback_server

CONCURRENCY = 64


def _install_sdk() -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        exported = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            Drop.exported += len(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=65536))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def _registry(kind: str, url: str | None, telemetry: bool) -> Any:
    from zeph_providers import Registry

    if kind == "mock":
        entry: dict[str, Any] = {"name": "p", "type": "mock", "model": MODEL, "responses": ["Hello there friend"]}
    else:
        entry = {"name": "p", "type": "compatible", "model": MODEL, "base_url": f"{url}/v1", "max_retries": 0}
    return Registry.from_dict({"llm": {"telemetry": telemetry, "providers": [entry]}})


async def _round(registry: Any, total: int) -> tuple[float, float]:
    from zeph_providers import Message

    provider = registry.get("p")
    messages = [Message.user("Say hello.")]

    async def chat() -> int:
        response = await provider.chat(messages, max_tokens=8)
        return len(response.text)

    result = await drive(chat, total, CONCURRENCY)
    return float(result["per_s"]), float(result["cpu_us_per_call"])


async def _compare(kind: str, url: str | None, total: int, rounds: int, label: str = "") -> dict[str, Any]:
    off, on = _registry(kind, url, False), _registry(kind, url, True)
    await _round(off, total // 4)  # warm both: connections, first-use imports
    await _round(on, total // 4)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        for arm, registry in (("off", off), ("on", on)):
            per_s, cpu_us = await _round(registry, total)
            rates[arm].append(per_s)
            cpu[arm].append(cpu_us)
    await off.aclose()
    await on.aclose()
    med_off, med_on = statistics.median(rates["off"]), statistics.median(rates["on"])
    cpu_off, cpu_on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    return {
        "target": label or kind,
        "concurrency": CONCURRENCY,
        "calls_per_round": total,
        "rounds": rounds,
        "off_per_s": round(med_off, 1),
        "on_per_s": round(med_on, 1),
        "change_pct": round((med_on / med_off - 1.0) * 100.0, 2),
        "cpu_us_per_call_off": round(cpu_off, 1),
        "cpu_us_per_call_on": round(cpu_on, 1),
        "cpu_change_pct": round((cpu_on / cpu_off - 1.0) * 100.0, 2),
        "all_rounds": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
    }


def _sdk_floor(iterations: int) -> float:
    """CPU microseconds the configured SDK itself takes for what one traced chat call emits: a span
    with the same request and response attributes, and its three histogram points. No library
    could trace a call for less with this SDK set-up; the rest of the "on" cost is ours."""
    import time

    from opentelemetry import metrics, trace
    from opentelemetry.trace import SpanKind

    tracer = trace.get_tracer("floor")
    meter = metrics.get_meter("floor")
    duration = meter.create_histogram("floor.duration", unit="s")
    tokens = meter.create_histogram("floor.tokens", unit="{token}")
    request = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
        "zeph.provider": "p",
        "server.address": "127.0.0.1",
        "server.port": 8080,
        "gen_ai.request.stream": False,
        "gen_ai.request.max_tokens": 8,
    }
    reply = {
        "zeph.attempts": 1,
        "gen_ai.response.model": MODEL,
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 3,
    }
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": MODEL}
    base["gen_ai.response.model"] = MODEL
    points = (dict(base, **{"gen_ai.token.type": "input"}), dict(base, **{"gen_ai.token.type": "output"}))
    start = time.process_time()
    for _ in range(iterations):
        span = tracer.start_span(f"chat {MODEL}", kind=SpanKind.CLIENT, attributes=request)
        span.set_attributes(reply)
        span.end()
        duration.record(0.01, base)
        tokens.record(5, points[0])
        tokens.record(3, points[1])
    return (time.process_time() - start) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny rounds, for a smoke test")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    rounds = 2 if args.quick else 5
    results = [asyncio.run(_compare("mock", None, 500 if args.quick else 20000, rounds, "mock, no SDK"))]
    _install_sdk()
    with loopback_server() as url:
        results.append(asyncio.run(_compare("compatible", url, 200 if args.quick else 3000, rounds)))
    results.append(asyncio.run(_compare("mock", None, 500 if args.quick else 20000, rounds)))
    floor = statistics.median(_sdk_floor(200 if args.quick else 5000) for _ in range(rounds))
    for row in results:
        print(
            f"{row['target']:>12}: off {row['off_per_s']:>9.1f} req/s   on {row['on_per_s']:>9.1f} req/s"
            f"   change {row['change_pct']:+.2f}%   CPU/call {row['cpu_us_per_call_off']:.0f} -> "
            f"{row['cpu_us_per_call_on']:.0f} us ({row['cpu_change_pct']:+.1f}%)"
            f"   (concurrency {CONCURRENCY}, median of {rounds} rounds)"
        )
    remote = results[1]
    print(
        f"  SDK floor: {floor:.0f} us CPU per call for the span and 3 histogram points alone"
        f" = {floor / remote['cpu_us_per_call_off'] * 100:.1f}% of an untraced {remote['target']} call;"
        f" tracing added {remote['cpu_us_per_call_on'] - remote['cpu_us_per_call_off']:.0f} us there"
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": results, "sdk_floor_us": round(floor, 1)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
