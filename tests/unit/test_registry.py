"""Registry: lazy builds, caching, lookup errors, concurrency (tasks and threads), closing."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from zeph_providers import factory
from zeph_providers.backends.mock import MockProvider
from zeph_providers.config import ProviderConfigBase, catalog
from zeph_providers.errors import ConfigError, LlmError, ProviderClosedError, ProviderNotFoundError
from zeph_providers.protocol import LlmProvider
from zeph_providers.registry import Registry
from zeph_providers.types import Message

from .conftest import MOCK_CONFIG


class CountingBuilder:
    """Wraps factory.build_provider, counting builds per name (optionally slowly, to widen races)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: dict[str, int] = {}
        self.delay = delay
        self.rendezvous: threading.Barrier | None = None
        """When set, every build waits there: builds that cannot overlap break it (after its timeout)."""
        self._lock = threading.Lock()
        self._real = factory.build_provider

    def __call__(self, config: ProviderConfigBase, registry: Registry) -> LlmProvider:
        with self._lock:
            self.calls[config.name] = self.calls.get(config.name, 0) + 1
        if self.delay:
            time.sleep(self.delay)
        if self.rendezvous is not None:
            self.rendezvous.wait()
        return self._real(config, registry)


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> CountingBuilder:
    counting = CountingBuilder(delay=0.02)
    monkeypatch.setattr(factory, "build_provider", counting)
    return counting


@pytest.fixture
def registry() -> Registry:
    return Registry.from_toml_string(MOCK_CONFIG, source="mock.toml")


def test_nothing_is_built_until_asked(registry: Registry, counter: CountingBuilder) -> None:
    assert registry.built() == {}
    assert registry.names() == ["mock", "second"]
    assert "mock" in registry and "nope" not in registry and 3 not in registry
    assert counter.calls == {}
    provider = registry.get("mock")
    assert isinstance(provider, MockProvider)
    assert counter.calls == {"mock": 1}
    assert list(registry.built()) == ["mock"]


def test_get_is_cached(registry: Registry, counter: CountingBuilder) -> None:
    first = registry.get("second")
    assert registry.get("second") is first
    assert first.model == "mock-2"
    assert counter.calls == {"second": 1}


def test_unknown_name_lists_configured_names(registry: Registry) -> None:
    with pytest.raises(ProviderNotFoundError) as info:
        registry.get("gpt")
    error = info.value
    assert isinstance(error, LlmError) and isinstance(error, KeyError)
    assert error.available == ["mock", "second"]
    assert "no provider named 'gpt'; configured providers: 'mock', 'second'" in str(error)


async def test_hundred_tasks_build_once(registry: Registry, counter: CountingBuilder) -> None:
    start = asyncio.Event()

    async def fetch() -> LlmProvider:
        await start.wait()
        # half the callers come through worker threads, the other half straight from the loop
        return registry.get("mock")

    async def fetch_in_thread() -> LlmProvider:
        await start.wait()
        return await asyncio.to_thread(registry.get, "mock")

    tasks = [asyncio.create_task(fetch() if i % 2 else fetch_in_thread()) for i in range(100)]
    await asyncio.sleep(0)
    start.set()
    results = await asyncio.gather(*tasks)
    assert len({id(p) for p in results}) == 1
    assert counter.calls == {"mock": 1}


def test_hundred_threads_build_once(registry: Registry, counter: CountingBuilder) -> None:
    barrier = threading.Barrier(100)
    results: list[LlmProvider] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def fetch() -> None:
        try:
            barrier.wait(timeout=10)
            provider = registry.get("mock")
            with lock:
                results.append(provider)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not errors
    assert len(results) == 100
    assert len({id(p) for p in results}) == 1
    assert counter.calls == {"mock": 1}


