"""Providers built in Python join a registry and its routers (issue 16 item 3)."""

from __future__ import annotations

import pytest

from zeph_providers import (
    BlockingRegistry,
    ConfigError,
    InvalidRequestError,
    MockProvider,
    MockReply,
    ProviderClosedError,
    ProviderNotFoundError,
    ProviderUnavailableError,
    Registry,
)

ROUTER = """
[llm]
default = "front"

[[llm.providers]]
name = "front"
type = "router"
providers = ["flaky", "steady"]

[[llm.providers]]
name = "steady"
type = "mock"
responses = ["from the config"]
"""


async def test_a_config_router_falls_back_from_a_python_member() -> None:
    flaky = MockProvider("flaky", replies=[MockReply(error=ProviderUnavailableError("down"))])
    registry = Registry.from_toml_string(ROUTER, providers=[flaky])
    async with registry:
        assert registry.names() == ["front", "steady", "flaky"] and "flaky" in registry
        assert registry.get("flaky") is flaky
        response = await registry.default().chat("hi")
        assert response.text == "from the config" and response.provider == "steady"
        assert [a.provider for a in response.attempts] == ["flaky", "steady"]
        assert len(flaky.requests) == 1  # the router really called the Python-built member
    assert flaky.closed  # closed with the registry


async def test_the_python_member_answers_and_its_calls_are_costed_by_the_registry() -> None:
    bot = MockProvider("bot", replies=["from python"])
    config = '[[llm.providers]]\nname = "r"\ntype = "router"\nproviders = ["bot"]\n'
    async with Registry.from_dict({"llm": {"default": "bot", "providers": []}}, providers=[bot]) as plain:
        assert plain.default() is bot
    async with Registry.from_toml_string(config, providers=[MockProvider("bot", replies=["from python"])]) as registry:
        response = await registry.get("r").chat("hi")
        assert response.text == "from python" and response.provider == "bot"
        assert registry.usage()["bot"].calls == 1  # the registry's hooks observe it


def test_without_the_provider_the_config_still_refuses_the_unknown_member() -> None:
    with pytest.raises(ConfigError, match="names unknown provider 'flaky'"):
        Registry.from_toml_string(ROUTER)


async def test_add_after_construction_and_name_conflicts() -> None:
    registry = Registry.from_toml_string(ROUTER, providers=[MockProvider("flaky")])
    extra = MockProvider("extra")
    assert registry.add(extra) is extra and registry.get("extra") is extra
    with pytest.raises(ConfigError, match="'steady' is declared in the config"):
        registry.add(MockProvider("steady"))
    with pytest.raises(ConfigError, match="'extra' is already added"):
        registry.add(MockProvider("extra"))
    with pytest.raises(InvalidRequestError, match="takes a provider"):
        registry.add("extra")  # type: ignore[arg-type]
    with pytest.raises(ProviderNotFoundError):
        registry.get("missing")
    kept = MockProvider("kept")
    registry.add(kept, close=False)
    await registry.aclose()
    assert extra.closed and not kept.closed  # close=False: the caller closes it
    with pytest.raises(ProviderClosedError):
        registry.get("extra")
    with pytest.raises(ProviderClosedError):
        registry.add(MockProvider("late"))


def test_the_blocking_registry_takes_python_providers() -> None:
    bot = MockProvider("bot", replies=["hello"])
    with BlockingRegistry.from_toml_string(ROUTER.replace('"flaky", ', ""), providers=[bot]) as registry:
        other = registry.add(MockProvider("other", replies=["other"]))
        assert other.chat("hi").text == "other"
        assert registry.get("bot").chat("hi").text == "hello"
    assert bot.closed
