"""The response cache (`zeph_providers.cache`): hits replayed as streams, what is and is not stored,
the key, per-call bypass, structured output, cost, telemetry, routers and concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from tests.fakes.fault_server import FaultServer
from zeph_providers import Message, Registry
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.cache import ResponseCache, decode_chunks
from zeph_providers.errors import (
    ConfigError,
    ProviderUnavailableError,
    StructuredOutputError,
    UnsupportedCapabilityError,
)
from zeph_providers.options import ChatOptions
from zeph_providers.state import MemoryStore
from zeph_providers.types import ContentChunk, StreamChunk, ToolCall, ToolDefinition

HELLO = [Message.user("hello there")]
PRICING = {"input": 2.0, "output": 10.0}


def registry(*providers: dict[str, Any], **llm: Any) -> Registry:
    return Registry.from_dict({"llm": {"telemetry": False, **llm, "providers": list(providers)}})


def mock_entry(name: str = "m", replies: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "mock",
        "responses": replies or ["first reply", "second reply", "third reply"],
        "response_cache": {"ttl_secs": 600},
        **extra,
    }


def mock_of(reg: Registry, name: str = "m") -> MockProvider:
    provider = reg.get(name)
    assert isinstance(provider, MockProvider)
    return provider


class RecordingStore(MemoryStore):
    """A real `MemoryStore` that also keeps every key and value written (to inspect them)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.writes: list[tuple[str, bytes]] = []

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        self.writes.append((key, value))
        await super().cache_put(key, value, ttl_s)


def cached_mock(
    *replies: MockReply | str, clock: Any = None, ttl_s: float = 600.0
) -> tuple[MockProvider, RecordingStore]:
    store = RecordingStore(clock=clock) if clock is not None else RecordingStore()
    provider = MockProvider("m", replies=list(replies) or ["first reply", "second reply"])
    provider.response_cache = ResponseCache("m", store=store, ttl_s=ttl_s)
    return provider, store


async def chunks_of(provider: Any, messages: list[Message], **kwargs: Any) -> tuple[list[StreamChunk], Any]:
    async with provider.chat_stream(messages, **kwargs) as stream:
        chunks = [chunk async for chunk in stream]
    return chunks, stream.response


# ----- hit and miss ------------------------------------------------------------------------


async def test_a_repeated_request_is_replayed_without_reaching_the_backend() -> None:
    reg = registry(mock_entry())
    provider = mock_of(reg)
    first = await provider.chat(HELLO)
    second = await provider.chat(HELLO)
    assert (first.text, first.cached) == ("first reply", False)
    assert (second.text, second.cached) == ("first reply", True)
    assert second == first  # `cached` is not part of equality: the same reply
    assert len(provider.requests) == 1
    other = await provider.chat([Message.user("something else")])
    assert (other.text, other.cached) == ("second reply", False)
    assert len(provider.requests) == 2


async def test_hit_attempt_says_it_came_from_the_cache() -> None:
    provider, _ = cached_mock()
    live = await provider.chat(HELLO)
    hit = await provider.chat(HELLO)
    assert [a.cached for a in live.attempts] == [False]
    assert len(hit.attempts) == 1
    assert hit.attempts[0].cached and hit.attempts[0].ok and hit.attempts[0].provider == "m"


async def test_a_hit_streams_the_stored_chunks_and_chat_assembles_the_same_reply() -> None:
    provider, _ = cached_mock(MockReply(text="a fairly long reply in pieces", thinking="hmm"), "other")
    live_chunks, live = await chunks_of(provider, HELLO)
    replay_chunks, replayed = await chunks_of(provider, HELLO)
    assert replay_chunks == live_chunks
    assert sum(isinstance(c, ContentChunk) for c in replay_chunks) > 1  # replayed as a stream, piece by piece
    assert replayed == live and replayed.cached and not live.cached
    from_chat = await provider.chat(HELLO)
    assert from_chat == replayed and from_chat.cached
    assert from_chat.thinking == "hmm" and from_chat.usage == live.usage
    assert len(provider.requests) == 1


