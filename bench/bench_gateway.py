"""Gateway overhead: requests/s and streamed chunks/s through `zeph-providers serve` vs the same
client straight at the upstream loopback server, and vs LiteLLM's proxy in front of it.

Three processes per measurement, all on 127.0.0.1: the canned upstream (`bench/loopback_server.py`,
OpenAI and Anthropic APIs from a cache), the gateway (`python -m zeph_providers serve`, a
`compatible` provider and a `claude` provider pointed at the upstream), and one client worker (a
fresh process per client and round: the raw official `openai` / `anthropic` SDKs, as in
`bench_remote.py`, whose clients and load driver this script reuses). Rows:

- `via-gateway` vs `direct` (the same client at the upstream itself): the gateway's cost, goal
  >= 0.8x at concurrency 64, for the OpenAI endpoint and the Anthropic endpoint.
- `via-gateway` vs `via-litellm` (LiteLLM's proxy, `litellm --config`, in front of the same upstream,
  OpenAI endpoint): goal >= 2x. LiteLLM runs from its own venv (`--litellm`, default
  /work/bench-venv/bin/litellm; never the project's venv); without it the row says why.

Both gateways run with their access logs off. The machine is shared: read the ratios, measured in
the same run, not the absolute figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import REPO_ROOT, Result, Row, emit, median, parse_args
from bench_remote import CLIENTS, drive, loopback_server

DEFAULT_LITELLM = "/work/bench-venv/bin/litellm"
MODEL = "bench-model"
"""The upstream ignores the model; through the gateways it names the provider / LiteLLM model."""
CLAUDE_MODEL = "bench-claude"


def scenarios(quick: bool) -> list[tuple[str, str, int, int]]:
    """(label, kind, concurrency, total calls)."""
    if quick:
        return [("chat c64", "chat", 4, 8), ("stream c64", "stream", 4, 4)]
    return [("chat c64", "chat", 64, 1000), ("stream c64", "stream", 64, 128)]


# ----- processes ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s")


@contextlib.contextmanager
def _process(cmd: list[str], health: str, what: str, env: dict[str, str] | None = None) -> Iterator[None]:
    """Run a server process (its output in a log file, never an unread pipe) until the block ends."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                _wait_http(health, proc, what)
            except RuntimeError as exc:
                proc.kill()
                raise RuntimeError(f"{exc}: {_tail(log)}") from None
            yield
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode} during the run: {_tail(log)}")
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _tail(log: Any) -> str:
    log.seek(0)
    return " | ".join(log.read().decode(errors="replace").strip().splitlines()[-3:])


@contextlib.contextmanager
def zeph_gateway(upstream: str, tmp: Path) -> Iterator[str]:
    config = tmp / "gateway.toml"
    config.write_text(
        "[llm]\ntelemetry = false\n\n"
        f'[[llm.providers]]\nname = "{MODEL}"\ntype = "compatible"\nmodel = "{MODEL}"\nbase_url = "{upstream}/v1"\n\n'
        f'[[llm.providers]]\nname = "{CLAUDE_MODEL}"\ntype = "claude"\nmodel = "{MODEL}"\nbase_url = "{upstream}"\n'
        'api_key_env = "BENCH_CLAUDE_KEY"\n\n'
        "[llm.gateway]\nmax_tokens = 100000\n"
    )
    port = _free_port()
    env = {**os.environ, "BENCH_CLAUDE_KEY": "sk-ant-bench-dummy", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "zeph_providers", "serve", "--config", str(config), "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with _process(cmd, f"{url}/healthz", "zeph-providers serve", env):
        yield url


@contextlib.contextmanager
def litellm_proxy(binary: str, upstream: str, tmp: Path) -> Iterator[str]:
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-bench-dummy\n"
        "litellm_settings:\n  telemetry: false\n  num_retries: 0\n"
    )
    port = _free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        # loopback-only bench without a master key (the proxy refuses to start keyless otherwise)
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    }
    env.pop("PYTHONPATH", None)
    cmd = [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    url = f"http://127.0.0.1:{port}"
    with _process(cmd, f"{url}/health/liveliness", "litellm proxy", env):
        yield url


# ----- workers -----------------------------------------------------------------------------


async def worker_main(client_name: str, url: str, model: str, quick: bool, stream_tokens: int) -> dict[str, Any]:
    import bench_remote

    bench_remote.MODEL = model  # the raw clients send bench_remote.MODEL: name the gateway's provider
    client = CLIENTS[client_name][1](url, stream_tokens)
    out: dict[str, Any] = {}
    try:
        await drive(client.chat, 4 if quick else 128, 2 if quick else 64)  # warm-up: pools, lazy builds
        await drive(client.stream, 2 if quick else 16, 2 if quick else 16)
        for label, kind, concurrency, total in scenarios(quick):
            out[label] = await drive(client.chat if kind == "chat" else client.stream, total, concurrency)
    finally:
        await client.close()
    return out


def run_worker(client_name: str, url: str, model: str, quick: bool, stream_tokens: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", client_name, "--url", url, "--model", model]
    cmd += ["--stream-tokens", str(stream_tokens)] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1])
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


