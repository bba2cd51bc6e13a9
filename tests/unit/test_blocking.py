"""The blocking twin: BlockingRegistry / BlockingProvider on a private loop thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import zeph_providers
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.blocking import BlockingChatStream, BlockingProvider, BlockingRegistry
from zeph_providers.errors import LlmError, ProviderNotFoundError, RateLimitError
from zeph_providers.registry import Registry
from zeph_providers.types import ContentChunk, EndChunk, Message

from .conftest import MOCK_CONFIG

HELLO = [Message.user("hello")]


@pytest.fixture
def blocking() -> Iterator[BlockingRegistry]:
    registry = BlockingRegistry.from_toml_string(MOCK_CONFIG, source="mock.toml")
    yield registry
    registry.close()


def test_lazy_export_from_package() -> None:
    assert zeph_providers.BlockingRegistry is BlockingRegistry
    assert zeph_providers.BlockingProvider is BlockingProvider


def test_chat(blocking: BlockingRegistry) -> None:
    provider = blocking.get("mock")
    assert provider.name == "mock" and provider.model == "mock-1"
    assert provider.capabilities.embeddings
    response = provider.chat(HELLO, max_tokens=5)
    assert response.text == "Hello from the mock provider."
    assert blocking.get("mock") is provider
    assert blocking.names() == ["mock", "second"]
    assert "mock" in blocking


def test_stream_matches_chat(blocking: BlockingRegistry) -> None:
    provider = blocking.get("mock")
    expected = provider.chat(HELLO)
    with provider.chat_stream(HELLO) as stream:
        chunks = list(stream)
    assert isinstance(stream, BlockingChatStream)
    assert stream.done
    assert stream.response == expected
    assert "".join(c.text for c in chunks if isinstance(c, ContentChunk)) == expected.text
    assert isinstance(chunks[-1], EndChunk)
    assert list(stream) == []  # exhausted
    assert provider.chat_stream(HELLO).collect() == expected


def test_response_before_exhaustion_raises(blocking: BlockingRegistry) -> None:
    with blocking.get("mock").chat_stream(HELLO) as stream:
        next(stream)
        with pytest.raises(LlmError, match="not finished"):
            _ = stream.response


def test_closing_early_cancels_the_async_stream() -> None:
    mock = MockProvider("slow", replies=[MockReply(text="x" * 40)], chunk_size=1, delay_secs=0.005)
    blocking = _wrap(mock)
    try:
        provider = blocking.get("slow")
        with provider.chat_stream(HELLO) as stream:
            for i, _ in enumerate(stream):
                if i == 2:
                    break
        sent = mock.chunks_sent
        time.sleep(0.05)
        assert mock.chunks_sent == sent <= 4  # nothing generated after close
        assert not stream.done
        # the provider is still usable afterwards
        assert provider.chat(HELLO).text == "x" * 40
    finally:
        blocking.close()


def test_errors_propagate_typed() -> None:
    mock = MockProvider(
        "m",
        replies=[MockReply(text="abcd", error=RateLimitError("slow", retry_after=1.0), error_after_chunks=1)],
        chunk_size=1,
    )
    blocking = _wrap(mock)
    try:
        provider = blocking.get("m")
        with pytest.raises(RateLimitError):
            provider.chat(HELLO)
        stream = provider.chat_stream(HELLO)
        assert next(stream) == ContentChunk(text="a")
        with pytest.raises(RateLimitError):
            next(stream)
        with pytest.raises(ProviderNotFoundError):
            blocking.get("nope")
    finally:
        blocking.close()


def test_embed(blocking: BlockingRegistry) -> None:
    provider = blocking.embedder()
    vector = provider.embed("hello")
    assert len(vector) == 8
    assert provider.embed_batch(["hello", "x"])[0] == vector
    assert blocking.default().name == "mock"


def test_many_threads_share_one_provider(blocking: BlockingRegistry) -> None:
    results: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        text = blocking.get("second").chat(HELLO).text
        with lock:
            results.append(text)

    threads = [threading.Thread(target=work) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert results == ["Second reply."] * 20


def test_close_closes_providers_and_stops_the_thread() -> None:
    blocking = BlockingRegistry.from_toml_string(MOCK_CONFIG)
    provider = blocking.get("mock").async_provider
    thread = blocking._loop.thread
    with blocking:
        pass
    assert isinstance(provider, MockProvider) and provider.closed
    assert not thread.is_alive()
    with pytest.raises(LlmError, match="closed"):
        blocking.get("mock")
    blocking.close()  # twice is fine


def test_constructors(mock_config_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with BlockingRegistry.from_toml(mock_config_path) as a:
        assert a.names() == ["mock", "second"]
        assert str(mock_config_path) in repr(a)
    with BlockingRegistry.from_dict({"llm": {"providers": [{"name": "d", "type": "mock"}]}}) as b:
        assert b.get("d").chat(HELLO).text
    with BlockingRegistry.from_default() as c:
        assert c.names() == ["local", "mock"]
    monkeypatch.setenv("ZEPH_PROVIDERS_CONFIG", str(mock_config_path))
    with BlockingRegistry.discover() as d:
        assert d.config.source == str(mock_config_path)
        assert isinstance(d.registry, Registry)


def test_status_passthrough(blocking: BlockingRegistry) -> None:
    assert blocking.get("mock").status() is None


def _wrap(provider: MockProvider) -> BlockingRegistry:
    registry = Registry.from_dict({"llm": {"providers": [{"name": provider.name, "type": "mock"}]}})
    registry._providers[provider.name] = provider  # pre-built: the script lives in code
    return BlockingRegistry(registry)


def test_the_blocking_twin_takes_the_same_keywords_and_reports_attempts(blocking: BlockingRegistry) -> None:
    provider = blocking.get("mock")
    response = provider.chat(HELLO, stop="END", timeout=30, extra={"k": 1})
    assert [(a.provider, a.outcome) for a in response.attempts] == [("mock", "ok")]
    with pytest.raises(TypeError, match="max_token"):
        provider.chat(HELLO, max_token=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="max_token"):
        provider.chat_stream(HELLO, max_token=5)  # type: ignore[call-arg]
    assert zeph_providers.BlockingChatStream is BlockingChatStream


def test_a_provider_keeps_its_registry_alive() -> None:
    """The README's one-liner: the registry is a temporary, dropped as soon as `get()` returns."""
    import gc

    response = BlockingRegistry.from_toml_string(MOCK_CONFIG, source="mock.toml").get("mock").chat(HELLO)
    assert response.text
    provider = BlockingRegistry.from_toml_string(MOCK_CONFIG, source="mock.toml").get("mock")
    gc.collect()
    assert provider.chat(HELLO).text == response.text
    stream = BlockingRegistry.from_toml_string(MOCK_CONFIG, source="mock.toml").get("mock").chat_stream(HELLO)
    gc.collect()
    assert stream.collect().text == response.text


def test_a_dropped_provider_still_stops_the_loop_thread() -> None:
    import gc

    provider = BlockingRegistry.from_toml_string(MOCK_CONFIG, source="mock.toml").get("mock")
    assert provider.chat(HELLO).text
    thread = provider._loop.thread
    assert thread.is_alive()
    del provider
    gc.collect()
    thread.join(timeout=120)
    assert not thread.is_alive()
