"""Structured output and trigger constraints on the llama.cpp engine (real SmolLM2 GGUF, slow tier).

Requests with a schema (or tools) are rendered by `tooling.prepare()` over the GGUF's own template
and decoded under llama.cpp's grammar on the completion endpoint; plain requests keep the chat
endpoint. Trigger constraints (tool_choice "auto") run as free/constrained phases: proven here
through the engine with a recording sink and a hand-made `Prepared`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from tests.local.test_llamacpp_engine import HANG_GUARD, gguf_config
from zeph_providers.errors import InvalidRequestError
from zeph_providers.local import tooling
from zeph_providers.local.engine import Constraint, GenerationParams, Prepared
from zeph_providers.local.llamacpp import LlamaCppEngine
from zeph_providers.local.llamacpp_constrained import Phase, read_gguf_template
from zeph_providers.local.provider import LocalProvider
from zeph_providers.local.worker import Job
from zeph_providers.types import ContentChunk, EndChunk, Message

pytestmark = pytest.mark.slow


class Colour(StrEnum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    # Closed objects (additionalProperties false): an open one lets the model add keys until max_tokens.
    model_config = ConfigDict(extra="forbid")

    city: str = Field(max_length=24)
    street: str = Field(max_length=24)


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=24)
    age: int
    favourite: Colour
    address: Address


PERSON = [Message.user("Describe a person as JSON with name, age, favourite colour and address.")]
SEEDS = range(10)


def _structured(provider: LocalProvider) -> LocalProvider:
    """The provider, which must report structured output (its engine decodes under a grammar)."""
    assert provider.capabilities.structured_output and provider.capabilities.tools
    return provider


@pytest.fixture(scope="module")
def llama(smollm2_gguf: Path) -> Iterator[LocalProvider]:
    provider = _structured(LocalProvider(gguf_config(smollm2_gguf)))
    yield provider
    asyncio.run(provider.aclose())


def _engine(provider: LocalProvider) -> LlamaCppEngine:
    engine = provider.worker.engine
    assert isinstance(engine, LlamaCppEngine)
    return engine


class Sink:
    """A recording `TokenSink`; `cancel_after` raises its cancel flag after that many steps."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.texts: list[str] = []
        self.prepared: list[Prepared] = []
        self.steps = 0
        self.steps_after_cancel = 0
        self.cancel_after = cancel_after
        self.first_text_after_prepared = True

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def on_text(self, text: str) -> None:
        if not self.prepared:
            self.first_text_after_prepared = False
        self.texts.append(text)

    def on_step(self) -> None:
        if self.is_cancelled():
            self.steps_after_cancel += 1
        self.steps += 1

    def is_cancelled(self) -> bool:
        return self.cancel_after is not None and self.steps >= self.cancel_after

    def on_prepared(self, prepared: Prepared) -> None:
        self.prepared.append(prepared)


# ----- the GGUF's own template -------------------------------------------------------------------


def test_reads_the_gguf_chat_template(smollm2_gguf: Path) -> None:
    header = read_gguf_template(smollm2_gguf)
    assert header.source is not None and "<|im_start|>" in header.source
    assert header.bos_token == "<|im_start|>" and header.eos_token == "<|im_end|>"
    assert header.add_bos_token is False


async def test_prompt_is_the_gguf_template_as_llama_cpp_renders_it(llama: LocalProvider) -> None:
    """Our rendering of the GGUF's template gives llama.cpp's prompt: same prompt token count."""
    plain = await llama.chat(PERSON, max_tokens=4)
    structured = await llama.chat(PERSON, max_tokens=200, response_format=Person, temperature=0.0)
    assert structured.usage.input_tokens == plain.usage.input_tokens
    engine = _engine(llama)
    assert engine.template is None and engine.own_template is not None and engine.own_template.name == "gguf"


# ----- structured output through the provider -----------------------------------------------------


async def test_valid_instance_for_ten_seeds(llama: LocalProvider) -> None:
    finishes: list[str | None] = []
    for seed in SEEDS:
        reply = await llama.chat(PERSON, response_format=Person, temperature=0.8, seed=seed, max_tokens=200)
        finishes.append(reply.finish_reason)
        assert isinstance(reply.parsed, Person), (seed, reply.text)
        assert reply.parsed == Person.model_validate_json(reply.text)
        assert reply.finish_reason == "stop", (seed, reply.text)  # the value completed, then the reply ended
    assert finishes == ["stop"] * len(SEEDS)


