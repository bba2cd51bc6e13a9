"""Client overhead against a canned loopback server: requests/s and streamed chunks/s.

The server (`bench/loopback_server.py`) runs in its own process on 127.0.0.1 and answers from a
cache, so what differs between rows is the client: the raw official SDKs (openai `AsyncOpenAI`,
anthropic `AsyncAnthropic`, ollama `AsyncClient`), zeph-providers (`registry.get(...).chat` /
`chat_stream` for the openai, compatible, claude and ollama types) and litellm `acompletion`
(its openai-compatible route). Each client runs in its own worker process; rounds interleave the
clients and we keep the median per scenario.

Note: zeph-providers' `chat()` always streams on the wire (one code path for chat and stream), so
its "chat" row parses an SSE/NDJSON body where the raw SDKs parse one JSON document.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, Result, Row, emit, has_module, median, parse_args

MODEL = "bench-model"
SYSTEM = "You are a helpful assistant. Answer briefly."
USER = "Say hello and offer help."
CHAT_TOKENS = 8

ChatFn = Callable[[], Awaitable[int]]
StreamFn = Callable[[], Awaitable[int]]


@dataclass
class Client:
    chat: ChatFn
    stream: StreamFn
    close: Callable[[], Awaitable[None]]


# ----- clients -----------------------------------------------------------------------------


def _zeph(kind: str, url: str, stream_tokens: int) -> Client:
    from zeph_providers import ContentChunk, Message, Registry

    base = {"openai": f"{url}/v1", "compatible": f"{url}/v1", "claude": url, "ollama": url}[kind]
    provider_cfg: dict[str, Any] = {"name": "p", "type": kind, "model": MODEL, "base_url": base, "max_retries": 0}
    if kind in ("openai", "claude"):
        provider_cfg["api_key"] = "sk-bench-dummy"
    registry = Registry.from_dict({"llm": {"providers": [provider_cfg]}})
    provider = registry.get("p")
    messages = [Message.system(SYSTEM), Message.user(USER)]

    async def chat() -> int:
        response = await provider.chat(messages, max_tokens=CHAT_TOKENS)
        return len(response.text)

    async def stream() -> int:
        count = 0
        async with provider.chat_stream(messages, max_tokens=stream_tokens) as chunks:
            async for chunk in chunks:
                if isinstance(chunk, ContentChunk):
                    count += 1
        return count

    return Client(chat, stream, registry.aclose)


def _raw_openai(url: str, stream_tokens: int) -> Client:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-bench-dummy", max_retries=0)
    messages: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]

    async def chat() -> int:
        response = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=CHAT_TOKENS)
        return len(response.choices[0].message.content or "")

    async def stream() -> int:
        count = 0
        chunks = await client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=stream_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                count += 1
        return count

    return Client(chat, stream, client.close)


def _raw_anthropic(url: str, stream_tokens: int) -> Client:
    from anthropic import AsyncAnthropic

    client = AsyncAnthropic(base_url=url, api_key="sk-ant-bench-dummy", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": USER}]

    async def chat() -> int:
        response = await client.messages.create(model=MODEL, system=SYSTEM, messages=messages, max_tokens=CHAT_TOKENS)
        return len(response.content)

    async def stream() -> int:
        count = 0
        events = await client.messages.create(
            model=MODEL, system=SYSTEM, messages=messages, max_tokens=stream_tokens, stream=True
        )
        async for event in events:
            if event.type == "content_block_delta":
                count += 1
        return count

    return Client(chat, stream, client.close)


def _raw_ollama(url: str, stream_tokens: int) -> Client:
    import ollama

    client = ollama.AsyncClient(host=url)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]

    async def chat() -> int:
        response = await client.chat(model=MODEL, messages=messages, options={"num_predict": CHAT_TOKENS})
        return len(response.message.content or "")

    async def stream() -> int:
        count = 0
        parts = await client.chat(model=MODEL, messages=messages, options={"num_predict": stream_tokens}, stream=True)
        async for part in parts:
            if part.message.content:
                count += 1
        return count

    async def close() -> None:
        await client._client.aclose()

    return Client(chat, stream, close)


def _litellm(url: str, stream_tokens: int) -> Client:
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    common: dict[str, Any] = {
        "model": f"openai/{MODEL}",
        "api_base": f"{url}/v1",
        "api_key": "sk-bench-dummy",
        "messages": messages,
        "num_retries": 0,
    }

    async def chat() -> int:
        response: Any = await litellm.acompletion(**common, max_tokens=CHAT_TOKENS)
        return len(response.choices[0].message.content or "")

    async def stream() -> int:
        count = 0
        chunks: Any = await litellm.acompletion(**common, max_tokens=stream_tokens, stream=True)
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                count += 1
        return count

    async def close() -> None:
        with contextlib.suppress(Exception):
            await litellm.close_litellm_async_clients()

    return Client(chat, stream, close)


CLIENTS: dict[str, tuple[str | None, Callable[[str, int], Client]]] = {
    # name: (module that must be importable, factory)
    "raw-openai": ("openai", _raw_openai),
    "zeph-openai": ("openai", lambda url, n: _zeph("openai", url, n)),
    "zeph-compatible": ("openai", lambda url, n: _zeph("compatible", url, n)),
    "litellm": ("litellm", _litellm),
    "raw-anthropic": ("anthropic", _raw_anthropic),
    "zeph-claude": ("anthropic", lambda url, n: _zeph("claude", url, n)),
    "raw-ollama": ("ollama", _raw_ollama),
    "zeph-ollama": ("ollama", lambda url, n: _zeph("ollama", url, n)),
}

# (ours, peer, scenario family) pairs that make the table
PAIRS: list[tuple[str, str, str]] = [
    ("zeph-openai", "raw-openai", ">=0.9"),
    ("zeph-compatible", "raw-openai", ">=0.9"),
    ("zeph-claude", "raw-anthropic", ">=0.9"),
    ("zeph-ollama", "raw-ollama", ">=0.9"),
    ("zeph-compatible", "litellm", ">=2.0"),
]


# ----- load driver -------------------------------------------------------------------------


async def drive(fn: Callable[[], Awaitable[int]], total: int, concurrency: int) -> dict[str, float]:
    """Run `total` calls with `concurrency` in flight; wall and CPU seconds, calls/s, units/s."""
    remaining = total
    units = 0

    async def worker() -> None:
        nonlocal remaining, units
        while remaining > 0:
            remaining -= 1
            got = await fn()  # not `units += await fn()`: that reads `units` before the await
            units += got

    cpu = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "calls": total,
        "per_s": total / wall,
        "units": units,
        "units_per_s": units / wall,
        "cpu_us_per_call": cpu / total * 1e6,
    }


def scenarios(quick: bool) -> list[tuple[str, str, int, int]]:
    """(name, kind, concurrency, total calls)."""
    if quick:
        return [
            ("chat c1", "chat", 1, 5),
            ("chat c64", "chat", 8, 16),
            ("stream c1", "stream", 1, 2),
            ("stream c64", "stream", 8, 8),
        ]
    return [
        ("chat c1", "chat", 1, 500),
        ("chat c64", "chat", 64, 2000),
        ("stream c1", "stream", 1, 40),
        ("stream c64", "stream", 64, 128),
    ]


async def worker_main(name: str, url: str, quick: bool, stream_tokens: int, profile: str | None) -> dict[str, Any]:
    client = CLIENTS[name][1](url, stream_tokens)
    out: dict[str, Any] = {}
    try:
        # warm-up: open the pool, build lazy state (ollama's /api/show), fill caches
        await drive(client.chat, 4 if quick else 200, 2 if quick else 64)
        await drive(client.stream, 2 if quick else 16, 2 if quick else 16)
        for label, kind, concurrency, total in scenarios(quick):
            fn = client.chat if kind == "chat" else client.stream
            if profile and label == profile:
                profiler = cProfile.Profile()
                profiler.enable()
                out[label] = await drive(fn, total, concurrency)
                profiler.disable()
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
                out["profile"] = text.getvalue()
            else:
                out[label] = await drive(fn, total, concurrency)
    finally:
        await client.close()
    return out


# ----- orchestration -----------------------------------------------------------------------


@contextlib.contextmanager
def loopback_server() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        proc = subprocess.Popen([sys.executable, str(BENCH_DIR / "loopback_server.py"), "--port-file", str(port_file)])
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the loopback server did not start")
                time.sleep(0.02)
            yield f"http://127.0.0.1:{int(port_file.read_text())}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_worker(name: str, url: str, quick: bool, stream_tokens: int, profile: str | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", name, "--url", url, "--stream-tokens", str(stream_tokens)]
    if quick:
        cmd.append("--quick")
    if profile:
        cmd += ["--profile", profile]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise RuntimeError(tail)
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0] if __doc__ else "",
        [
            ("--worker", {"help": "internal: run one client against --url and print JSON"}),
            ("--url", {}),
            ("--rounds", {"type": int, "default": 2}),
            ("--stream-tokens", {"type": int, "default": 0}),
            ("--profile", {"help": "scenario to profile with cProfile in each zeph worker, e.g. 'chat c64'"}),
            ("--clients", {"help": "comma-separated subset of clients"}),
        ],
    )
    stream_tokens = args.stream_tokens or (16 if args.quick else 128)
    if args.worker:
        data = asyncio.run(worker_main(args.worker, args.url, args.quick, stream_tokens, args.profile))
        print(json.dumps(data))
        return

    result = Result("remote", "Remote backends against a loopback server (client overhead)", quick=args.quick)
    rounds = 1 if args.quick else args.rounds
    names = [n for n in CLIENTS if not args.clients or n in args.clients.split(",")]
    available: list[str] = []
    for name in names:
        module = CLIENTS[name][0]
        why = has_module(module) if module else None
        if why:
            result.peer_unavailable(name, why)
        else:
            available.append(name)

    runs: dict[str, dict[str, list[dict[str, float]]]] = {name: {} for name in available}
    profiles: dict[str, str] = {}
    with loopback_server() as url:
        print(f"loopback server at {url}; rounds: {rounds}; stream length: {stream_tokens} chunks", flush=True)
        for r in range(rounds):
            for name in list(available):
                try:
                    data = run_worker(
                        name, url, args.quick, stream_tokens, args.profile if name.startswith("zeph") else None
                    )
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                    if name.startswith("zeph"):
                        raise
                    result.peer_unavailable(name, f"failed: {exc}")
                    available.remove(name)
                    runs.pop(name, None)
                    continue
                if "profile" in data:
                    profiles[name] = data.pop("profile")
                for label, figures in data.items():
                    runs[name].setdefault(label, []).append(figures)
                summary = ", ".join(f"{label} {figs['per_s']:.0f}/s" for label, figs in data.items())
                print(f"round {r + 1}/{rounds} {name}: {summary}", flush=True)

    def med(name: str, label: str, key: str) -> float | None:
        figures = runs.get(name, {}).get(label)
        return median([f[key] for f in figures]) if figures else None

    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for name in runs:
        table[name] = {}
        for label, _, _, _ in scenarios(args.quick):
            key = "per_s" if label.startswith("chat") else "units_per_s"
            table[name][label] = {"rate": med(name, label, key), "cpu_us_per_call": med(name, label, "cpu_us_per_call")}

    for ours, peer, target in PAIRS:
        if ours not in table:
            continue
        for label, _, _, _ in scenarios(args.quick):
            unit = "req/s" if label.startswith("chat") else "chunks/s"
            at64 = label.endswith("c64")
            peer_value = table[peer][label]["rate"] if peer in table else None
            result.add(
                Row(f"{ours} {label}", unit, table[ours][label]["rate"], peer, peer_value, target if at64 else "")
            )
    for name in table:
        for label in table[name]:
            cpu = table[name][label]["cpu_us_per_call"]
            if cpu is not None:
                result.absolute.append({"label": f"{name} {label}: client CPU per call", "value": cpu, "unit": "µs"})

    labels = [label for label, _, _, _ in scenarios(args.quick)]
    for family in ("chat", "stream"):
        picked = [label for label in labels if label.startswith(family)]
        result.series[f"remote_{family}"] = {
            "kind": "grouped",
            "title": (f"Requests/s (chat, {CHAT_TOKENS}-token reply)" if family == "chat" else "Streamed chunks/s")
            + " against a loopback server, higher is better",
            "unit": "req/s" if family == "chat" else "chunks/s",
            "groups": picked,
            "lines": {name: [table[name][label]["rate"] for label in picked] for name in table},
        }
    result.notes.append(
        f"Loopback server in a separate process (asyncio, cached bodies). chat: {CHAT_TOKENS}-token reply; stream: "
        f"{stream_tokens} content chunks per reply. Median of {rounds} rounds, each client in a fresh process."
    )
    result.notes.append(
        "zeph-providers' chat() streams on the wire (stream=True) and assembles the reply; the raw SDK and "
        "litellm chat rows are non-streamed JSON requests."
    )
    if profiles:
        result.notes.append("cProfile of the zeph workers was printed to stdout (--profile).")
        for name, text in profiles.items():
            print(f"\n----- cProfile {name} ({args.profile}) -----\n{text}")
    emit(result, args.json)
    with contextlib.suppress(Exception):
        os.sync()


if __name__ == "__main__":
    main()
