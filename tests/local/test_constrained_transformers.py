"""Constrained decoding on the transformers engine (llguidance), solo and batched, on the tiny random Llama.

A random model writes gibberish, so any schema-valid reply is the grammar's doing. The schemas
bound every string, list and integer so a value always ends well within `max_tokens`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from tests.local.conftest import ProviderFactory, tiny_config
from tests.local.test_batching import _together
from zeph_providers.errors import BadResponseError, InvalidRequestError
from zeph_providers.local.engine import Constraint, GenerationParams, GenerationResult, Prepared
from zeph_providers.local.provider import LocalProvider
from zeph_providers.local.transformers_engine import TransformersEngine
from zeph_providers.types import ChatResponse, Message

HANG_GUARD = 120.0  # generous "never hangs" bound, not a timing assertion
SEEDS = [1, 2, 3, 4, 5]


class Color(StrEnum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    city: str = Field(max_length=8)
    number: int = Field(ge=0, le=999)


class Person(BaseModel):
    name: str = Field(max_length=8)
    age: int = Field(ge=0, le=120)
    color: Color
    tags: list[Annotated[str, Field(max_length=8)]] = Field(max_length=3)
    address: Address


class Flag(BaseModel):
    ok: bool
    level: int = Field(ge=1, le=5)


TAG_SCHEMA: dict[str, Any] = {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 3}


def _structured(provider: LocalProvider) -> LocalProvider:
    """The provider, which must report structured output (its engine decodes under a grammar)."""
    assert provider.capabilities.structured_output and provider.capabilities.tools
    return provider


def _engine(provider: LocalProvider) -> TransformersEngine:
    engine = provider.worker.engine
    assert isinstance(engine, TransformersEngine)
    return engine


def _ask(text: str = "Describe a person.") -> list[Message]:
    return [Message.user(text)]


async def _chat(provider: LocalProvider, **options: Any) -> ChatResponse:
    return await asyncio.wait_for(provider.chat(_ask(), **options), HANG_GUARD)


@pytest.mark.parametrize("batch", [1, 4])
async def test_sampled_replies_match_the_schema(make_provider: ProviderFactory, batch: int) -> None:
    provider = _structured(make_provider(max_batch_size=batch))
    texts = set()
    for seed in SEEDS:
        response = await _chat(provider, response_format=Person, temperature=0.8, seed=seed, max_tokens=200)
        assert response.finish_reason == "stop", response.text
        assert isinstance(response.parsed, Person)
        assert Person.model_validate_json(response.text) == response.parsed
        outside_strings = re.sub(r'"(\\.|[^"\\])*"', '""', response.text)
        assert not re.search(r"\s", outside_strings)  # compact JSON
        texts.add(response.text)
    assert len(texts) > 1  # sampling really sampled


@pytest.mark.parametrize("batch", [1, 4])
async def test_top_k_top_p_and_repeat_penalty_under_a_constraint(make_provider: ProviderFactory, batch: int) -> None:
    provider = _structured(make_provider(max_batch_size=batch))
    for seed in (1, 2):
        response = await _chat(
            provider,
            response_format=Person,
            temperature=1.2,
            top_k=5,
            top_p=0.9,
            seed=seed,
            max_tokens=200,
            extra={"repeat_penalty": 1.3},
        )
        assert isinstance(response.parsed, Person) and response.finish_reason == "stop"
        again = await _chat(
            provider,
            response_format=Person,
            temperature=1.2,
            top_k=5,
            top_p=0.9,
            seed=seed,
            max_tokens=200,
            extra={"repeat_penalty": 1.3},
        )
        assert again.text == response.text  # a seed reproduces its reply


async def test_greedy_constrained_reply_and_a_dict_schema(tiny: LocalProvider) -> None:
    provider = _structured(tiny)
    response = await _chat(provider, response_format=Flag.model_json_schema(), max_tokens=60)
    assert Flag.model_validate(response.parsed) and response.finish_reason == "stop"
    tags = await _chat(provider, response_format=TAG_SCHEMA, max_tokens=60)
    assert isinstance(tags.parsed, list) and set(tags.parsed) <= {"a", "b", "c"} and 1 <= len(tags.parsed) <= 3


async def test_mixed_batch_each_row_with_its_own_grammar(make_provider: ProviderFactory) -> None:
    provider = _structured(make_provider(max_batch_size=4, generation={"max_tokens": 200}))
    requests: list[tuple[str, dict[str, Any]]] = [
        ("a person", {"response_format": Person, "temperature": 0.8, "seed": 7}),
        ("a flag", {"response_format": Flag, "temperature": 0.8, "seed": 8}),
        ("free text", {"max_tokens": 24}),
        ("tags", {"response_format": TAG_SCHEMA}),
    ]
    provider.worker.step_rows.clear()
    person, flag, free, tags = await _together(provider, requests)
    assert max(provider.worker.step_rows) == 4  # all four decoded in one batch
    assert isinstance(person, ChatResponse) and isinstance(person.parsed, Person)
    assert isinstance(flag, ChatResponse) and isinstance(flag.parsed, Flag)
    assert isinstance(tags, ChatResponse) and set(tags.parsed) <= {"a", "b", "c"}
    assert isinstance(free, ChatResponse) and free.parsed is None
    # the unconstrained row is what it is alone (greedy), untouched by its neighbours' grammars
    alone = await asyncio.wait_for(provider.chat([Message.user("free text")], max_tokens=24), HANG_GUARD)
    assert free.text == alone.text


@pytest.mark.parametrize("batch", [1, 4])
async def test_stream_and_chat_agree_under_a_constraint(make_provider: ProviderFactory, batch: int) -> None:
    provider = _structured(make_provider(max_batch_size=batch))
    for options in ({"temperature": 0.0}, {"temperature": 0.8, "seed": 11}):
        async with provider.chat_stream(_ask(), response_format=Person, max_tokens=200, **options) as stream:
            pieces = [chunk.text async for chunk in stream if hasattr(chunk, "text") and chunk.text]
        streamed = stream.response
        chatted = await _chat(provider, response_format=Person, max_tokens=200, **options)
        assert "".join(pieces) == streamed.text == chatted.text
        assert len(pieces) > 3  # the JSON arrives as it is generated
        Person.model_validate_json(streamed.text)


async def test_a_repeated_schema_is_compiled_once(tiny: LocalProvider) -> None:
    provider = _structured(tiny)
    await _chat(provider, response_format=Flag, max_tokens=60)
    grammar = _engine(provider).grammar
    assert (grammar.compiles, grammar.hits) == (1, 0)
    await _chat(provider, response_format=Flag, max_tokens=60, temperature=0.8, seed=3)
    await _chat(provider, response_format=Flag.model_json_schema(), max_tokens=60)  # same schema as a dict
    assert (grammar.compiles, grammar.hits) == (1, 2)
    await _chat(provider, response_format=Person, max_tokens=200)
    assert grammar.compiles == 2


async def test_length_stop_strings_and_rejected_schemas(tiny: LocalProvider) -> None:
    provider = _structured(tiny)
    # max_tokens still ends a constrained reply ("length"): the parse then fails, as it should
    with pytest.raises(BadResponseError):
        await _chat(provider, response_format=Person, max_tokens=4)
    # a stop string that occurs inside JSON does not cut the value: the grammar decides
    response = await _chat(provider, response_format=Person, max_tokens=200, stop=['"', ","])
    assert isinstance(response.parsed, Person) and response.finish_reason == "stop"
    with pytest.raises(InvalidRequestError, match="nonsense") as info:
        await _chat(provider, response_format={"type": "nonsense"})
    assert info.value.provider == "tiny"


# ----- the engine directly: triggers, fake sinks ------------------------------------------------


class Sink:
    def __init__(self, messages: list[Message], params: GenerationParams) -> None:
        self.messages, self.params = messages, params
        self.text: list[str] = []
        self.prepared: Prepared | None = None

    def on_text(self, text: str) -> None:
        self.text.append(text)

    def on_step(self) -> None:
        pass

    def is_cancelled(self) -> bool:
        return False

    def on_prepared(self, prepared: Prepared) -> None:
        self.prepared = prepared


class BareSink(Sink):
    """A job object without `on_prepared` (the engine must not require it)."""

    on_prepared = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> TransformersEngine:
    return TransformersEngine.load(tiny_config(tiny_model, max_batch_size=4))


def _with_constraint(engine: TransformersEngine, constraint: Constraint, monkeypatch: pytest.MonkeyPatch) -> None:
    original = engine.prepare

    def prepare(messages: list[Message], params: GenerationParams) -> Prepared:
        plain = original(messages, params)
        return dataclasses.replace(plain, constraint=constraint)

    monkeypatch.setattr(engine, "prepare", prepare)


def _run_all(engine: TransformersEngine, sinks: list[Sink], batched: bool) -> list[GenerationResult]:
    if not batched:
        return [engine.run(s.messages, s.params, s) for s in sinks]
    outcomes: dict[int, Any] = {}
    engine.run_batch(sinks, lambda room: [], lambda job, out: outcomes.__setitem__(id(job), out))
    results = [outcomes[id(s)] for s in sinks]
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


def _ascii_piece(pieces: list[str]) -> str:
    """The first streamed piece of plain letters (the tiny model's gibberish also holds broken bytes)."""
    return next(p for p in pieces if len(p) >= 2 and p.isascii() and p.isalpha())


def _flag_after(text: str, trigger: str) -> tuple[str, dict[str, Any], str]:
    """Split `text` at the first trigger: (before, the JSON value right after it, the rest)."""
    at = text.index(trigger) + len(trigger)
    body = text[at:]
    lead = len(body) - len(body.lstrip(" \t\r\n"))
    value, end = json.JSONDecoder().raw_decode(body, lead)
    return text[:at], value, body[end:]


@pytest.mark.parametrize("batched", [False, True])
def test_a_trigger_arms_the_grammar_mid_reply(
    engine: TransformersEngine, batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = GenerationParams(max_tokens=80, temperature=0.0)
    free = Sink(_ask(), params)
    _run_all(engine, [free], batched)
    plain = "".join(free.text)
    trigger = _ascii_piece(free.text)  # a piece of the free reply: a trigger that ends on a token boundary
    assert trigger in plain
    schema = Flag.model_json_schema()
    _with_constraint(engine, Constraint(schema, trigger=trigger), monkeypatch)
    sinks = [Sink(_ask(), params), BareSink(_ask(), params)]
    results = _run_all(engine, sinks, batched)
    for sink in sinks:
        text = "".join(sink.text)
        before, value, _rest = _flag_after(text, trigger)
        assert plain.startswith(before)  # free (and identical) until the trigger
        Flag.model_validate(value)
    assert sinks[0].prepared is not None and sinks[0].prepared.constraint is not None
    assert all(r.completion_tokens > 0 for r in results)


@pytest.mark.parametrize("batched", [False, True])
def test_a_prefill_that_ends_with_the_trigger_constrains_at_once(
    engine: TransformersEngine, batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = engine.prepare

    def prepare(messages: list[Message], params: GenerationParams) -> Prepared:
        plain = original(messages, params)
        prefill = "<call>\n"
        return Prepared(
            prompt=plain.prompt + prefill,
            prefill=prefill,
            constraint=Constraint(Flag.model_json_schema(), trigger="<call>"),
        )

    monkeypatch.setattr(engine, "prepare", prepare)
    sinks = [Sink(_ask(), GenerationParams(max_tokens=60, temperature=0.8, seed=s)) for s in (1, 2)]
    _run_all(engine, sinks, batched)
    for sink in sinks:
        text = "".join(sink.text)
        value, _end = json.JSONDecoder().raw_decode(text, len(text) - len(text.lstrip()))
        Flag.model_validate(value)


def test_rearm_constrains_every_triggered_span(engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    params = GenerationParams(max_tokens=120, temperature=0.0)
    free = Sink(_ask(), params)
    engine.run(free.messages, params, free)
    trigger = _ascii_piece(free.text)
    constraint = Constraint(Flag.model_json_schema(), trigger=trigger, rearm=True)
    _with_constraint(engine, constraint, monkeypatch)
    for sampled in (params, GenerationParams(max_tokens=120, temperature=0.8, seed=5)):
        sink = Sink(_ask(), sampled)
        engine.run(sink.messages, sampled, sink)
        text, spans, at = "".join(sink.text), 0, 0
        while (found := text.find(trigger, at)) >= 0:  # every trigger outside a value opens a valid value
            body = found + len(trigger)
            lead = len(text[body:]) - len(text[body:].lstrip(" \t\r\n"))
            try:
                value, at = json.JSONDecoder().raw_decode(text, body + lead)
            except json.JSONDecodeError:
                assert len(sink.text) and engine.loaded.tokenizer(text[body:])  # only a value cut by max_tokens
                break
            Flag.model_validate(value)
            spans += 1
        assert spans >= 1


# ----- slow tier: the real SmolLM2 on the transformers engine -----------------------------------


class Pet(BaseModel):
    name: str = Field(max_length=20)
    species: Annotated[str, Field(pattern="^(cat|dog|bird|fish)$")]


class Owner(BaseModel):
    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=120)
    favorite_color: Color
    pet: Pet


@pytest.mark.slow
@pytest.mark.usefixtures("smollm2_cache")
async def test_smollm2_returns_a_valid_instance_for_ten_seeds() -> None:
    from zeph_providers import Registry

    config = Registry.from_default().config.provider("local")
    config = config.model_copy(update={"engine": "transformers", "max_batch_size": 4})
    provider = _structured(LocalProvider(config))  # type: ignore[arg-type]
    messages = [Message.user("Invent a pet owner: name, age, favorite color and their pet.")]
    try:

        async def one(seed: int) -> ChatResponse:
            return await provider.chat(messages, response_format=Owner, temperature=0.8, seed=seed, max_tokens=200)

        responses = await asyncio.wait_for(asyncio.gather(*(one(seed) for seed in range(10))), 600)
    finally:
        await provider.aclose()
    for response in responses:
        assert isinstance(response.parsed, Owner), response.text
        assert response.finish_reason == "stop"
    assert len({r.text for r in responses}) > 1
