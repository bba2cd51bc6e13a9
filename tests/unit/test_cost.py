"""Cost: prices from genai-prices and from `[llm.providers.pricing]`, totals, budgets."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import genai_prices
import pytest

from zeph_providers import BudgetExceededError, LlmError, Message, Registry
from zeph_providers.backends.mock import MockProvider
from zeph_providers.config import PricingConfig, dump_toml, loads_config
from zeph_providers.errors import ConfigError
from zeph_providers.pricing import price, price_from_library
from zeph_providers.types import Usage

HELLO = [Message.user("one two three four")]  # the mock counts 4 input tokens
PRICING = {"input": 2.0, "output": 10.0, "cache_read": 0.5, "cache_write": 2.5}


def registry(*providers: dict[str, Any], **llm: Any) -> Registry:
    return Registry.from_dict({"llm": {"telemetry": False, **llm, "providers": list(providers)}})


def mock(name: str = "m", reply: str = "five six seven", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "mock", "responses": [reply], **extra}


# ----- pricing arithmetic -------------------------------------------------------------


def test_override_prices_openai_reply_with_cached_tokens() -> None:
    # OpenAI: 1000 prompt tokens of which 400 were cached -> Usage: 600 uncached + 400 cache reads.
    usage = Usage(input_tokens=600, output_tokens=100, cache_read_tokens=400)
    expected = (600 * 2.0 + 400 * 0.5 + 100 * 10.0) / 1e6
    assert price(usage, PricingConfig(**PRICING), backend="openai") == pytest.approx(expected)


def test_override_prices_anthropic_shape_cache_reported_apart() -> None:
    # Anthropic: input_tokens leaves out cache reads and writes.
    usage = Usage(input_tokens=600, output_tokens=100, cache_read_tokens=400, cache_write_tokens=200)
    expected = (600 * 2.0 + 400 * 0.5 + 200 * 2.5 + 100 * 10.0) / 1e6
    assert price(usage, PricingConfig(**PRICING), backend="claude") == pytest.approx(expected)


def test_cache_prices_default_to_the_input_price() -> None:
    usage = Usage(input_tokens=0, output_tokens=0, cache_read_tokens=1000)
    assert price(usage, PricingConfig(input=3.0, output=1.0), backend="openai") == pytest.approx(3000 / 1e6)


def test_library_prices_openai_usage_as_genai_prices_does() -> None:
    usage = Usage(input_tokens=1000, output_tokens=300, cache_read_tokens=200)  # 1200 prompt tokens
    direct = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=200, cache_write_tokens=0),
        "gpt-4o-mini",
        provider_id="openai",
    ).total_price
    got = price_from_library(usage, "gpt-4o-mini", backend="openai")
    assert got is not None and Decimal(str(got)) == pytest.approx(direct)
    assert got > 0


def test_library_prices_anthropic_usage_with_cache_added_back() -> None:
    usage = Usage(input_tokens=100, output_tokens=50, cache_read_tokens=1000, cache_write_tokens=300)
    direct = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1400, output_tokens=50, cache_read_tokens=1000, cache_write_tokens=300),
        "claude-sonnet-4-5",
        provider_id="anthropic",
    ).total_price
    assert price_from_library(usage, "claude-sonnet-4-5", backend="claude") == pytest.approx(float(direct))


def test_unknown_models_and_local_backends_have_no_price() -> None:
    usage = Usage(input_tokens=10, output_tokens=10)
    assert price_from_library(usage, "no-such-model-xyz", backend="openai") is None
    assert price_from_library(usage, "llama3.2", backend="ollama") is None
    assert price_from_library(usage, "gpt-4o-mini", backend="local") is None  # never priced by its name


# ----- resp.cost and totals -----------------------------------------------------------


async def test_resp_cost_from_toml_pricing_and_totals() -> None:
    reg = registry(mock(pricing=PRICING))
    resp = await reg.get("m").chat(HELLO)
    expected = (4 * 2.0 + 3 * 10.0) / 1e6
    assert resp.usage == Usage(input_tokens=4, output_tokens=3)
    assert resp.cost == pytest.approx(expected)
    totals = reg.usage()["m"]
    assert (totals.calls, totals.input_tokens, totals.output_tokens) == (1, 4, 3)
    assert totals.cost_usd == pytest.approx(expected) and reg.total_cost() == pytest.approx(expected)


async def test_stream_response_carries_the_cost_too() -> None:
    reg = registry(mock(pricing=PRICING))
    async with reg.get("m").chat_stream(HELLO) as stream:
        async for _ in stream:
            pass
    assert stream.response.cost == pytest.approx((4 * 2.0 + 3 * 10.0) / 1e6)


async def test_unknown_price_is_none_never_zero() -> None:
    reg = registry(mock())
    resp = await reg.get("m").chat(HELLO)
    assert resp.cost is None
    totals = reg.usage()["m"]
    assert totals.cost_usd == 0.0 and totals.unpriced_calls == 1 and totals.output_tokens == 3


async def test_totals_under_200_concurrent_calls_equal_the_sum() -> None:
    reg = registry(mock(pricing=PRICING, delay_secs=0.0005, chunk_size=1))
    provider = reg.get("m")
    replies = await asyncio.gather(*(provider.chat([Message.user("w " * (i % 7 + 1))]) for i in range(200)))
    costs = [r.cost for r in replies]
    assert all(c is not None for c in costs)
    totals = reg.usage()["m"]
    assert totals.calls == 200
    assert totals.input_tokens == sum(r.usage.input_tokens for r in replies)
    assert totals.output_tokens == sum(r.usage.output_tokens for r in replies)
    assert totals.cost_usd == pytest.approx(sum(c for c in costs if c is not None), rel=1e-12)
    assert reg.total_cost() == pytest.approx(totals.cost_usd)


# ----- budgets ------------------------------------------------------------------------


async def test_budget_refuses_before_the_call_once_spent() -> None:
    one_call = (4 * 2.0 + 3 * 10.0) / 1e6
    reg = registry(mock(pricing=PRICING, budget_usd=one_call * 1.5))
    provider = reg.get("m")
    assert isinstance(provider, MockProvider)
    await provider.chat(HELLO)
    await provider.chat(HELLO)  # starts under budget (1 call spent), ends over it
    with pytest.raises(BudgetExceededError) as info:
        await provider.chat(HELLO)
    assert len(provider.requests) == 2  # the third was never sent
    assert isinstance(info.value, LlmError) and info.value.provider == "m"
    assert info.value.budget_usd == pytest.approx(one_call * 1.5)
    assert info.value.spent_usd == pytest.approx(2 * one_call)
    assert reg.usage()["m"].calls == 2  # a refusal is not a call
    with pytest.raises(BudgetExceededError):
        async for _ in provider.chat_stream(HELLO):
            pass


async def test_registry_budget_covers_all_providers() -> None:
    reg = registry(mock("a", pricing=PRICING), mock("b", pricing=PRICING), budget_usd=1e-9)
    await reg.get("a").chat(HELLO)
    with pytest.raises(BudgetExceededError):
        await reg.get("b").chat(HELLO)


async def test_router_skips_a_member_over_budget_and_counts_cost_once() -> None:
    reg = registry(
        mock("a", reply="from a", pricing=PRICING, budget_usd=0.0),
        mock("b", reply="from b now", pricing=PRICING),
        {"name": "r", "type": "router", "providers": ["a", "b"]},
    )
    resp = await reg.get("r").chat(HELLO)
    assert resp.provider == "b"
    member_cost = (4 * 2.0 + 3 * 10.0) / 1e6
    assert resp.cost == pytest.approx(member_cost)
    usage = reg.usage()
    assert "a" not in usage  # refused before sending: no call, no breaker failure
    assert reg.get("r").breaker("a").snapshot()["consecutive_failures"] == 0  # type: ignore[attr-defined]
    assert usage["r"].routed and usage["r"].cost_usd == pytest.approx(member_cost)
    assert reg.total_cost() == pytest.approx(member_cost)  # not twice


# ----- config -------------------------------------------------------------------------


def test_pricing_and_budgets_parse_from_toml_and_dump_back() -> None:
    text = """
