"""Maps a provider `type` to the backend that builds it, including third-party plugins.

Built-in backends are imported only when a provider of that type is built, so loading a config
never imports an SDK or torch. Plugins register through the entry-point group
`zeph_providers.backends`: the entry point's name is the `type`, and it loads an object with
`config_model` (a subclass of `ProviderConfigBase`) and `build(config, registry)`.
"""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from zeph_providers.errors import ConfigError, LlmError

if TYPE_CHECKING:
    from zeph_providers.config import ProviderConfigBase
    from zeph_providers.protocol import LlmProvider
    from zeph_providers.registry import Registry

__all__ = ["Backend", "ENTRY_POINT_GROUP", "build_provider", "plugin_config_model", "plugin_names"]

ENTRY_POINT_GROUP = "zeph_providers.backends"

_BUILTIN_BUILDERS: dict[str, str] = {
    "candle": "zeph_providers.local.provider:build",
    "claude": "zeph_providers.backends.claude:build",
    "openai": "zeph_providers.backends.openai:build",
    "compatible": "zeph_providers.backends.openai:build",
    "ollama": "zeph_providers.backends.ollama:build",
    "router": "zeph_providers.backends.router:build",
    "mock": "zeph_providers.backends.mock:build",
}


class Backend(Protocol):
    """What a plugin's entry point loads."""

    config_model: type[ProviderConfigBase]

    def build(self, config: Any, registry: Registry) -> LlmProvider: ...


@functools.cache
def _plugins() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep
    return found


def plugin_names() -> list[str]:
    return sorted(_plugins())


@functools.cache
def _load_plugin(type_name: str) -> Backend | None:
    ep = _plugins().get(type_name)
    if ep is None:
        return None
    try:
        backend: Backend = ep.load()
    except Exception as exc:
        raise ConfigError(f"the plugin backend {type_name!r} ({ep.value}) failed to import: {exc}") from exc
    return backend


def plugin_config_model(type_name: str) -> type[ProviderConfigBase] | None:
    backend = _load_plugin(type_name)
    return None if backend is None else backend.config_model


def _import_builder(target: str, type_name: str, provider: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        # The remote SDKs are core dependencies; only the local backend has an extra.
        install = "pip install 'zeph-providers[local]'" if type_name == "candle" else "pip install zeph-providers"
        raise ConfigError(
            f"the {type_name!r} backend needs the package {missing!r}, which is not installed; "
            f"install it with: {install}",
            provider=provider,
        ) from exc
    return getattr(module, attr)


def build_provider(config: ProviderConfigBase, registry: Registry) -> LlmProvider:
    """Build the provider for one validated config entry."""
    target = _BUILTIN_BUILDERS.get(config.type)
    if target is not None:
        builder = _import_builder(target, config.type, config.name)
    else:
        backend = _load_plugin(config.type)
        if backend is None:
            raise ConfigError(f"no backend for type {config.type!r}", provider=config.name)
        builder = backend.build
    try:
        provider: LlmProvider = builder(config, registry)
    except LlmError:
        raise
    except Exception as exc:
        raise ConfigError(f"could not build the provider: {type(exc).__name__}: {exc}", provider=config.name) from exc
    return provider