# ----- orchestration -----------------------------------------------------------------------


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0] if __doc__ else "",
        [
            ("--worker", {"help": "internal: run one client against --url and print JSON"}),
            ("--url", {}),
            ("--model", {"default": MODEL}),
            ("--rounds", {"type": int, "default": 2}),
            ("--stream-tokens", {"type": int, "default": 0}),
            (
                "--litellm",
                {"default": os.environ.get("BENCH_LITELLM", DEFAULT_LITELLM), "help": "the litellm proxy binary"},
            ),
        ],
    )
    stream_tokens = args.stream_tokens or (16 if args.quick else 128)
    if args.worker:
        import asyncio

        print(json.dumps(asyncio.run(worker_main(args.worker, args.url, args.model, args.quick, stream_tokens))))
        return

    import importlib.util

    if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("starlette") is None:
        result = Result("gateway", "Gateway overhead (zeph-providers serve)", quick=args.quick)
        result.skipped("the gateway extra is not installed (pip install 'zeph-providers[gateway]')")
        emit(result, args.json)
        return

    result = Result("gateway", "Gateway overhead (zeph-providers serve)", quick=args.quick)
    rounds = 1 if args.quick else args.rounds
    # (row name, client, target key, model)
    targets: list[tuple[str, str, str, str]] = [
        ("direct-openai", "raw-openai", "upstream", MODEL),
        ("gateway-openai", "raw-openai", "zeph", MODEL),
        ("direct-anthropic", "raw-anthropic", "upstream", MODEL),
        ("gateway-anthropic", "raw-anthropic", "zeph", CLAUDE_MODEL),
    ]
    litellm_why = (
        None if Path(args.litellm).is_file() else f"{args.litellm} not found (install litellm[proxy] in its own venv)"
    )
    if litellm_why is None:
        targets.append(("litellm-openai", "raw-openai", "litellm", MODEL))
    else:
        result.peer_unavailable("litellm-proxy", litellm_why)

    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp_name, loopback_server() as upstream:
        tmp = Path(tmp_name)
        with contextlib.ExitStack() as stack:
            urls = {"upstream": upstream, "zeph": stack.enter_context(zeph_gateway(upstream, tmp))}
            if litellm_why is None:
                try:
                    urls["litellm"] = stack.enter_context(litellm_proxy(args.litellm, upstream, tmp))
                except RuntimeError as exc:
                    result.peer_unavailable("litellm-proxy", f"failed to start: {exc}")
                    targets = [t for t in targets if t[2] != "litellm"]
            print(
                f"upstream {upstream}, gateway {urls['zeph']}; rounds: {rounds}; stream: {stream_tokens} chunks",
                flush=True,
            )
            for r in range(rounds):
                for name, client, key, model in list(targets):
                    try:
                        data = run_worker(client, urls[key], model, args.quick, stream_tokens)
                    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                        if key != "litellm":
                            raise
                        result.peer_unavailable("litellm-proxy", f"failed: {exc}")
                        targets.remove((name, client, key, model))
                        runs.pop(name, None)
                        continue
                    for label, figures in data.items():
                        runs.setdefault(name, {}).setdefault(label, []).append(figures)
                    summary = ", ".join(
                        f"{label} {f['per_s']:.0f} req/s {f['units_per_s']:.0f} units/s" for label, f in data.items()
                    )
                    print(f"round {r + 1}/{rounds} {name}: {summary}", flush=True)

    def rate(name: str, label: str) -> float | None:
        figures = runs.get(name, {}).get(label)
        key = "per_s" if label.startswith("chat") else "units_per_s"
        return median([f[key] for f in figures]) if figures else None

    for label, _, _, _ in scenarios(args.quick):
        unit = "req/s" if label.startswith("chat") else "chunks/s"
        for api in ("openai", "anthropic"):
            result.add(
                Row(
                    f"gateway {api} {label}",
                    unit,
                    rate(f"gateway-{api}", label),
                    f"direct-{api}",
                    rate(f"direct-{api}", label),
                    ">=0.8",
                )
            )
        if "litellm-openai" in runs:
            result.add(
                Row(
                    f"gateway openai {label}",
                    unit,
                    rate("gateway-openai", label),
                    "litellm-proxy",
                    rate("litellm-openai", label),
                    ">=2.0",
                )
            )
    result.notes.append(
        f"Client: the raw official SDK (openai / anthropic) in a fresh process per round; chat: 8-token reply; "
        f"stream: {stream_tokens} chunks. Upstream: bench/loopback_server.py. Median of {rounds} rounds."
    )
    emit(result, args.json)


if __name__ == "__main__":
    main()
