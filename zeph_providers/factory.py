"""Builds the provider for one validated config entry, from the backend catalog.

The catalog (`zeph_providers.config.catalog`) is the one table `type` -> config model + builder,
for built-in and plugin backends alike; this module only imports a builder and calls it. Plugins
register through the entry-point group `zeph_providers.backends` (see the catalog).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

from zeph_providers.config import catalog
from zeph_providers.config.catalog import ENTRY_POINT_GROUP
from zeph_providers.errors import ConfigError, LlmError

if TYPE_CHECKING:
    from zeph_providers.config.models import ProviderConfigBase
    from zeph_providers.protocol import LlmProvider

__all__ = ["Backend", "ENTRY_POINT_GROUP", "build_provider", "plugin_config_model", "plugin_names"]


class Backend(Protocol):
    """What a plugin's entry point loads."""

    config_model: type[ProviderConfigBase]

    def build(self, config: Any, registry: Any) -> LlmProvider: ...


def plugin_names() -> list[str]:
    """The types installed plugins register."""
    return catalog.plugin_names()


def plugin_config_model(type_name: str) -> type[ProviderConfigBase] | None:
    """The config model of a plugin type (None when no plugin registers it)."""
    if type_name in catalog.BUILTIN:
        return None
    found = catalog.entry(type_name)
    return None if found is None else found.config_model


def _import_builder(entry: catalog.BackendEntry, provider: str) -> catalog.Builder:
    if callable(entry.builder):
        return entry.builder
    module_name, _, attr = entry.builder.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise ConfigError(
            f"the {entry.type!r} backend needs the package {missing!r}, which is not installed; "
            f"install it with: {entry.install}",
            provider=provider,
        ) from exc
    builder: catalog.Builder = getattr(module, attr)
    return builder


def build_provider(config: ProviderConfigBase, registry: Any) -> LlmProvider:
    """Build the provider for one validated config entry (`registry` resolves router members)."""
    entry = catalog.entry(config.type)
    if entry is None:
        raise ConfigError(f"no backend for type {config.type!r}", provider=config.name)
    builder = _import_builder(entry, config.name)
    try:
        provider: LlmProvider = builder(config, registry)
    except LlmError:
        raise
    except Exception as exc:
        raise ConfigError(f"could not build the provider: {type(exc).__name__}: {exc}", provider=config.name) from exc
    if isinstance(getattr(provider, "structured_retries", None), int):  # a BaseProvider: the config's value
        provider.structured_retries = config.structured_retries  # type: ignore[attr-defined]
    return provider
