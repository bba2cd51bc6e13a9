"""Writing a config back as TOML: inline secrets are never written, and types use canonical names."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from zeph_providers.config.models import LlmConfig

__all__ = ["config_to_dict", "dump_toml"]


def config_to_dict(config: LlmConfig) -> dict[str, Any]:
    """A plain dict of the config, ready for TOML; inline secrets are left out."""
    llm: dict[str, Any] = {}
    if config.default:
        llm["default"] = config.default
    if config.embedding:
        llm["embedding"] = config.embedding
    for key, default in (("telemetry", True), ("telemetry_content", False), ("budget_usd", None)):
        if getattr(config, key) != default:
            llm[key] = getattr(config, key)
    providers = []
    for provider in config.providers:
        entry = provider.model_dump(mode="python", exclude_none=True, exclude={"api_key"})
        providers.append(_toml_safe(entry))
    llm["providers"] = providers
    if config.gateway is not None:  # key digests and env names only: never a key
        llm["gateway"] = _toml_safe(config.gateway.model_dump(mode="python", exclude_none=True))
    return {"llm": llm}


def _toml_safe(value: Any) -> Any:
    if isinstance(value, SecretStr):  # never in clear
        return "**********"
    if isinstance(value, dict):
        return {k: _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_safe(v) for v in value]
    return value


def dump_toml(config: LlmConfig) -> str:
    """The config as TOML text. An inline `api_key` is never written: keep keys in `api_key_env`."""
    import tomli_w

    return tomli_w.dumps(config_to_dict(config))
