"""The registry: providers by name, each built on first use, cached, and closed together.

Providers built in Python join it with `add(provider)` (or `Registry(config, providers=[...])` /
`Registry.from_toml(path, providers=[...])`): `get(name)` returns them, the registry's hooks (costs,
telemetry) observe them, and `aclose()` closes them unless added with `close=False`. A router in
the config may name them as members, and `[llm].default` / `[llm].embedding` may name them, when
they are given at construction (`providers=`): the config is validated knowing their names. A name
already declared in the config or added before is a `ConfigError`: one name, one provider.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from zeph_providers import factory
from zeph_providers.base import BaseProvider
from zeph_providers.config import LlmConfig, ProviderConfigBase, load_config, loads_config, parse_config
from zeph_providers.errors import ConfigError, InvalidRequestError, ProviderClosedError, ProviderNotFoundError
from zeph_providers.hooks import Hooks, global_hooks
from zeph_providers.limits import RateLimiter
from zeph_providers.pricing import CostTracker, ProviderTotals
from zeph_providers.protocol import LlmProvider
from zeph_providers.state import StateStore, build_store

if TYPE_CHECKING:
    from zeph_providers.cache import ResponseCache

__all__ = ["Registry"]


class Registry:
    """Holds the validated config and the providers built from it.

    `get(name)` builds a provider the first time it is asked for and returns the same object
    afterwards; concurrent callers (tasks or threads) share exactly one build.

    `hooks` are subscribed to every call of the providers built here (`zeph_providers.hooks`);
    they start with the cost tracker (`costs`: `resp.cost`, `usage()`, budgets) and, unless
    `[llm] telemetry = false`, OpenTelemetry spans and metrics (`zeph_providers.telemetry`).

    A provider whose config has a `[llm.providers.response_cache]` table gets its `response_cache`
    once built (`zeph_providers.cache`).
    `state` is the `StateStore` built once from `[llm.state]` (in-process by default, Redis when
    configured): providers with `rpm`/`tpm` get a `RateLimiter` on it, routers keep their breakers
    there when it is shared, and the response cache stores its entries there. Pass `state=` to
    share one store between registries (then this registry does not close it).
    """

    def __init__(
        self, config: LlmConfig, *, state: StateStore | None = None, providers: Iterable[LlmProvider] = ()
    ) -> None:
        self._config = config
        self._owns_state = state is None
        self.state: StateStore = state if state is not None else build_store(config.state)
        """Where rate limits, shared breakers and the response cache live (`zeph_providers.state`)."""
        self._providers: dict[str, LlmProvider] = {}
        self._added: dict[str, LlmProvider] = {}
        self._owned: set[str] = set()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._closed = False
        self.hooks = Hooks(parent=global_hooks())
        self.costs = CostTracker(config)
        self.hooks.add(self.costs)
        if config.telemetry:
            from zeph_providers.telemetry import Telemetry

            self.hooks.add(Telemetry(record_content=config.telemetry_content))
        for provider in providers:
            self.add(provider)

    # ----- construction -------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], *, providers: Iterable[LlmProvider] = ()) -> Registry:
        """From a TOML file; `providers` (built in Python) are added, and the config may name them."""
        given = list(providers)
        return cls(load_config(path, known=_names(given)), providers=given)

    @classmethod
    def from_toml_string(
        cls, text: str, *, source: str | None = None, providers: Iterable[LlmProvider] = ()
    ) -> Registry:
        given = list(providers)
        return cls(loads_config(text, source=source, known=_names(given)), providers=given)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: str | None = None, providers: Iterable[LlmProvider] = ()
    ) -> Registry:
        """From a dict shaped like the TOML document (`{"llm": {"providers": [...]}}`)."""
        given = list(providers)
        return cls(parse_config(data, source=source, known=_names(given)), providers=given)

    @classmethod
    def from_default(cls) -> Registry:
        """The built-in offline default (SmolLM2 + all-MiniLM-L6-v2 from installed packages)."""
        from zeph_providers.defaults import DEFAULT_CONFIG_TOML

        return cls.from_toml_string(DEFAULT_CONFIG_TOML, source="<built-in default>")

    @classmethod
    def discover(cls, path: str | os.PathLike[str] | None = None) -> Registry:
        """`path`, else `$ZEPH_PROVIDERS_CONFIG`, else `./zeph.toml`, else the per-user file
        (`~/.config/zeph-providers/zeph.toml` on Linux: `zeph_providers._paths.user_config_file`),
        else the built-in default."""
        found = cls.discover_path(path)
        return cls.from_toml(found) if found is not None else cls.from_default()

    @staticmethod
    def discover_path(path: str | os.PathLike[str] | None = None) -> Path | None:
        """The file `discover` would load, or None for the built-in default."""
        if path is not None:
            return Path(path)
        env = os.environ.get("ZEPH_PROVIDERS_CONFIG")
        if env:
            return Path(env)
        local = Path("zeph.toml")
        if local.is_file():
            return local
        from zeph_providers._paths import user_config_file

        user = user_config_file()
        return user if user.is_file() else None

    # ----- lookup -------------------------------------------------------------------

    @property
    def config(self) -> LlmConfig:
        return self._config

    def names(self) -> list[str]:
        """The configured providers' names, then those added in Python."""
        return [*self._config.names(), *self._added]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (self._config.provider(name) is not None or name in self._added)

    def add(self, provider: LlmProvider, *, close: bool = True) -> LlmProvider:
        """Add a provider built in Python under its `name`; returns it.

        `get(provider.name)` returns it from now on, the registry's hooks observe its calls, and
        `aclose()` closes it (`close=False`: the caller closes it). A name the config declares or
        an earlier `add` took is a `ConfigError`. Routers of the config can name it as a member
        when it is given at construction (`Registry(config, providers=[...])`, `from_toml(...,
        providers=[...])`), since the config is checked against the names it knows.
        """
        name = getattr(provider, "name", None)
        if not isinstance(name, str) or not name or not callable(getattr(provider, "chat", None)):
            raise InvalidRequestError(
                "registry.add() takes a provider (with a str `name` and a `chat` method); "
                f"got {type(provider).__name__}"
            )
        if self._closed:
            raise ProviderClosedError("the registry is closed", provider=name)
        with self._guard:
            if self._config.provider(name) is not None or name in self._added:
                where = "declared in the config" if self._config.provider(name) is not None else "already added"
                raise ConfigError(
                    f"a provider named {name!r} is {where}; give the new one another name", provider=name
                )
            hooks = getattr(provider, "hooks", None)
            if isinstance(hooks, Hooks):
                hooks.parent = self.hooks
            self._added[name] = provider
            if close:
                self._owned.add(name)
        return provider

    def get(self, name: str) -> LlmProvider:
        """The provider called `name`, built on first use (or added with `add`)."""
        built = self._providers.get(name)
        if built is not None:
            return built
        added = self._added.get(name)
        if added is not None:
            if self._closed:
                raise ProviderClosedError("the registry is closed", provider=name)
            return added
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
                cache = self._response_cache_for(provider_config)  # its config errors come before a build
                built = factory.build_provider(provider_config, self)
                try:
                    self._attach(built, provider_config, cache)
                except BaseException:
                    _close_soon(built)  # refused after the build: nothing may keep its clients open
                    raise
                hooks = getattr(built, "hooks", None)
                if isinstance(hooks, Hooks):
                    hooks.parent = self.hooks
                self._providers[name] = built
        return built

    def _response_cache_for(self, config: ProviderConfigBase) -> ResponseCache | None:
        """`[llm.providers.response_cache]` -> the provider's cache (`zeph_providers.cache`; the store
        is `self.state` when the registry has a shared one), or None without the table."""
        if getattr(config, "response_cache", None) is None:
            return None
        from zeph_providers.cache import build_response_cache

        return build_response_cache(config, self)

    def _attach(self, provider: LlmProvider, config: ProviderConfigBase, cache: ResponseCache | None) -> None:
        """Give a built provider its response cache and its `rpm`/`tpm` limiter (on this registry's store)."""
        limited = config.rpm is not None or config.tpm is not None
        if cache is None and not limited:
            return
        if not isinstance(provider, BaseProvider):
            raise ConfigError(
                f"type {config.type!r} does not build on BaseProvider, so it cannot use "
                f"{'a response cache' if cache is not None else 'rpm/tpm limits'}; remove "
                f"{'the response_cache table' if cache is not None else 'rpm/tpm'} or limit it in the plugin",
                provider=config.name,
            )
        if cache is not None:
            provider.response_cache = cache
        if limited:
            provider.rate_limiter = RateLimiter(
                config.name, rpm=config.rpm, tpm=config.tpm, store=self.state, wait=config.rate_limit == "wait"
            )

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
        """The providers built so far (those added in Python included)."""
        return {**self._providers, **self._added}

    # ----- lifetime -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every built provider (clients, sockets, worker threads, models)."""
        self._closed = True
        with self._guard:
            providers = [provider for name, provider in self._added.items() if name in self._owned]
            providers.extend(self._providers.values())
            self._providers.clear()
        errors: list[BaseException] = []
        for provider in reversed(providers):
            try:
                await provider.aclose()
            except Exception as exc:  # close the rest before reporting
                errors.append(exc)
        if self._owns_state:
            try:
                await self.state.aclose()
            except Exception as exc:
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
        return f"<Registry source={source!r} providers={self.names()!r} built={sorted(self.built())!r}>"


def _names(providers: list[LlmProvider]) -> list[str]:
    return [name for name in (getattr(p, "name", None) for p in providers) if isinstance(name, str)]


def _close_soon(provider: LlmProvider) -> None:
    """Close a provider from sync code: on the running loop when there is one, else right here."""
    import asyncio
    import contextlib

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        with contextlib.suppress(Exception):  # best effort: the original error is what the caller must see
            asyncio.run(provider.aclose())
        return
    task = loop.create_task(provider.aclose())
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


_CLOSING: set[Any] = set()
"""Close tasks in flight (a reference keeps them from being collected before they run)."""
