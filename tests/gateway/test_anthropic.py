"""`POST /v1/messages` through a real uvicorn server, driven by the official `anthropic` client, in
front of scripted mock providers (text, streams, tool calls, thinking, errors, disconnects)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import anthropic
import httpx
import pytest

from tests.gateway.anthropic_support import NEVER_HANGS, mock_registry, running_gateway
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.base import BaseProvider
from zeph_providers.errors import ProviderUnavailableError, RateLimitError
from zeph_providers.options import Capabilities, ChatOptions
from zeph_providers.types import (
    Message,
    Role,
    StreamChunk,
    ThinkingPart,
    ToolCall,
    ToolDefinition,
    ToolResultPart,
    ToolUsePart,
)

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


class WatchedMock(MockProvider):
    """A mock that records when its stream is closed (the upstream side of a disconnect)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream_closed = threading.Event()

    async def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        try:
            async for chunk in super()._stream(messages, options):
                yield chunk
        finally:
            self.stream_closed.set()


class Uncounting(MockProvider):
    """A provider that cannot count tokens (the base class's answer)."""

    async def count_tokens(self, messages: Sequence[Message], *, tools: Sequence[ToolDefinition] = ()) -> int:
        return await BaseProvider.count_tokens(self, messages, tools=tools)


@pytest.fixture(scope="module")
def mocks() -> dict[str, MockProvider]:
    return {
        "text": MockProvider("text", replies=["The quick brown fox jumps over the lazy dog."]),
        "tools": MockProvider(
            "tools",
            replies=[
                MockReply(
                    text="Let me check.",
                    tool_calls=[ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})],
                )
            ],
        ),
        "thinker": MockProvider("thinker", replies=[MockReply(thinking="Two plus two is four.", text="4")]),
        "limited": MockProvider("limited", replies=[MockReply(error=RateLimitError("slow down", retry_after=7))]),
        "broken": MockProvider(
            "broken",
            replies=[
                MockReply(
                    text="partial reply", error=ProviderUnavailableError("upstream fell over"), error_after_chunks=2
                )
            ],
        ),
        "plain": MockProvider(
            "plain", replies=["no thinking here"], capabilities=Capabilities(tools=True, thinking=False)
        ),
        "uncounting": Uncounting("uncounting"),
        "slow": WatchedMock("slow", replies=[MockReply(text="x" * 400, delay_secs=0.05)], chunk_size=1),
    }


@pytest.fixture(scope="module")
def base_url(mocks: dict[str, MockProvider]) -> Iterator[str]:
    with running_gateway(mock_registry(*mocks.values())) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0, timeout=NEVER_HANGS) as c:
        yield c


def _same(a: anthropic.types.Message, b: anthropic.types.Message) -> None:
    assert a.model_dump(exclude={"id"}) == b.model_dump(exclude={"id"})


def test_text_reply_and_stream_agree(client: anthropic.Anthropic, mocks: dict[str, MockProvider]) -> None:
    msg = client.messages.create(
        model="text",
        max_tokens=64,
        system=[{"type": "text", "text": "Be terse."}],
        messages=[{"role": "user", "content": "Say the fox line"}],
        stop_sequences=["###"],
        metadata={"user_id": "u-1"},
        extra_body={"temperature": 0.2, "top_k": 3},  # anthropic 2.x takes no sampling arguments
    )
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "text"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "The quick brown fox jumps over the lazy dog."  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens == 6 and msg.usage.output_tokens == 9  # the mock counts words, system included
    assert msg.usage.cache_read_input_tokens == 0 and msg.usage.cache_creation_input_tokens == 0
    sent = mocks["text"].requests[-1]
    assert sent.messages[0] == Message.system("Be terse.")
    assert (sent.options.max_tokens, sent.options.temperature, sent.options.top_k, sent.options.stop) == (
        64,
        0.2,
        3,
        ("###",),
    )

    with client.messages.stream(
        model="text",
        max_tokens=64,
        system=[{"type": "text", "text": "Be terse."}],
        messages=[{"role": "user", "content": "Say the fox line"}],
        stop_sequences=["###"],
        extra_body={"temperature": 0.2, "top_k": 3},
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == "The quick brown fox jumps over the lazy dog."
    _same(final, msg)


def test_tool_calls_forced_and_answered(client: anthropic.Anthropic, mocks: dict[str, MockProvider]) -> None:
    request: dict[str, Any] = {
        "model": "tools",
        "max_tokens": 64,
        "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    }
    msg = client.messages.create(**request)
    assert [b.type for b in msg.content] == ["text", "tool_use"]
    call = msg.content[1]
    assert call.type == "tool_use" and (call.id, call.name, call.input) == ("call_1", "get_weather", {"city": "Paris"})
    assert msg.stop_reason == "tool_use"
    options = mocks["tools"].requests[-1].options
    assert options.tool_choice == "get_weather" and [t.name for t in options.tools] == ["get_weather"]
    assert options.tools[0].parameters == WEATHER["input_schema"]

    with client.messages.stream(**request) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in events  # the arguments streamed as input_json_delta pieces
    _same(final, msg)

    client.messages.create(
        **{**request, "tool_choice": {"type": "any"}},
        extra_body={
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny, 21 C"}],
                },
            ]
        },
    )
    sent = mocks["tools"].requests[-1]
    assert sent.options.tool_choice == "required"
    assert [m.role for m in sent.messages] == [Role.USER, Role.ASSISTANT, Role.TOOL]
    assert ToolUsePart(id="call_1", name="get_weather", arguments={"city": "Paris"}) in sent.messages[1].parts
    assert sent.messages[2].parts == (ToolResultPart(tool_call_id="call_1", content="sunny, 21 C"),)


