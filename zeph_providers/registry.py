"""The registry: providers by name, each built on first use, cached, and closed together."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from zeph_providers import factory
from zeph_providers.config import LlmConfig, load_config, loads_config, parse_config
from zeph_providers.errors import ConfigError, ProviderClosedError, ProviderNotFoundError
from zeph_providers.hooks import Hooks, global_hooks
from zeph_providers.pricing import CostTracker, ProviderTotals
from zeph_providers.protocol import LlmProvider

__all__ = ["Registry"]


class Registry:
    """Holds the validated config and the providers built from it.

    `get(name)` builds a provider the first time it is asked for and returns the same object
    afterwards; concurrent callers (tasks or threads) share exactly one build.

    `hooks` are subscribed to every call of the providers built here (`zeph_providers.hooks`);
    they start with the cost tracker (`costs`: `resp.cost`, `usage()`, budgets) and, unless
    `[llm] telemetry = false`, OpenTelemetry spans and metrics (`zeph_providers.telemetry`).
    """

    def __init__(self, config: LlmConfig) -> None:
        self._config = config
        self._providers: dict[str, LlmProvider] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._closed = False
        self.hooks = Hooks(parent=global_hooks())
        self.costs = CostTracker(config)
        self.hooks.add(self.costs)
        if config.telemetry:
            from zeph_providers.telemetry import Telemetry

            self.hooks.add(Telemetry(record_content=config.telemetry_content))

    # ----- construction -------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Registry:
        return cls(load_config(path))

    @classmethod
    def from_toml_string(cls, text: str, *, source: str | None = None) -> Registry:
        return cls(loads_config(text, source=source))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Registry:
        """From a dict shaped like the TOML document (`{"llm": {"providers": [...]}}`)."""
        return cls(parse_config(data, source=source))

    @classmethod
    def from_default(cls) -> Registry:
        """The built-in offline default (SmolLM2 + all-MiniLM-L6-v2 from installed packages)."""
        from zeph_providers.defaults import DEFAULT_CONFIG_TOML

        return cls.from_toml_string(DEFAULT_CONFIG_TOML, source="<built-in default>")

    @classmethod
    def discover(cls, path: str | os.PathLike[str] | None = None) -> Registry:
        """`path`, else `$ZEPH_PROVIDERS_CONFIG`, else `./zeph.toml`, else the built-in default."""
        if path is not None:
            return cls.from_toml(path)
        env = os.environ.get("ZEPH_PROVIDERS_CONFIG")
        if env:
            return cls.from_toml(env)
        local = Path("zeph.toml")
        if local.is_file():
            return cls.from_toml(local)
        return cls.from_default()

    # ----- lookup -------------------------------------------------------------------

    @property
    def config(self) -> LlmConfig:
        return self._config

    def names(self) -> list[str]:
        return self._config.names()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._config.provider(name) is not None

    def get(self, name: str) -> LlmProvider:
        """The provider called `name`, built on first use."""
        built = self._providers.get(name)
        if built is not None:
            return built
        provider_config = self._config.provider(name)
        if provider_config is None:
            raise ProviderNotFoundError(name, self.names())
        if self._closed:
            raise ProviderClosedError("the registry is closed", provider=name)
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            built = self._providers.get(name)
            if built is None:
                built = factory.build_provider(provider_config, self)
                hooks = getattr(built, "hooks", None)
                if isinstance(hooks, Hooks):
                    hooks.parent = self.hooks
                self._providers[name] = built
        return built

    def default(self) -> LlmProvider:
        """The provider named by `[llm].default` (or the only/first provider)."""
        name = self._config.default or (self.names()[0] if self.names() else None)
        if name is None:
            raise ProviderNotFoundError("<default>", [])
        return self.get(name)

    def embedder(self) -> LlmProvider:
        """The provider named by `[llm].embedding`, else `[llm].default` when it can embed.

        Never a provider that cannot embed, and never a guess among the others: when neither names
        one that can, a `ConfigError` says which setting to add (`[llm] embedding = "..."`) and
        which providers can embed (those with `embedding_model` / `embedding_repo`, mocks, and
        routers with such a member).
        """
        named = self._config.embedding
        setting = "[llm] embedding"
        if not named:
            named, setting = self._config.default, "[llm] default"
        if named:
            provider = self.get(named)
            if provider.capabilities.embeddings:
                return provider
            problem = f"{setting} names {named!r}, which cannot embed"
        else:
            problem = "no embedding provider is configured"
        able = [name for name in self.names() if self._can_embed(name)]
        if able:
            fix = f'add [llm] embedding = "{able[0]}" (providers that can embed: {", ".join(map(repr, able))})'
        else:
            fix = (
                "no configured provider can embed: give one an `embedding_model` (openai, compatible, "
                'ollama) or an `embedding_repo` (local), then set [llm] embedding = "NAME"'
            )
        raise ConfigError(f"{problem}; {fix}", source=self._config.source, provider=named)

    def _can_embed(self, name: str, seen: frozenset[str] = frozenset()) -> bool:
        """Whether the config says `name` embeds; read from the config, nothing is built."""
        config = self._config.provider(name)
        if config is None or name in seen:
            return False
        members = getattr(config, "providers", None)
        if config.type == "router" and isinstance(members, list):
            return any(self._can_embed(member, seen | {name}) for member in members)
        if config.type == "mock":
            return True
        for field in ("embedding_model", "embedding_repo"):
            if field in type(config).model_fields:
                return bool(getattr(config, field))
        built = self._providers.get(name)  # a plugin type: its capabilities, if it is built already
        return built is not None and built.capabilities.embeddings

    def usage(self) -> dict[str, ProviderTotals]:
        """Per provider: calls, tokens and cost so far (providers not called yet are absent)."""
        return self.costs.totals()

    def total_cost(self) -> float:
        """USD spent by all providers together (a router's calls counted once, through its members)."""
        return self.costs.total_cost()

    def built(self) -> dict[str, LlmProvider]:
        """The providers built so far."""
        return dict(self._providers)

    # ----- lifetime -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every built provider (clients, sockets, worker threads, models)."""
        self._closed = True
        with self._guard:
            providers = list(self._providers.values())
            self._providers.clear()
        errors: list[BaseException] = []
        for provider in reversed(providers):
            try:
                await provider.aclose()
            except Exception as exc:  # close the rest before reporting
                errors.append(exc)
        if errors:
            raise errors[0]

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        source = self._config.source or "<dict>"
        return f"<Registry source={source!r} providers={self.names()!r} built={sorted(self._providers)!r}>"