def test_different_names_build_in_parallel(registry: Registry, counter: CountingBuilder) -> None:
    """Per-name locks, not one global lock: each build waits for the other to have started.

    Under one global lock the second build cannot start while the first waits, so the rendezvous
    breaks (after its generous timeout) and both `get` calls fail. No wall-clock ceiling involved.
    """
    counter.rendezvous = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def fetch(name: str) -> None:
        try:
            registry.get(name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(name,)) for name in ("mock", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    assert counter.calls == {"mock": 1, "second": 1}


def test_failed_build_is_not_cached(monkeypatch: pytest.MonkeyPatch, registry: Registry) -> None:
    attempts = {"n": 0}
    real = factory.build_provider

    def flaky(config: ProviderConfigBase, reg: Registry) -> LlmProvider:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise ConfigError("no API key", provider=config.name)
        return real(config, reg)

    monkeypatch.setattr(factory, "build_provider", flaky)
    with pytest.raises(ConfigError):
        registry.get("mock")
    assert registry.get("mock").name == "mock"
    assert attempts["n"] == 2


def test_default_and_embedder(registry: Registry) -> None:
    assert registry.default().name == "mock"
    assert registry.embedder().name == "mock"


def test_default_falls_back_to_first_provider() -> None:
    registry = Registry.from_dict(
        {"llm": {"providers": [{"name": "one", "type": "mock"}, {"name": "two", "type": "mock"}]}}
    )
    assert registry.default().name == "one"
    with pytest.raises(ConfigError, match=r'\[llm\] embedding = "one"'):
        registry.embedder()  # no guess between two that can: it names the setting to add


def test_embedder_uses_default_when_no_embedding_named() -> None:
    registry = Registry.from_dict(
        {"llm": {"default": "two", "providers": [{"name": "one", "type": "mock"}, {"name": "two", "type": "mock"}]}}
    )
    assert registry.embedder().name == "two"


def test_empty_registry_has_no_default() -> None:
    registry = Registry.from_dict({"llm": {}})
    assert registry.names() == []
    with pytest.raises(ProviderNotFoundError):
        registry.default()


async def test_aclose_closes_every_built_provider(registry: Registry) -> None:
    first = registry.get("mock")
    second = registry.get("second")
    assert isinstance(first, MockProvider) and isinstance(second, MockProvider)
    await registry.aclose()
    assert first.closed and second.closed
    assert registry.built() == {}
    with pytest.raises(ProviderClosedError, match="closed") as info:
        registry.get("mock")
    assert not info.value.retryable
    await registry.aclose()  # twice is fine


async def test_aclose_closes_the_rest_when_one_fails(registry: Registry) -> None:
    first = registry.get("mock")
    second = registry.get("second")
    assert isinstance(first, MockProvider) and isinstance(second, MockProvider)

    async def boom() -> None:
        raise RuntimeError("close failed")

    second.aclose = boom  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="close failed"):
        await registry.aclose()
    assert first.closed


async def test_async_with_closes() -> None:
    async with Registry.from_toml_string(MOCK_CONFIG) as registry:
        provider = registry.get("mock")
        response = await provider.chat([Message.user("hi")])
        assert response.text == "Hello from the mock provider."
    assert isinstance(provider, MockProvider) and provider.closed


def test_from_toml_and_repr(mock_config_path: Path) -> None:
    registry = Registry.from_toml(mock_config_path)
    assert registry.config.source == str(mock_config_path)
    registry.get("mock")
    text = repr(registry)
    assert str(mock_config_path) in text and "built=['mock']" in text


def test_from_default_is_offline_and_lazy() -> None:
    registry = Registry.from_default()
    assert registry.names() == ["local", "mock"]
    assert registry.built() == {}
    assert registry.config.source == "<built-in default>"


def test_discover_precedence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, write_config: Any, mock_config_path: Path
) -> None:
    env_file = write_config('[llm]\n[[llm.providers]]\nname = "from-env"\ntype = "mock"\n', "env.toml")
    cwd_dir = tmp_path / "cwd"
    cwd_dir.mkdir()
    (cwd_dir / "zeph.toml").write_text('[llm]\n[[llm.providers]]\nname = "from-cwd"\ntype = "mock"\n')
    monkeypatch.chdir(cwd_dir)

    monkeypatch.setenv("ZEPH_PROVIDERS_CONFIG", str(env_file))
    assert Registry.discover(mock_config_path).names() == ["mock", "second"]
    assert Registry.discover().names() == ["from-env"]
    monkeypatch.delenv("ZEPH_PROVIDERS_CONFIG")
    assert Registry.discover().names() == ["from-cwd"]
    monkeypatch.chdir(tmp_path)
    assert Registry.discover().config.source == "<built-in default>"


def test_build_failure_is_wrapped(monkeypatch: pytest.MonkeyPatch, registry: Registry) -> None:
    monkeypatch.setitem(
        catalog.BUILTIN,
        "mock",
        dataclasses.replace(catalog.BUILTIN["mock"], builder="tests.unit.test_registry:_broken_builder"),
    )
    with pytest.raises(ConfigError) as info:
        registry.get("mock")
    assert "could not build the provider: ValueError: kaboom" in str(info.value)
    assert info.value.provider == "mock"
    assert isinstance(info.value.__cause__, ValueError)


def _broken_builder(config: Any, registry: Any) -> Any:
    raise ValueError("kaboom")