def test_thinking_blocks_round_trip(client: anthropic.Anthropic, mocks: dict[str, MockProvider]) -> None:
    request: dict[str, Any] = {
        "model": "thinker",
        "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "2+2?"}],
    }
    msg = client.messages.create(**request)
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == "Two plus two is four."
    with client.messages.stream(**request) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_message()
    assert "thinking" in kinds
    _same(final, msg)

    history = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
        {"role": "user", "content": "and 3+3?"},
    ]
    client.messages.create(**{**request, "messages": history})
    assert mocks["thinker"].requests[-1].messages[1].parts[0] == ThinkingPart(text="Two plus two is four.")

    no_thinking = client.messages.create(**{**request, "thinking": {"type": "disabled"}})
    assert [b.type for b in no_thinking.content] == ["text"]


def test_count_tokens(client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(model="text", messages=[{"role": "user", "content": "one two three"}])
    assert counted.input_tokens == 3
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.count_tokens(model="uncounting", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "count_tokens" in caught.value.body["error"]["message"]  # type: ignore[index]


def test_unknown_model_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "nope" in caught.value.body["error"]["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"container": "c-1"}, "container"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"model": "plain", "max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ],
)
def test_unhonourable_fields_are_400(client: anthropic.Anthropic, extra: dict[str, Any], named: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="text", max_tokens=8, messages=[{"role": "user", "content": "hi"}], extra_body=extra
        )
    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert named in caught.value.body["error"]["message"]  # type: ignore[index]


def test_reply_headers_name_the_provider(base_url: str) -> None:
    ask = {"model": "text", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=base_url, timeout=NEVER_HANGS) as http:
        plain = http.post("/v1/messages", json=ask)
        with http.stream("POST", "/v1/messages", json={**ask, "stream": True}) as streamed:
            body = streamed.read().decode()
    assert plain.headers["x-zeph-provider"] == "text" and plain.headers["x-zeph-model"] == "mock-1"
    assert streamed.headers["x-zeph-provider"] == "text"
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert body.startswith("event: message_start\ndata: ") and body.rstrip().endswith('data: {"type":"message_stop"}')


def test_missing_max_tokens_and_bad_json_are_400(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=NEVER_HANGS) as http:
        missing = http.post("/v1/messages", json={"model": "text", "messages": [{"role": "user", "content": "hi"}]})
        broken = http.post("/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
    for response in (missing, broken):
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in missing.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_rate_limit_is_429_with_retry_after(client: anthropic.Anthropic, stream: bool) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(
            model="limited", max_tokens=8, messages=[{"role": "user", "content": "hi"}], stream=stream
        )
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_error_mid_stream_is_an_error_event(client: anthropic.Anthropic) -> None:
    seen: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model="broken", max_tokens=8, messages=[{"role": "user", "content": "hi"}]) as stream,
    ):
        for event in stream:
            seen.append(event.type)
    assert seen[0] == "message_start" and "text" in seen  # the reply had started: the status was 200
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "upstream fell over" in caught.value.body["error"]["message"]  # type: ignore[index]


def test_client_disconnect_closes_the_upstream_stream(base_url: str, mocks: dict[str, MockProvider]) -> None:
    slow = mocks["slow"]
    assert isinstance(slow, WatchedMock)
    client = anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0, timeout=NEVER_HANGS)
    with (
        client,
        client.messages.stream(model="slow", max_tokens=8, messages=[{"role": "user", "content": "hi"}]) as stream,
    ):
        for event in stream:
            if event.type == "text":
                break  # leaving the block closes the HTTP response
    assert slow.stream_closed.wait(NEVER_HANGS)
    assert slow.chunks_sent < 400  # the upstream stopped early: it did not run to its end


async def test_async_client_streams_concurrently(base_url: str) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=base_url, api_key="unused", max_retries=0, timeout=NEVER_HANGS
    ) as client:

        async def one(i: int) -> str:
            async with client.messages.stream(
                model="text", max_tokens=16, messages=[{"role": "user", "content": f"n{i}"}]
            ) as s:
                return "".join([text async for text in s.text_stream])

        texts = await asyncio.gather(*(one(i) for i in range(20)))
    assert texts == ["The quick brown fox jumps over the lazy dog."] * 20


def test_anthropic_clients_authenticate_with_x_api_key() -> None:
    from zeph_providers.gateway import GatewaySettings
    from zeph_providers.gateway._settings import GatewayKey, hash_key

    keys = (
        GatewayKey(name="all", sha256=hash_key("sk-gw-all")),
        GatewayKey(name="only-b", sha256=hash_key("sk-gw-b"), providers=frozenset({"b"})),
    )
    registry = mock_registry(MockProvider("a", replies=["from a"]), MockProvider("b", replies=["from b"]))
    ask: dict[str, Any] = {"model": "a", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    with running_gateway(registry, settings=GatewaySettings(keys=keys)) as url:

        def client(key: str) -> anthropic.Anthropic:
            return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=NEVER_HANGS)

        with client("sk-gw-all") as ok:
            assert ok.messages.create(**ask).content[0].text == "from a"
        with client("sk-gw-wrong") as wrong, pytest.raises(anthropic.AuthenticationError) as unauthorised:
            wrong.messages.create(**ask)
        assert unauthorised.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        assert "sk-gw-wrong" not in str(unauthorised.value.body)
        with client("sk-gw-b") as limited, pytest.raises(anthropic.PermissionDeniedError) as forbidden:
            limited.messages.create(**ask)
        assert forbidden.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
