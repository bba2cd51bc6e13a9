"""Typed configuration: `[llm]` and `[[llm.providers]]` tables -> pydantic models.

- `models`: one pydantic model per provider type (`LocalConfig`, `ClaudeConfig`, ...) and `LlmConfig`;
- `catalog`: the one table `type` -> config model + builder, for built-in and plugin backends;
- `loading`: `load_config` / `loads_config` / `parse_config`, strict, every problem in one `ConfigError`;
- `dump`: `dump_toml`, which never writes a secret.

Everything importable from `zeph_providers.config` before the split still is.
"""

from __future__ import annotations

from zeph_providers.config import catalog
from zeph_providers.config.dump import config_to_dict, dump_toml
from zeph_providers.config.loading import MAX_DEPTH, load_config, loads_config, parse_config, router_cycles
from zeph_providers.config.models import (
    CandleConfig,
    ClaudeConfig,
    CompatibleConfig,
    GenerationConfig,
    LlmConfig,
    LocalConfig,
    MockConfig,
    OllamaConfig,
    OpenAIConfig,
    PricingConfig,
    ProviderConfig,
    ProviderConfigBase,
    RemoteConfig,
    RouterConfig,
    StateConfig,
)

__all__ = [
    "BUILTIN_TYPES",
    "MAX_DEPTH",
    "CandleConfig",
    "ClaudeConfig",
    "CompatibleConfig",
    "GenerationConfig",
    "LlmConfig",
    "PricingConfig",
    "LocalConfig",
    "MockConfig",
    "OllamaConfig",
    "OpenAIConfig",
    "ProviderConfig",
    "ProviderConfigBase",
    "RemoteConfig",
    "RouterConfig",
    "StateConfig",
    "TYPE_ALIASES",
    "catalog",
    "config_to_dict",
    "dump_toml",
    "load_config",
    "loads_config",
    "parse_config",
    "router_cycles",
]

BUILTIN_TYPES: dict[str, type[ProviderConfigBase]] = {t: e.config_model for t, e in catalog.BUILTIN.items()}
"""Canonical built-in type -> its config model (a view of `catalog.BUILTIN`)."""

TYPE_ALIASES: dict[str, str] = catalog.builtin_aliases()
"""Built-in alias -> canonical type (`candle` and `transformers` -> `local`, `anthropic` -> `claude`)."""
