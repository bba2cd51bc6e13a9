"""Third-party backends through the `zeph_providers.backends` entry-point group."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import pytest
from pydantic import Field

from zeph_providers import factory
from zeph_providers.config import ProviderConfigBase, parse_config
from zeph_providers.errors import ConfigError
from zeph_providers.protocol import BaseProvider, Capabilities, ChatOptions
from zeph_providers.registry import Registry
from zeph_providers.types import ContentChunk, EndChunk, Message, StreamChunk


class EchoConfig(ProviderConfigBase):
    type_name: ClassVar[str] = "echo"
    type: Literal["echo"] = "echo"
    prefix: str = "echo: "
    repeat: Annotated[int, Field(ge=1, le=5)] = 1


class EchoProvider(BaseProvider):
    backend = "echo"

    def __init__(self, config: EchoConfig) -> None:
        super().__init__(config.name, "echo-model", capabilities=Capabilities(streaming=True))
        self.config = config

    async def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        yield ContentChunk(text=self.config.prefix + messages[-1].text * self.config.repeat)
        yield EndChunk(finish_reason="stop", model=self.model)


class EchoBackend:
    config_model = EchoConfig
    builds: ClassVar[int] = 0

    @classmethod
    def build(cls, config: Any, registry: Registry) -> EchoProvider:
        cls.builds += 1
        assert isinstance(config, EchoConfig)
        return EchoProvider(config)


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    target: Any = None
    error: Exception | None = None

    def load(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.target


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeEntryPoint]]:
    entries = [
        FakeEntryPoint("echo", "zeph_echo:backend", EchoBackend),
        FakeEntryPoint("broken", "zeph_broken:backend", error=ImportError("No module named 'zeph_broken'")),
    ]

    def fake_entry_points(*, group: str) -> list[FakeEntryPoint]:
        assert group == factory.ENTRY_POINT_GROUP
        return entries

    monkeypatch.setattr(factory, "entry_points", fake_entry_points)
    factory._plugins.cache_clear()
    factory._load_plugin.cache_clear()
    yield entries
    factory._plugins.cache_clear()
    factory._load_plugin.cache_clear()


def _config(**entry: Any) -> dict[str, Any]:
    return {"llm": {"providers": [{"name": "e", "type": "echo", **entry}]}}


def test_plugin_listed(plugins: list[FakeEntryPoint]) -> None:
    assert factory.plugin_names() == ["broken", "echo"]
    assert factory.plugin_config_model("echo") is EchoConfig


def test_plugin_config_validates(plugins: list[FakeEntryPoint]) -> None:
    config = parse_config(_config(prefix="> ", repeat=2))
    provider = config.providers[0]
    assert isinstance(provider, EchoConfig)
    assert provider.prefix == "> " and provider.repeat == 2


def test_plugin_config_errors_are_reported_like_builtins(plugins: list[FakeEntryPoint]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(repeat=9, prefx="x"), source="plugin.toml")
    text = str(info.value)
    assert "plugin.toml" in text
    assert "providers[0] ('e'), field 'repeat'" in text
    assert "providers[0] ('e'), field 'prefx': unknown key 'prefx' (did you mean 'prefix'?)" in text


def test_unknown_type_lists_plugins(plugins: list[FakeEntryPoint]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"llm": {"providers": [{"name": "x", "type": "ecko"}]}})
    assert "did you mean 'echo'?" in str(info.value)
    assert "echo" in str(info.value).split("known types:")[1]


def test_registry_builds_the_plugin(plugins: list[FakeEntryPoint]) -> None:
    EchoBackend.builds = 0
    registry = Registry.from_dict(_config(prefix="> ", repeat=2))
    provider = registry.get("e")
    assert isinstance(provider, EchoProvider)
    assert registry.get("e") is provider
    assert EchoBackend.builds == 1


async def test_plugin_provider_chats(plugins: list[FakeEntryPoint]) -> None:
    async with Registry.from_dict(_config(prefix="> ", repeat=2)) as registry:
        response = await registry.get("e").chat([Message.user("hi")])
    assert response.text == "> hihi"
    assert response.provider == "e" and response.model == "echo-model"


def test_plugin_that_fails_to_import(plugins: list[FakeEntryPoint]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"llm": {"providers": [{"name": "b", "type": "broken"}]}}, source="p.toml")
    text = str(info.value)
    assert text.startswith("p.toml: ")
    assert (
        "providers[0] ('b'), field 'type': the plugin backend 'broken' (zeph_broken:backend) failed to import" in text
    )
    assert "zeph_broken" in text


def test_without_plugins_the_type_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory, "entry_points", lambda *, group: [])
    factory._plugins.cache_clear()
    factory._load_plugin.cache_clear()
    try:
        with pytest.raises(ConfigError, match="unknown provider type 'echo'"):
            parse_config(_config())
    finally:
        factory._plugins.cache_clear()
        factory._load_plugin.cache_clear()