async def test_tool_calls_are_replayed() -> None:
    call = ToolCall(id="call_1", name="weather", arguments={"city": "Paris", "days": [1, 2]})
    provider, _ = cached_mock(MockReply(tool_calls=[call]), "later")
    tools = [ToolDefinition(name="weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})]
    live = await provider.chat(HELLO, tools=tools)
    hit = await provider.chat(HELLO, tools=tools)
    assert hit.cached and hit.tool_calls == [call] and hit.finish_reason == "tool_use" and hit == live


async def test_entries_expire_after_their_ttl() -> None:
    now = [1000.0]
    provider, _ = cached_mock(clock=lambda: now[0], ttl_s=10.0)
    assert not (await provider.chat(HELLO)).cached
    now[0] += 9.9
    assert (await provider.chat(HELLO)).cached
    now[0] += 0.2
    expired = await provider.chat(HELLO)
    assert not expired.cached and expired.text == "second reply"
    assert len(provider.requests) == 2


# ----- the key -------------------------------------------------------------------------------

BASE = ChatOptions()
CHANGES: dict[str, dict[str, Any]] = {
    "temperature": {"temperature": 0.3},
    "max_tokens": {"max_tokens": 17},
    "top_p": {"top_p": 0.5},
    "top_k": {"top_k": 5},
    "seed": {"seed": 7},
    "stop": {"stop": ("END",)},
    "tools": {"tools": (ToolDefinition(name="f"),)},
    "tool_choice": {"tool_choice": "required"},
    "response_format": {"response_format": {"type": "object", "properties": {"a": {"type": "string"}}}},
    "extra": {"extra": {"repeat_penalty": 1.3}},
    "logprobs": {"logprobs": True},
}


@pytest.mark.parametrize("change", sorted(CHANGES))
async def test_an_option_that_changes_the_reply_misses(change: str) -> None:
    cache = ResponseCache("m", store=MemoryStore())
    changed = BASE.with_changes(**CHANGES[change])
    assert cache.key("m", "mock-1", HELLO, changed) != cache.key("m", "mock-1", HELLO, BASE)
    if change == "logprobs":
        return  # the mock refuses logprobs (a provider option it does not honour)
    provider, _ = cached_mock('{"a": "x"}')
    await provider.chat(HELLO)
    again = await provider.chat(HELLO, **changed.to_kwargs())
    assert not again.cached
    assert (await provider.chat(HELLO, **changed.to_kwargs())).cached


async def test_what_does_not_change_the_reply_still_hits() -> None:
    provider, _ = cached_mock()
    await provider.chat(HELLO)
    assert (await provider.chat(HELLO, timeout=42.0)).cached
    assert (await provider.chat(HELLO, structured_retries=3)).cached
    _, streamed = await chunks_of(provider, HELLO)  # chat() stored it; a stream replays it
    assert streamed.cached


def test_the_key_covers_provider_model_and_messages() -> None:
    cache = ResponseCache("m", store=MemoryStore())
    key = cache.key("m", "mock-1", HELLO, BASE)
    assert key.startswith("zeph:cache:v1:") and len(key) == len("zeph:cache:v1:") + 64
    assert cache.key("other", "mock-1", HELLO, BASE) != key
    assert cache.key("m", "mock-2", HELLO, BASE) != key
    assert cache.key("m", "mock-1", [Message.user("hello  there")], BASE) != key
    assert cache.key("m", "mock-1", [Message.system("be brief"), *HELLO], BASE) != key
    # a secret-looking `extra` entry is not part of the key
    secretive = BASE.with_changes(extra={"api_key": "sk-one"})
    assert cache.key("m", "mock-1", HELLO, secretive) == key


async def test_the_api_key_is_in_no_stored_key_or_value() -> None:
    secret_a = "sk-cachetest-AAAAAAAAAAAAAAAAAAAAAAAA"
    secret_b = "sk-cachetest-BBBBBBBBBBBBBBBBBBBBBBBB"
    with FaultServer() as server:

        def entry(name: str, key: str) -> dict[str, Any]:
            return {
                "name": name,
                "type": "openai",
                "base_url": f"{server.url}/v1",
                "model": "gpt-test",
                "api_key": key,
                "max_retries": 0,
                "timeout_secs": 30,
                "response_cache": {},
            }

        reg = registry(entry("a", secret_a), entry("b", secret_b))
        try:
            stores: list[RecordingStore] = []
            for name in ("a", "b"):
                provider: Any = reg.get(name)
                store = RecordingStore()
                provider.response_cache = ResponseCache(name, store=store)
                stores.append(store)
                # cache=False is "no caching", not an option the OpenAI backend refuses
                bypassed = await provider.chat([Message.user("id-1")], cache=False)
                assert not bypassed.cached and not store.writes
                first = await provider.chat([Message.user("id-1")])
                second = await provider.chat([Message.user("id-1")])
                assert second.cached and second.text == first.text == "echo:id-1"
            assert server.attempts("id-1") == 4  # the bypass and the first call of each provider
            (key_a, value_a), (key_b, value_b) = stores[0].writes[0], stores[1].writes[0]
            assert key_a != key_b  # the provider name is in the key
            for key, value in ((key_a, value_a), (key_b, value_b)):
                for secret in (secret_a, secret_b):
                    assert secret not in key and secret.encode() not in value
                    assert secret[-12:].encode() not in value
        finally:
            await reg.aclose()


# ----- what is never stored --------------------------------------------------------------


async def test_a_stream_closed_early_is_not_stored() -> None:
    provider, store = cached_mock("a reply of several chunks", "next")
    async with provider.chat_stream(HELLO) as stream:
        async for _ in stream:
            break
    assert not store.writes
    assert not (await provider.chat(HELLO)).cached
    assert len(provider.requests) == 2


async def test_a_cancelled_call_is_not_stored() -> None:
    provider, store = cached_mock(MockReply(text="slow reply here", delay_secs=0.05), "next")
    task = asyncio.create_task(provider.chat(HELLO))
    for _ in range(100_000):  # until the request has started (never-hang bound)
        if provider.requests:
            break
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not store.writes


async def test_a_reply_cut_by_an_error_is_not_stored() -> None:
    broken = MockReply(text="partial reply text", error=ProviderUnavailableError("gone"), error_after_chunks=2)
    provider, store = cached_mock(broken, "whole reply")
    with pytest.raises(ProviderUnavailableError):
        await provider.chat(HELLO)
    assert not store.writes
    ok = await provider.chat(HELLO)
    assert ok.text == "whole reply" and not ok.cached


@pytest.mark.parametrize("finish", ["length", "content_filter", "refusal", "pause_turn", "error"])
async def test_incomplete_or_refused_replies_are_not_stored(finish: Any) -> None:
    provider, store = cached_mock(MockReply(text="cut here", finish_reason=finish), "whole")
    assert (await provider.chat(HELLO)).finish_reason == finish
    assert not store.writes
    assert not (await provider.chat(HELLO)).cached


# ----- per-call bypass ---------------------------------------------------------------------


@pytest.mark.parametrize("bypass", [{"response_cache": False}, {"cache": False}])
async def test_bypass_neither_looks_up_nor_stores(bypass: dict[str, Any]) -> None:
    provider, store = cached_mock("one", "two", "three")
    assert (await provider.chat(HELLO, **bypass)).text == "one"
    assert not store.writes  # not stored
    assert (await provider.chat(HELLO)).text == "two"  # so this one misses, and is stored
    bypassed = await provider.chat(HELLO, **bypass)
    assert (bypassed.text, bypassed.cached) == ("three", False)  # not looked up
    assert (await provider.chat(HELLO)).text == "two"


async def test_response_cache_true_is_refused_without_a_cache() -> None:
    provider = MockProvider("plain")
    with pytest.raises(UnsupportedCapabilityError) as caught:
        await provider.chat(HELLO, response_cache=True)
    assert "plain" in str(caught.value) and "response_cache" in str(caught.value)
    provider.response_cache = ResponseCache("plain", store=MemoryStore())
    assert not (await provider.chat(HELLO, response_cache=True)).cached
    assert (await provider.chat(HELLO, response_cache=True)).cached


# ----- structured output -------------------------------------------------------------------


class City(BaseModel):
    name: str
    population: int


async def test_structured_output_is_parsed_again_on_replay() -> None:
    provider, _ = cached_mock('{"name": "Paris", "population": 2100000}', '{"name": "Lyon", "population": 1}')
    live = await provider.chat(HELLO, response_format=City)
    hit = await provider.chat(HELLO, response_format=City)
    assert hit.cached and isinstance(hit.parsed, City)
    assert hit.parsed == live.parsed == City(name="Paris", population=2100000)
    _, streamed = await chunks_of(provider, HELLO, response_format=City, structured_retries=0)
    assert streamed.cached and streamed.parsed == live.parsed
    assert len(provider.requests) == 1


async def test_a_reply_that_does_not_validate_is_not_stored() -> None:
    provider, store = cached_mock('{"name": "Paris"}', '{"name": "Paris", "population": 3}')
    with pytest.raises(StructuredOutputError):
        await provider.chat(HELLO, response_format=City, structured_retries=0)
    assert not store.writes
    ok = await provider.chat(HELLO, response_format=City, structured_retries=0)
    assert not ok.cached and ok.parsed == City(name="Paris", population=3)


async def test_a_repaired_reply_is_stored_under_the_original_request() -> None:
    provider, store = cached_mock("not json", '{"name": "Rome", "population": 5}', '{"name": "never", "population": 0}')
    repaired = await provider.chat(HELLO, response_format=City, structured_retries=1)
    assert len(provider.requests) == 2 and len(store.writes) == 1
    hit = await provider.chat(HELLO, response_format=City)
    assert hit.cached and hit.parsed == repaired.parsed == City(name="Rome", population=5)
    assert hit.usage == repaired.usage  # both tries' tokens, as the stored reply counted them
    assert len(provider.requests) == 2


# ----- cost and telemetry ------------------------------------------------------------------


async def test_a_hit_costs_nothing_and_is_counted_once() -> None:
    reg = registry(mock_entry(pricing=PRICING))
    provider = mock_of(reg)
    live = await provider.chat([Message.user("one two three four")])
    hit = await provider.chat([Message.user("one two three four")])
    assert live.cost is not None and live.cost > 0
    assert hit.cost == 0.0 and hit.usage == live.usage
    totals = reg.usage()["m"]
    assert (totals.calls, totals.cache_hits) == (2, 1)
    assert (totals.input_tokens, totals.output_tokens) == (live.usage.input_tokens, live.usage.output_tokens)
    assert reg.total_cost() == pytest.approx(live.cost)


@pytest.fixture
def otel() -> Iterator[Any]:
    from tests.otel_support import install_global_otel

    exporter, _ = install_global_otel()
    exporter.clear()
    exporter.armed = True
    yield exporter
    exporter.armed = False
    exporter.clear()


async def test_the_span_records_the_cache_hit(otel: Any) -> None:
    reg = Registry.from_dict({"llm": {"providers": [mock_entry()]}})
    provider = reg.get("m")
    await provider.chat(HELLO)
    await provider.chat(HELLO)
    async with provider.chat_stream(HELLO) as stream:
        async for _ in stream:
            pass
    await provider.chat(HELLO, response_cache=False)
    spans = [s for s in otel.get_finished_spans() if s.name.startswith("chat ")]
    assert [s.attributes.get("zeph.cache.hit") for s in spans] == [False, True, True, None]
    assert "zeph.cost_usd" not in spans[0].attributes  # a mock without pricing: unknown
    assert spans[1].attributes["zeph.cost_usd"] == 0.0  # a hit: known to be free


# ----- routers -----------------------------------------------------------------------------


def router_registry(router_cache: bool, member_cache: bool, replies: list[str] | None = None) -> Registry:
    member = mock_entry("member", replies, pricing=PRICING)
    if not member_cache:
        member.pop("response_cache")
    router: dict[str, Any] = {"name": "r", "type": "router", "providers": ["member"]}
    if router_cache:
        router["response_cache"] = {}
    return registry(member, router)


@pytest.mark.parametrize(("router_cache", "member_cache"), [(True, True), (True, False), (False, True)])
async def test_router_and_member_caches_count_each_reply_once(router_cache: bool, member_cache: bool) -> None:
    reg = router_registry(router_cache, member_cache)
    router = reg.get("r")
    live = await router.chat([Message.user("one two three")])
    hit = await router.chat([Message.user("one two three")])
    member = mock_of(reg, "member")
    assert len(member.requests) == 1
    assert hit.cached and hit == live and hit.provider == "member"
    assert hit.cost == 0.0 and live.cost is not None and live.cost > 0
    assert reg.total_cost() == pytest.approx(live.cost)
    member_totals = reg.usage()["member"]
    assert member_totals.cost_usd == pytest.approx(live.cost)
    assert member_totals.calls == (1 if router_cache else 2)  # a router hit reaches no member
    assert [a.cached for a in hit.attempts] == [True]
    assert hit.attempts[0].provider == ("r" if router_cache else "member")


async def test_router_replay_parses_structured_output_as_its_member_did() -> None:
    reg = router_registry(True, False, ['{"name": "Oslo", "population": 7}'])
    member = mock_of(reg, "member")
    router = reg.get("r")
    live = await router.chat(HELLO, response_format=City)
    hit = await router.chat(HELLO, response_format=City)
    assert hit.cached and hit.parsed == live.parsed == City(name="Oslo", population=7)
    assert len(member.requests) == 1


async def test_response_cache_false_on_a_router_reaches_its_members() -> None:
    reg = router_registry(True, True)
    router = reg.get("r")
    await router.chat(HELLO)
    fresh = await router.chat(HELLO, response_cache=False)
    assert not fresh.cached and fresh.text == "second reply"
    assert (await router.chat(HELLO, response_cache=True)).cached  # True is the router's: members take None


# ----- concurrency and configuration ---------------------------------------------------------


async def test_a_hundred_concurrent_identical_calls_all_get_the_one_reply() -> None:
    provider, _ = cached_mock(MockReply(text="the only reply", delay_secs=0.001))
    replies = await asyncio.wait_for(asyncio.gather(*(provider.chat(HELLO) for _ in range(100))), 120)
    assert len(replies) == 100 and {r.text for r in replies} == {"the only reply"}
    assert 1 <= len(provider.requests) <= 100
    assert sum(not r.cached for r in replies) == len(provider.requests)  # every live call reached the mock
    after = await provider.chat(HELLO)
    assert after.cached and after.text == "the only reply"


async def test_a_damaged_entry_is_a_miss() -> None:
    provider, store = cached_mock("one", "two")
    await provider.chat(HELLO)
    key = store.writes[0][0]
    await store.cache_put(key, b"{not json", 60)
    again = await provider.chat(HELLO)
    assert not again.cached and again.text == "two"
    assert decode_chunks(b'{"v": 99, "chunks": []}') is None


def test_config_table_and_its_errors() -> None:
    reg = registry(mock_entry(response_cache={"ttl_secs": 5, "max_entries": 3}))
    cache = reg.get("m").response_cache  # type: ignore[attr-defined]
    assert isinstance(cache, ResponseCache) and cache.ttl_s == 5
    off = registry(mock_entry(response_cache={"enabled": False}))
    assert off.get("m").response_cache is None  # type: ignore[attr-defined]
    plain = registry({"name": "m", "type": "mock"})
    assert plain.get("m").response_cache is None  # type: ignore[attr-defined]
    with pytest.raises(ConfigError):
        registry(mock_entry(response_cache={"ttl_secs": 0}))
    with pytest.raises(ConfigError):
        registry(mock_entry(response_cache={"semantic_threshold": 1.5}))
    semantic = registry(mock_entry(response_cache={"semantic_threshold": 0.9}))
    with pytest.raises(ConfigError) as caught:
        semantic.get("m")
    assert "[llm]" in str(caught.value) and "embedding" in str(caught.value) and "m" in str(caught.value)


async def test_max_entries_bounds_the_in_process_store() -> None:
    reg = registry(mock_entry(response_cache={"max_entries": 2}, responses=["r1", "r2", "r3", "r4"]))
    provider = mock_of(reg)
    for text in ("a", "b", "c"):
        await provider.chat([Message.user(text)])
    assert (await provider.chat([Message.user("c")])).cached
    assert not (await provider.chat([Message.user("a")])).cached  # the oldest went first


def test_a_cache_the_config_cannot_have_is_refused_before_the_provider_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refused cache table never leaves a built (and unclosed) provider behind."""
    from zeph_providers import factory

    built: list[str] = []
    real = factory.build_provider

    def counting(config: Any, registry: Any) -> Any:
        built.append(config.name)
        return real(config, registry)

    monkeypatch.setattr(factory, "build_provider", counting)
    registry = Registry.from_dict(
        {"llm": {"providers": [{"name": "m", "type": "mock", "response_cache": {"semantic_threshold": 0.9}}]}}
    )
    for _ in range(2):
        with pytest.raises(ConfigError, match="embedding"):
            registry.get("m")
    assert built == []
