"""SmolLM2 (offline default), greedy, 128 new tokens: our provider vs raw `model.generate` on the same weights.

Prints single-stream tokens/s and time to first chunk for both, in one process after a warm-up.
Run: python bench/local_generation.py [--tokens 128] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from zeph_providers import Message, Registry
from zeph_providers.local.provider import LocalProvider
from zeph_providers.types import ContentChunk

PROMPT = [Message.user("Write a short story about a lighthouse keeper who finds a message in a bottle.")]


async def through_provider(provider: LocalProvider, tokens: int) -> tuple[float, float, int]:
    """(seconds to first content chunk, total seconds, tokens generated)."""
    started = time.perf_counter()
    first = 0.0
    async with provider.chat_stream(PROMPT, temperature=0, max_tokens=tokens, extra={"repeat_penalty": 1.0}) as s:
        async for chunk in s:
            if isinstance(chunk, ContentChunk) and not first:
                first = time.perf_counter() - started
    return first, time.perf_counter() - started, s.response.usage.output_tokens


def raw_generate(engine: Any, tokens: int) -> tuple[float, float, int]:
    """The same weights and prompt through `model.generate` with TextIteratorStreamer."""
    import torch
    from transformers import TextIteratorStreamer

    model, tokenizer = engine.loaded.model, engine.loaded.tokenizer
    encoded = engine.encode(PROMPT)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(
        **encoded,
        max_new_tokens=tokens,
        min_new_tokens=tokens,  # same token count as our run (no early eos)
        do_sample=False,
        streamer=streamer,
        pad_token_id=engine.pad_id,
    )
    started = time.perf_counter()
    out: list[Any] = []

    def run() -> None:
        with torch.inference_mode():
            out.append(model.generate(**kwargs))

    thread = threading.Thread(target=run)
    thread.start()
    first = 0.0
    for text in streamer:
        if text and not first:
            first = time.perf_counter() - started
    thread.join()
    total = time.perf_counter() - started
    return first, total, int(out[0].shape[-1] - encoded["input_ids"].shape[-1])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    async with Registry.from_default() as registry:
        provider = registry.get("local")
        assert isinstance(provider, LocalProvider)
        t0 = time.perf_counter()
        await provider.chat(PROMPT, max_tokens=4, temperature=0)  # load (and convert once) + warm-up
        print(f"load + warm-up: {time.perf_counter() - t0:.1f}s")
        engine = provider.worker.engine
        assert engine is not None
        raw_generate(engine, 8)
        ours, raw = [], []
        for _ in range(args.runs):
            ours.append(await through_provider(provider, args.tokens))
            raw.append(raw_generate(engine, args.tokens))

    def report(label: str, runs: list[tuple[float, float, int]]) -> tuple[float, float]:
        tps = statistics.median(n / total for _, total, n in runs)
        ttfc = statistics.median(first for first, _, _ in runs)
        print(f"{label:<22} {tps:6.1f} tok/s   first chunk {ttfc * 1000:6.0f} ms   tokens {runs[0][2]}")
        return tps, ttfc

    print(f"SmolLM2-135M-Instruct, fp32 cpu, greedy, {args.tokens} new tokens, median of {args.runs}")
    ours_tps, ours_first = report("zeph provider", ours)
    raw_tps, raw_first = report("raw model.generate", raw)
    print(f"ratio provider/raw: {ours_tps / raw_tps:.2f}x throughput, {ours_first / raw_first:.2f}x first chunk")


if __name__ == "__main__":
    asyncio.run(main())
