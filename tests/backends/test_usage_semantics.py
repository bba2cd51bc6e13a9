"""`Usage` means the same thing on every backend (types.Usage, docs/backends.md "Usage").

`input_tokens` are the uncached input tokens (billed at the input rate), disjoint from
`cache_read_tokens` and `cache_write_tokens`; `prompt_tokens` is all input; `output_tokens` every
generated token; `total_tokens` both. Each backend is fed a usage shape taken from its API's
documentation (OpenAI's prompt-caching guide, Anthropic's prompt-caching page, Ollama's /api/chat
reference) and, for llama.cpp, the real server; then pricing is checked against the arithmetic it
did before the change, so a given API reply costs exactly what it did.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import genai_prices
import httpx2
import pytest
from pydantic import SecretStr

from tests.fakes import anthropic as anthropic_wire
from tests.fakes.ollama_server import ChatReply, OllamaServer
from tests.fakes.openai import DONE, chunk, sse
from zeph_providers.backends.claude import ClaudeProvider
from zeph_providers.backends.ollama import OllamaProvider
from zeph_providers.backends.openai import OpenAIProvider
from zeph_providers.config import ClaudeConfig, OllamaConfig, OpenAIConfig, PricingConfig
from zeph_providers.pricing import price, price_from_library
from zeph_providers.types import Message, Usage

HELLO = [Message.user("Summarise the attached book.")]
PRICING = PricingConfig(input=2.5, output=10.0, cache_read=1.25, cache_write=3.75)

# OpenAI prompt caching guide (platform.openai.com/docs/guides/prompt-caching), "usage" example.
OPENAI_USAGE: dict[str, Any] = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}


def _old_price(usage_input_incl_cache: int, cache_read: int, output: int, pricing: PricingConfig) -> float:
    """pricing.price() as it was for an OpenAI-shaped Usage (cached tokens inside input_tokens)."""
    uncached = max(usage_input_incl_cache - cache_read, 0)
    read = pricing.cache_read if pricing.cache_read is not None else pricing.input
    return (uncached * pricing.input + output * pricing.output + cache_read * read) / 1_000_000


# ----- OpenAI ----------------------------------------------------------------------------------


def _openai(body: Any, *, stream: bool) -> OpenAIProvider:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if stream:
            events = [
                sse(chunk({"role": "assistant", "content": "A short summary."})),
                sse(chunk(finish="stop")),
                sse({**chunk(), "choices": [], "usage": body}),
                DONE,
            ]
            return httpx2.Response(200, content=b"".join(events), headers={"content-type": "text/event-stream"})
        completion = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o-2024-08-06",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "A short summary."}, "finish_reason": "stop"}
            ],
            "usage": body,
        }
        return httpx2.Response(200, json=completion)

    config = OpenAIConfig(name="gpt", model="gpt-4o", api_key=SecretStr("sk-test-0123456789"), max_retries=0)
    return OpenAIProvider(config, transport=httpx2.MockTransport(handler))


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_cached_tokens_leave_input_tokens(stream: bool) -> None:
    provider = _openai(OPENAI_USAGE, stream=stream)
    async with provider:
        if stream:
            async with provider.chat_stream(HELLO) as s:
                async for _ in s:
                    pass
            usage = s.response.usage
        else:
            usage = (await provider.chat(HELLO)).usage
    assert usage == Usage(input_tokens=86, cache_read_tokens=1920, output_tokens=300)
    assert usage.prompt_tokens == OPENAI_USAGE["prompt_tokens"]
    assert usage.total_tokens == OPENAI_USAGE["total_tokens"]


async def test_openai_reasoning_tokens_stay_inside_output_tokens() -> None:
    # o3-mini's documented split: 87 completion tokens of which 64 were reasoning.
    body = {
        "prompt_tokens": 12,
        "completion_tokens": 87,
        "total_tokens": 99,
        "completion_tokens_details": {"reasoning_tokens": 64},
    }
    async with _openai(body, stream=False) as provider:
        usage = (await provider.chat(HELLO)).usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (12, 87, 99)


async def test_openai_cost_is_what_it_was_before_the_change() -> None:
    async with _openai(OPENAI_USAGE, stream=False) as provider:
        usage = (await provider.chat(HELLO)).usage
    before = _old_price(2006, 1920, 300, PRICING)
    assert price(usage, PRICING, backend="openai") == pytest.approx(before, rel=1e-12)
    assert price(usage, PRICING) == pytest.approx(before, rel=1e-12)  # the backend no longer matters
    # genai-prices counts cache tokens inside its input_tokens: the library call is unchanged too.
    direct = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=2006, output_tokens=300, cache_read_tokens=1920, cache_write_tokens=0),
        "gpt-4o",
        provider_id="openai",
    ).total_price
    got = price_from_library(usage, "gpt-4o", backend="openai")
    assert got is not None and Decimal(str(got)) == pytest.approx(direct)
    # And it is less than the same prompt uncached: the cache discount survives.
    assert price(usage, PRICING) < price(Usage(input_tokens=2006, output_tokens=300), PRICING)


async def test_openai_claiming_more_cached_than_prompt_is_capped() -> None:
    body = {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 50}}
    async with _openai(body, stream=False) as provider:
        usage = (await provider.chat(HELLO)).usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.prompt_tokens) == (0, 10, 10)


# ----- Anthropic -------------------------------------------------------------------------------


def _claude(*, input_tokens: int, cache_read: int, cache_write: int, output: int, stream: bool) -> ClaudeProvider:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if stream:
            events = [
                anthropic_wire.message_start(input_tokens=input_tokens, cache_read=cache_read, cache_write=cache_write),
                *anthropic_wire.text_block(0, ["A short", " summary."]),
                anthropic_wire.message_delta("end_turn", output),
                anthropic_wire.message_stop(),
            ]
            return httpx2.Response(200, content=b"".join(events), headers={"content-type": "text/event-stream"})
        body = anthropic_wire.message("A short summary.", input_tokens=input_tokens, output_tokens=output)
        body["usage"].update(cache_read_input_tokens=cache_read, cache_creation_input_tokens=cache_write)
        return httpx2.Response(200, json=body)

    config = ClaudeConfig(
        name="claude", model="claude-sonnet-4-5", api_key=SecretStr("sk-ant-test-0123"), max_retries=0
    )
    return ClaudeProvider(config, transport=httpx2.MockTransport(handler))


# Anthropic prompt caching docs: the first call writes the cache, the second reads it.
CLAUDE_SHAPES = [
    pytest.param(21, 0, 188086, 393, id="cache-write"),
    pytest.param(21, 188086, 0, 393, id="cache-read"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("input_tokens", "cache_read", "cache_write", "output"), CLAUDE_SHAPES)
async def test_claude_usage_is_taken_as_sent(
    stream: bool, input_tokens: int, cache_read: int, cache_write: int, output: int
) -> None:
    provider = _claude(
        input_tokens=input_tokens, cache_read=cache_read, cache_write=cache_write, output=output, stream=stream
    )
    async with provider:
        if stream:
            async with provider.chat_stream(HELLO) as s:
                async for _ in s:
                    pass
            usage = s.response.usage
        else:
            usage = (await provider.chat(HELLO)).usage
    assert usage == Usage(
        input_tokens=input_tokens, cache_read_tokens=cache_read, cache_write_tokens=cache_write, output_tokens=output
    )
    assert usage.prompt_tokens == input_tokens + cache_read + cache_write
    assert usage.total_tokens == usage.prompt_tokens + output
    # The price is the same arithmetic as before (Anthropic's shape was already this one).
    expected = (input_tokens * 2.5 + cache_read * 1.25 + cache_write * 3.75 + output * 10.0) / 1e6
    assert price(usage, PRICING, backend="claude") == pytest.approx(expected)


def test_openai_and_claude_usage_compare_once_normalised() -> None:
    """The same 2006-token prompt, 1920 of it cached, reads the same on both backends."""
    openai_usage = Usage(input_tokens=86, cache_read_tokens=1920, output_tokens=300)  # what _usage() built
    claude_usage = Usage(input_tokens=86, cache_read_tokens=1920, output_tokens=300)  # taken as sent
    assert openai_usage == claude_usage
    assert openai_usage.prompt_tokens == claude_usage.prompt_tokens == 2006


# ----- Ollama (over a real socket to the wire-protocol server) -----------------------------------


async def test_ollama_prompt_eval_count_is_all_input() -> None:
    with OllamaServer() as server:
        server.script_chat(ChatReply(prompt_eval_count=26, eval_count=298))
        config = OllamaConfig(name="ollama", model="qwen3:8b", base_url=server.url, max_retries=0)
        async with OllamaProvider(config) as provider:
            usage = (await provider.chat(HELLO)).usage
    assert usage == Usage(input_tokens=26, output_tokens=298)
    assert (usage.prompt_tokens, usage.total_tokens) == (26, 324)


def test_usage_json_round_trip_keeps_the_fields() -> None:
    usage = Usage(input_tokens=86, cache_read_tokens=1920, output_tokens=300)
    again = Usage.model_validate_json(usage.model_dump_json())
    assert again == usage and again.prompt_tokens == 2006
    assert "prompt_tokens" not in json.loads(usage.model_dump_json())  # a derived figure, not a field