[llm]
telemetry = false
budget_usd = 5
[[llm.providers]]
name = "selfhosted"
type = "compatible"
base_url = "http://10.0.0.5:8000/v1"
model = "qwen3-32b"
budget_usd = 1.5
[llm.providers.pricing]
input = 0.1
output = 0.4
cache_read = 0.01
"""
    config = loads_config(text)
    entry = config.providers[0]
    assert entry.pricing == PricingConfig(input=0.1, output=0.4, cache_read=0.01)
    assert entry.budget_usd == 1.5 and config.budget_usd == 5 and config.telemetry is False
    again = loads_config(dump_toml(config))
    assert again.providers[0].pricing == entry.pricing and again.telemetry is False and again.budget_usd == 5


@pytest.mark.parametrize(
    ("llm", "provider", "needle"),
    [
        ({"telemetry": "yes"}, {}, "telemetry"),
        ({"budget_usd": -1}, {}, "budget_usd"),
        ({}, {"budget_usd": -1}, "budget_usd"),
        ({}, {"pricing": {"input": 1.0}}, "output"),
        ({}, {"pricing": {"input": 1.0, "output": 1.0, "cache_reed": 1.0}}, "pricing.cache_reed"),
    ],
)
def test_bad_cost_settings_are_config_errors(llm: dict[str, Any], provider: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        Registry.from_dict({"llm": {**llm, "providers": [mock(**provider)]}})
    assert needle in str(info.value) + "".join(str(p) for p in info.value.problems)


async def test_embeddings_are_priced_from_the_usage_the_backend_reports() -> None:
    reg = registry(mock(pricing=PRICING))
    await reg.get("m").embed_batch(["one two", "three"])  # the mock reports 3 input tokens
    totals = reg.usage()["m"]
    assert (totals.calls, totals.input_tokens, totals.output_tokens) == (1, 3, 0)
    assert totals.cost_usd == pytest.approx(3 * 2.0 / 1e6)
    assert reg.total_cost() == pytest.approx(3 * 2.0 / 1e6)


async def test_embeddings_without_a_price_are_unpriced_not_free() -> None:
    reg = registry(mock())
    await reg.get("m").embed("one two three")
    totals = reg.usage()["m"]
    assert totals.cost_usd == 0.0 and totals.unpriced_calls == 1 and totals.input_tokens == 3


def test_library_prices_openai_embedding_models() -> None:
    cost = price_from_library(Usage(input_tokens=1_000_000), "text-embedding-3-small", backend="openai")
    assert cost == pytest.approx(0.02)
