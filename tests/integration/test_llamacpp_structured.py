"""Structured output in "prompted" mode with the repair loop, against a real llama.cpp server.

SmolLM2-135M (the `llamacpp_server` fixture) gets the schema in its system prompt and no
`response_format` on the wire. A tiny model may or may not produce valid JSON, so the test asserts
only the contract: a valid parsed instance after 1 to 1+N tries, or `StructuredOutputError` after
exactly 1+N tries, each try recorded. Never the wording.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from zeph_providers import Message, StructuredOutputError
from zeph_providers.backends.openai import OpenAIProvider
from zeph_providers.config import CompatibleConfig

pytestmark = pytest.mark.slow

RETRIES = 2


class Greeting(BaseModel):
    greeting: str
    language: str


@pytest.fixture
async def prompted(llamacpp_server: str) -> AsyncIterator[OpenAIProvider]:
    config = CompatibleConfig(
        name="llamacpp-prompted",
        model="smollm2",
        base_url=f"{llamacpp_server}/v1",
        timeout_secs=600,
        structured_output="prompted",
        structured_retries=RETRIES,
    )
    built = OpenAIProvider(config)
    try:
        yield built
    finally:
        await built.aclose()


@pytest.mark.parametrize("seed", [1])
async def test_prompted_mode_gives_a_valid_instance_or_the_typed_error(prompted: OpenAIProvider, seed: int) -> None:
    messages = [Message.system("You are a helpful assistant."), Message.user("Greet me in French.")]
    try:
        resp = await prompted.chat(messages, response_format=Greeting, max_tokens=48, temperature=0.8, seed=seed)
    except StructuredOutputError as exc:
        assert exc.provider == "llamacpp-prompted"
        assert len(exc.attempts) == 1 + RETRIES
        assert all(a.outcome == "StructuredOutputError" for a in exc.attempts)
        assert exc.validation_error
        return
    assert isinstance(resp.parsed, Greeting)
    assert 1 <= len(resp.attempts) <= 1 + RETRIES
    assert resp.attempts[-1].ok
    assert all(a.outcome == "StructuredOutputError" for a in resp.attempts[:-1])
    assert resp.usage.output_tokens > 0