async def test_stream_matches_chat_and_streams_the_json(llama: LocalProvider) -> None:
    options: dict[str, Any] = {"response_format": Person, "temperature": 0.8, "seed": 7, "max_tokens": 200}
    pieces: list[str] = []
    async with llama.chat_stream(PERSON, **options) as stream:
        async for chunk in stream:
            if isinstance(chunk, ContentChunk):
                pieces.append(chunk.text)
            last = chunk
    assert isinstance(last, EndChunk)
    assert len(pieces) >= 5  # token by token, not one blob at the end
    assert "".join(pieces) == stream.response.text
    json.loads("".join(pieces))
    assert isinstance(stream.response.parsed, Person)
    assert (await llama.chat(PERSON, **options)) == stream.response  # same seed: same reply


async def test_a_schema_dict_is_honoured(llama: LocalProvider) -> None:
    schema = {
        "type": "object",
        "properties": {"word": {"const": "zebra"}, "n": {"type": "integer", "minimum": 1000, "maximum": 9999}},
        "required": ["word", "n"],
        "additionalProperties": False,
    }
    reply = await llama.chat([Message.user("Say hi.")], response_format=schema, temperature=0.0, max_tokens=64)
    assert reply.parsed["word"] == "zebra" and 1000 <= reply.parsed["n"] <= 9999


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "nonsense"},
        {"$ref": "#/definitions/missing"},
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "(("}}},
    ],
)
async def test_a_schema_llama_cpp_cannot_use_is_a_typed_error(llama: LocalProvider, schema: dict[str, Any]) -> None:
    # llama.cpp itself would silently decode these unconstrained.
    with pytest.raises(InvalidRequestError, match="JSON schema") as info:
        await llama.chat([Message.user("Hi")], response_format=schema, max_tokens=8)
    assert info.value.provider == "gguf"


async def test_plain_requests_still_use_the_chat_endpoint(llama: LocalProvider) -> None:
    engine = _engine(llama)
    chat, body = engine.request(PERSON, GenerationParams(max_tokens=8, temperature=0.0))
    assert chat and "messages" in body and "grammar" not in body


async def test_cancelling_mid_value_stops_generation(llama: LocalProvider) -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 400}
    jobs: list[Job] = []
    after_cancel: list[int] = []

    def hook(job: Job) -> None:
        if not jobs:
            jobs.append(job)
        if job.cancel.is_set():
            after_cancel.append(job.steps)

    llama.worker.step_hook = hook
    try:
        seen = 0
        async with llama.chat_stream([Message.user("Numbers.")], response_format=schema, max_tokens=1000) as stream:
            async for chunk in stream:
                if isinstance(chunk, ContentChunk):
                    seen += 1
                    if seen >= 5:
                        break
        job = jobs[0]
        assert await asyncio.to_thread(job.done.wait, HANG_GUARD)
    finally:
        llama.worker.step_hook = None
    assert job.cancel.is_set() and job.steps < 1000
    assert len(after_cancel) <= 1  # at most one more token once the cancel flag is up
    after = await llama.chat([Message.user("Hi")], max_tokens=4)
    assert after.usage.output_tokens == 4


async def test_three_constrained_requests_in_parallel_slots(smollm2_gguf: Path) -> None:
    provider = _structured(LocalProvider(gguf_config(smollm2_gguf, max_batch_size=3)))
    try:
        arrived = threading.Barrier(3, timeout=HANG_GUARD)
        held: set[int] = set()

        def hook(job: Job) -> None:  # every row waits at its first token until all three are generating
            if id(job) not in held:
                held.add(id(job))
                arrived.wait()

        provider.worker.step_hook = hook
        replies = await asyncio.gather(
            *(
                provider.chat(PERSON, response_format=Person, temperature=0.8, seed=seed, max_tokens=200)
                for seed in (1, 2, 3)
            )
        )
        assert all(isinstance(reply.parsed, Person) for reply in replies)
        assert _engine(provider).peak_rows == 3
    finally:
        provider.worker.step_hook = None
        await provider.aclose()


# ----- trigger constraints (tool_choice "auto"), through the engine -----------------------------

NOTE = {
    "type": "object",
    "properties": {"title": {"type": "string", "maxLength": 16}, "stars": {"type": "integer"}},
    "required": ["title", "stars"],
    "additionalProperties": False,
}
STORY = [Message.user("Write a short note about the sea.")]


