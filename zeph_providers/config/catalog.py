"""The backend catalog: one table, `type` -> config model + builder, for built-in and plugin backends.

A built-in backend names its builder as `"module:function"`, imported only when a provider of
that type is built, so loading a config never imports an SDK or torch. A plugin registers through
the entry-point group `zeph_providers.backends`: the entry point's name is the `type`, and it loads
an object with `config_model` (a subclass of `ProviderConfigBase`), `build(config, registry)` and,
optionally, `aliases` (a sequence of other type names). Both end up as the same `BackendEntry`.

Aliases may also preset fields: `type = "transformers"` is the local backend with
`engine = "transformers"` (a `.gguf` source then runs on transformers, not llama.cpp).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from zeph_providers.config.models import (
    ClaudeConfig,
    CompatibleConfig,
    LocalConfig,
    MockConfig,
    OllamaConfig,
    OpenAIConfig,
    ProviderConfigBase,
    RouterConfig,
)
from zeph_providers.errors import ConfigError

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "BackendEntry",
    "Builder",
    "Resolved",
    "builtin_aliases",
    "entry",
    "known_types",
    "plugin_names",
    "resolve",
]

ENTRY_POINT_GROUP = "zeph_providers.backends"

Builder = Callable[[Any, Any], Any]
"""`build(config, registry) -> LlmProvider`."""

ConfigModel = type[ProviderConfigBase]


@dataclass(frozen=True)
class BackendEntry:
    """One backend: the `type` that selects it, its config model and how to build it."""

    type: str
    config_model: ConfigModel
    builder: str | Builder
    """`"module:function"` (imported on first build) or the build callable itself."""
    aliases: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Other type names for this backend, each with the fields it presets (often none)."""
    install: str = "pip install zeph-providers"
    """What to run when the builder's module fails to import."""
    origin: str = "built-in"
    """`built-in`, or the entry point (`package.module:attr`) that provided it."""


@dataclass(frozen=True)
class Resolved:
    """A `type` as written in a config, looked up."""

    entry: BackendEntry
    written: str
    presets: Mapping[str, Any]


BUILTIN: dict[str, BackendEntry] = {
    "local": BackendEntry(
        "local",
        LocalConfig,
        "zeph_providers.local.provider:build",
        aliases={"candle": {}, "transformers": {"engine": "transformers"}},
        install="pip install 'zeph-providers[local]'",
    ),
    "claude": BackendEntry("claude", ClaudeConfig, "zeph_providers.backends.claude:build", aliases={"anthropic": {}}),
    "openai": BackendEntry("openai", OpenAIConfig, "zeph_providers.backends.openai:build"),
    "compatible": BackendEntry("compatible", CompatibleConfig, "zeph_providers.backends.openai:build"),
    "ollama": BackendEntry("ollama", OllamaConfig, "zeph_providers.backends.ollama:build"),
    "router": BackendEntry("router", RouterConfig, "zeph_providers.backends.router:build"),
    "mock": BackendEntry("mock", MockConfig, "zeph_providers.backends.mock:build"),
}


def builtin_aliases() -> dict[str, str]:
    """alias -> canonical type, for the built-in backends."""
    return {alias: item.type for item in BUILTIN.values() for alias in item.aliases}


@functools.cache
def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def plugin_names() -> list[str]:
    """The types that installed plugins register (without importing them)."""
    return sorted(_entry_points())


@functools.cache
def _plugin(type_name: str) -> BackendEntry | None:
    ep = _entry_points().get(type_name)
    if ep is None:
        return None
    try:
        backend = ep.load()
    except Exception as exc:
        raise ConfigError(f"the plugin backend {type_name!r} ({ep.value}) failed to import: {exc}") from exc
    model = getattr(backend, "config_model", None)
    build = getattr(backend, "build", None)
    if not (isinstance(model, type) and issubclass(model, ProviderConfigBase)) or not callable(build):
        raise ConfigError(
            f"the plugin backend {type_name!r} ({ep.value}) must have `config_model` (a ProviderConfigBase "
            "subclass) and `build(config, registry)`"
        )
    aliases: dict[str, Mapping[str, Any]] = {str(a): {} for a in getattr(backend, "aliases", ())}
    return BackendEntry(type_name, model, build, aliases=aliases, origin=str(ep.value))


def reset() -> None:
    """Forget discovered plugins (tests, or after installing one at run time)."""
    _entry_points.cache_clear()
    _plugin.cache_clear()


def entry(type_name: str) -> BackendEntry | None:
    """The backend for a canonical type: built-in first, then a plugin (imported on first use)."""
    found = BUILTIN.get(type_name)
    return found if found is not None else _plugin(type_name)


def resolve(written: str) -> Resolved | None:
    """Look up a `type` as a config writes it: a canonical name or an alias of one.

    Raises `ConfigError` when a plugin's entry point fails to import.
    """
    found = entry(written)
    if found is not None:
        return Resolved(found, written, {})
    for item in BUILTIN.values():
        if written in item.aliases:
            return Resolved(item, written, item.aliases[written])
    for name in plugin_names():
        try:
            plugin = _plugin(name)
        except ConfigError:
            continue  # reported when that type itself is used
        if plugin is not None and written in plugin.aliases:
            return Resolved(plugin, written, plugin.aliases[written])
    return None


def known_types() -> list[str]:
    """Every type name a config may use: canonical, aliases and plugins."""
    return sorted({*BUILTIN, *builtin_aliases(), *plugin_names()})
