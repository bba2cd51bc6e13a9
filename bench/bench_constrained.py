"""Constrained (JSON-schema) decoding on SmolLM2: speed cost, compile times, and what it buys (validity).

One process, one provider, after a warm-up:

1. tokens/s constrained vs unconstrained, single stream, interleaved runs (goal: ratio >= 0.9x);
2. grammar compile time (transformers engine: llguidance tokenizer init, cold schema, cached schema);
3. validity over N prompts (default 50): ours with `response_format` vs raw transformers
   `model.generate` on the same prompt (schema spelled out in it) with no constraint.

Run: python bench/bench_constrained.py [--engine transformers|llama.cpp] [--prompts 50] [--quick]
An engine that refuses `response_format` is reported as "not supported", not a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from enum import StrEnum
from typing import Annotated, Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pydantic import BaseModel, Field, ValidationError

from zeph_providers import Message, Registry
from zeph_providers.errors import BadResponseError, LlmError
from zeph_providers.local.provider import LocalProvider
from zeph_providers.types import ContentChunk

NAMES = ["Ada", "Bo", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Juno"]
JOBS = ["baker", "pilot", "nurse", "farmer", "painter"]


class Color(StrEnum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    city: str = Field(max_length=24)
    street: str = Field(max_length=32)


class Person(BaseModel):
    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=120)
    favorite_color: Color
    hobbies: list[Annotated[str, Field(max_length=24)]] = Field(max_length=3)
    address: Address


SCHEMA = Person.model_json_schema()


def prompt(i: int) -> list[Message]:
    who = f"{NAMES[i % len(NAMES)]}, a {JOBS[i % len(JOBS)]} aged {20 + i}"
    return [
        Message.system("You answer with one JSON object and nothing else."),
        Message.user(f"Describe {who}, as JSON matching this schema: {json.dumps(SCHEMA)}"),
    ]


def valid(text: str) -> bool:
    try:
        Person.model_validate_json(text.strip())
        return True
    except ValidationError:
        return False


def lenient(text: str) -> bool:
    """Valid after cutting to the outermost braces (what a forgiving caller might try)."""
    start, end = text.find("{"), text.rfind("}")
    return start >= 0 and end > start and valid(text[start : end + 1])


async def rate(provider: LocalProvider, messages: list[Message], tokens: int, **options: Any) -> tuple[float, int]:
    """Decode tokens/s of one streamed reply: from its first chunk to its last (prefill excluded)."""
    first = last = 0.0
    pieces = 0
    async with provider.chat_stream(messages, max_tokens=tokens, **options) as stream:
        async for chunk in stream:
            if isinstance(chunk, ContentChunk) and chunk.text:
                last = time.perf_counter()
                first = first or last
                pieces += 1
    n = stream.response.usage.output_tokens
    return (n - 1) / max(last - first, 1e-9), n


async def speed(provider: LocalProvider, runs: int, tokens: int) -> tuple[float, float, int, int]:
    """Median decode tokens/s, constrained then unconstrained with the same prompt and token count."""
    free, constrained, n_free, n_con = [], [], 0, 0
    for i in range(runs):
        tps, n_con = await rate(provider, prompt(i), tokens, temperature=0, response_format=Person)
        constrained.append(tps)
        tps, n_free = await rate(provider, prompt(i), n_con, temperature=0)
        free.append(tps)
    return statistics.median(free), statistics.median(constrained), n_free, n_con


def compile_times(provider: LocalProvider) -> dict[str, float] | None:
    from zeph_providers.local.engine import Constraint

    engine = provider.worker.engine
    grammar = getattr(engine, "grammar", None)
    if grammar is None:
        return None
    out: dict[str, float] = {}
    started = time.perf_counter()
    grammar.ll_tokenizer  # noqa: B018 - built at first use
    out["tokenizer init (first use)"] = time.perf_counter() - started
    fresh = {**SCHEMA, "title": f"Person{time.time_ns()}"}  # a schema the cache has never seen
    started = time.perf_counter()
    grammar.matcher(Constraint(fresh))
    out["schema compile, cold"] = time.perf_counter() - started
    cached = []
    for _ in range(20):
        started = time.perf_counter()
        grammar.matcher(Constraint(fresh))
        cached.append(time.perf_counter() - started)
    out["schema compile, cached (median of 20)"] = statistics.median(cached)
    return out


async def ours_validity(provider: LocalProvider, n: int, tokens: int) -> tuple[int, int, int]:
    """(valid, refused as invalid, total), requests sent together so the engine batches them."""

    async def one(i: int) -> bool | None:
        try:
            response = await provider.chat(
                prompt(i), max_tokens=tokens, temperature=0.8, seed=i, response_format=Person
            )
        except BadResponseError:  # the reply did not parse: cut by max_tokens
            return None
        return valid(response.text)

    results = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(r is True for r in results), sum(r is None for r in results), n


def raw_validity(config: Any, n: int, tokens: int, batch: int = 10) -> tuple[int, int, int]:
    """(strictly valid, valid after trimming to braces, total) from plain `model.generate`, same sampling."""
    import torch

    from zeph_providers.local.loader import load_causal_lm
    from zeph_providers.local.templates import select_template

    loaded = load_causal_lm(config)
    template = select_template(config.chat_template, loaded.tokenizer)
    tokenizer, model = loaded.tokenizer, loaded.model
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    strict = loose = 0
    for start in range(0, n, batch):
        texts = [template.render(prompt(i)) for i in range(start, min(n, start + batch))]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=template.add_special_tokens)
        torch.manual_seed(start)
        with torch.inference_mode():
            out = model.generate(
                **encoded, max_new_tokens=tokens, do_sample=True, temperature=0.8, pad_token_id=tokenizer.pad_token_id
            )
        for row in out[:, encoded["input_ids"].shape[1] :]:
            reply = tokenizer.decode(row, skip_special_tokens=True)
            strict += valid(reply)
            loose += lenient(reply)
    return strict, loose, n


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=["transformers", "llama.cpp"], default="transformers")
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=160)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 4 prompts, 1 run, 48 tokens")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.runs, args.tokens = 4, 1, 48
    registry = Registry.from_default()
    base = registry.config.provider("local")
    config = base.model_copy(update={"engine": args.engine, "max_batch_size": 8, "queue_capacity": 64})
    provider = LocalProvider(config)  # type: ignore[arg-type]
    if not provider.capabilities.structured_output:
        raise SystemExit(f"the {provider.engine_name} engine has no grammar here (is llguidance installed?)")
    rows: list[tuple[str, str]] = []
    print(f"SmolLM2-135M-Instruct, engine {args.engine}, {args.tokens} max tokens, {args.prompts} prompts", flush=True)
    try:
        t0 = time.perf_counter()
        await provider.chat(prompt(0), max_tokens=4, temperature=0)
        rows.append(("load + warm-up", f"{time.perf_counter() - t0:.1f} s"))
        times = compile_times(provider)
        for label, seconds in (times or {}).items():
            rows.append((label, f"{seconds * 1000:.2f} ms"))
        try:
            free, constrained, n_free, n_con = await speed(provider, args.runs, args.tokens)
        except LlmError as exc:
            rows.append(("constrained decoding", f"not supported on {args.engine}: {exc}"))
        else:
            rows.append(("tokens/s unconstrained (greedy)", f"{free:.1f} ({n_free} tokens)"))
            rows.append(("tokens/s constrained (greedy)", f"{constrained:.1f} ({n_con} tokens)"))
            rows.append(("ratio constrained/unconstrained", f"{constrained / free:.2f}x (goal >= 0.9x)"))
            ok, cut, n = await ours_validity(provider, args.prompts, args.tokens)
            label = f"ours valid ({args.engine}, constrained, T=0.8)"
            rows.append((label, f"{ok}/{n} = {ok / n:.0%} ({cut} cut short by max_tokens)"))
            print("\n".join(f"{label}: {value}" for label, value in rows), flush=True)  # before the slow baseline
    finally:
        await provider.aclose()
    strict, loose, n = raw_validity(base, args.prompts, args.tokens)
    rows.append(("raw generate valid (no constraint, T=0.8)", f"{strict}/{n} = {strict / n:.0%}"))
    rows.append(("raw generate valid after trimming to {...}", f"{loose}/{n} = {loose / n:.0%}"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    asyncio.run(main())
