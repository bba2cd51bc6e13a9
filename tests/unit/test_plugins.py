"""Third-party backends through the `zeph_providers.backends` entry-point group."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import pytest
from pydantic import Field

from zeph_providers import factory
from zeph_providers.base import BaseProvider
from zeph_providers.config import ProviderConfigBase, catalog, parse_config
from zeph_providers.errors import ConfigError
from zeph_providers.options import Capabilities, ChatOptions
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

    monkeypatch.setattr(catalog, "entry_points", fake_entry_points)
    catalog.reset()
    yield entries
    catalog.reset()


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
    monkeypatch.setattr(catalog, "entry_points", lambda *, group: [])
    catalog.reset()
    try:
        with pytest.raises(ConfigError, match="unknown provider type 'echo'"):
            parse_config(_config())
    finally:
        catalog.reset()


# ----- one catalog: plugins and built-ins share the table shape ---------------------------


class AliasedBackend(EchoBackend):
    aliases = ("parrot",)


def test_plugin_and_builtin_entries_share_one_shape(plugins: list[FakeEntryPoint]) -> None:
    plugins.append(FakeEntryPoint("echo2", "zeph_echo:aliased", AliasedBackend))
    catalog.reset()
    builtin = catalog.entry("mock")
    plugin = catalog.entry("echo")
    assert isinstance(builtin, catalog.BackendEntry) and isinstance(plugin, catalog.BackendEntry)
    assert builtin.origin == "built-in" and plugin.origin == "zeph_echo:backend"
    assert plugin.config_model is EchoConfig and plugin.builder == EchoBackend.build
    # a plugin's aliases resolve like the built-in ones
    resolved = catalog.resolve("parrot")
    assert resolved is not None and resolved.entry.type == "echo2"
    config = parse_config({"llm": {"providers": [{"name": "p", "type": "parrot"}]}})
    assert config.providers[0].type == "echo" and isinstance(config.providers[0], EchoConfig)


def test_plugin_without_config_model_is_a_config_error(plugins: list[FakeEntryPoint]) -> None:
    plugins.append(FakeEntryPoint("hollow", "zeph_hollow:backend", object()))
    catalog.reset()
    with pytest.raises(ConfigError) as info:
        parse_config({"llm": {"providers": [{"name": "h", "type": "hollow"}]}})
    assert "must have `config_model`" in str(info.value)


def test_config_and_factory_import_no_circle() -> None:
    """config never imports factory or registry; factory never imports registry."""
    import ast
    from pathlib import Path

    root = Path(factory.__file__).resolve().parent

    def imports(path: Path) -> set[str]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        return found

    for path in (root / "config").glob("*.py"):
        names = imports(path)
        assert not {"zeph_providers.factory", "zeph_providers.registry"} & names, path
    assert "zeph_providers.registry" not in imports(root / "factory.py")
    # the bottom layers (_secrets, then errors) are checked in test_layering.py