def _recording_calls(engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, str | None, Phase]]:
    """Record each llama.cpp request of a reply: (constrained?, watched trigger, outcome). Real calls."""
    calls: list[tuple[bool, str | None, Phase]] = []
    real = engine._call

    def call(server: Any, chat: bool, body: dict[str, Any], sink: Any, rows: Any, watch: str | None) -> Phase:
        phase = real(server, chat, body, sink, rows, watch)
        calls.append(("grammar" in body, watch, phase))
        return phase

    monkeypatch.setattr(engine, "_call", call)
    return calls


def _with_constraint(monkeypatch: pytest.MonkeyPatch, constraint: Constraint | None) -> None:
    real = tooling.prepare

    def prepare(template: Any, messages: Any, params: GenerationParams) -> Prepared:
        return dataclasses.replace(real(template, messages, params), constraint=constraint)

    monkeypatch.setattr(tooling, "prepare", prepare)


def _reference(engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch, max_tokens: int) -> str:
    """The greedy reply to STORY, rendered as the constrained requests are but with no constraint."""
    _with_constraint(monkeypatch, None)
    sink = Sink()
    engine.run(STORY, GenerationParams(max_tokens=max_tokens, temperature=0.0, schema=NOTE), sink)
    assert len(sink.prepared) == 1 and sink.prepared[0].constraint is None
    return sink.text


def test_trigger_switches_to_the_schema_and_back(llama: LocalProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(llama.chat([Message.user("Hi")], max_tokens=1))  # load
    engine = _engine(llama)
    params = GenerationParams(max_tokens=120, temperature=0.0, seed=3, schema=NOTE)
    reference = _reference(engine, monkeypatch, 120)
    trigger = reference[4:12]
    assert len(trigger) == 8
    _with_constraint(monkeypatch, Constraint(NOTE, trigger=trigger))
    calls = _recording_calls(engine, monkeypatch)
    sink = Sink()
    result = engine.run(STORY, params, sink)
    text = sink.text
    assert len(sink.prepared) == 1 and sink.first_text_after_prepared
    # phase 1 free, watching for the trigger; phase 2 constrained; phase 3 free, no longer watching
    assert [(constrained, watch) for constrained, watch, _ in calls][:2] == [(False, trigger), (True, None)]
    assert calls[0][2].triggered and calls[0][2].text.endswith(trigger)
    head, _, tail = text.partition(trigger)
    assert head == reference[:4]  # the free text up to the trigger is what greedy decoding wrote
    value, _ = json.JSONDecoder().raw_decode(tail.lstrip())
    assert set(value) == {"title", "stars"} and isinstance(value["stars"], int) and len(value["title"]) <= 16
    if result.finish_reason == "stop" and len(calls) == 3:
        assert calls[2][:2] == (False, None)
    assert result.completion_tokens == sum(phase.completion_tokens for _, _, phase in calls)
    assert result.prompt_tokens == calls[0][2].prompt_tokens
    assert result.completion_tokens <= 120


def test_trigger_budget_runs_out_in_the_value(llama: LocalProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(llama.chat([Message.user("Hi")], max_tokens=1))
    engine = _engine(llama)
    trigger = _reference(engine, monkeypatch, 20)[:3]
    _with_constraint(monkeypatch, Constraint(NOTE, trigger=trigger))
    calls = _recording_calls(engine, monkeypatch)
    sink = Sink()
    result = engine.run(STORY, GenerationParams(max_tokens=6, temperature=0.0, schema=NOTE), sink)
    assert result.finish_reason == "length" and result.completion_tokens <= 6
    assert [constrained for constrained, _, _ in calls] == [False, True]


def test_cancelling_in_the_constrained_phase(llama: LocalProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(llama.chat([Message.user("Hi")], max_tokens=1))
    engine = _engine(llama)
    trigger = _reference(engine, monkeypatch, 20)[:3]
    numbers = {"type": "array", "items": {"type": "integer"}, "minItems": 400}
    _with_constraint(monkeypatch, Constraint(numbers, trigger=trigger))
    calls = _recording_calls(engine, monkeypatch)
    first_phase_steps: list[int] = []
    sink = Sink()
    real_on_step: Callable[[], None] = sink.on_step

    def on_step() -> None:
        real_on_step()
        if len(calls) == 1 and not first_phase_steps:  # phase 1 ended: cancel 5 tokens into the value
            first_phase_steps.append(sink.steps)
            sink.cancel_after = sink.steps + 5

    sink.on_step = on_step  # type: ignore[method-assign]
    result = engine.run(STORY, GenerationParams(max_tokens=1000, temperature=0.0, schema=numbers), sink)
    assert [constrained for constrained, _, _ in calls] == [False, True]
    assert calls[1][2].cancelled and sink.steps_after_cancel <= 1
    assert result.completion_tokens < 1000
