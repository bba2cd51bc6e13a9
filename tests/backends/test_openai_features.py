"""OpenAI features beyond text, tools and usage (issue 12, items 5-9), proven on the wire.

Each reply is scripted twice, as the API documents it: a `chat.completion` body for `chat()` and
a `chat.completion.chunk` stream for `chat_stream()` (written out, not folded from one another),
so "streamed equals unstreamed" is checked against two independent shapes. Request bodies are
compared whole. Shapes follow the Chat Completions and Embeddings API reference (o3-mini usage with
reasoning tokens, `message.refusal`, `logprobs.content[].top_logprobs`, `strict` function tools).
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from pydantic import BaseModel

from tests.conformance.harness_openai import ScriptedServer, make_provider, sse_response, wants_stream
from tests.fakes.openai import DONE, chunk, sse, usage_chunk
from zeph_providers import MockProvider
from zeph_providers.errors import (
    BadResponseError,
    InvalidRequestError,
    RefusalError,
    UnsupportedCapabilityError,
)
from zeph_providers.options import ChatOptions
from zeph_providers.types import ChatResponse, LogprobsChunk, Message, TokenLogprob, ToolDefinition, TopLogprob, Usage

HELLO = [Message.user("Say hello.")]
WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
SEARCH = ToolDefinition(  # `limit` is optional: cannot be strict without changing the meaning
    name="search",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["query"],
    },
)


def answer(body: dict[str, Any], events: list[bytes]) -> ScriptedServer:
    """A server answering `chat()` with `body` and `chat_stream()` with `events`."""

    def respond(request: httpx2.Request) -> httpx2.Response:
        if wants_stream(request):
            return sse_response(events)
        return httpx2.Response(200, json=body)

    return ScriptedServer([respond])


def completion(message: dict[str, Any], *, usage: dict[str, Any], logprobs: Any = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-feat",
        "object": "chat.completion",
        "created": 1_738_000_000,
        "model": "o3-mini-2025-01-31",
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": "stop"}],
        "usage": usage,
    }


def feature_chunk(delta: dict[str, Any], *, finish: str | None = None, logprobs: Any = None) -> bytes:
    out = chunk(delta, finish=finish, response_id="chatcmpl-feat", model="o3-mini-2025-01-31")
    out["choices"][0]["logprobs"] = logprobs
    return sse(out)


def final_usage(usage: dict[str, Any]) -> bytes:
    out = usage_chunk(0, 0, response_id="chatcmpl-feat", model="o3-mini-2025-01-31")
    out["usage"] = usage
    return sse(out)


async def both(server: ScriptedServer, **kwargs: Any) -> tuple[Any, Any]:
    async with make_provider(server, **{k: v for k, v in kwargs.items() if k in _CONFIG}) as provider:
        call = {k: v for k, v in kwargs.items() if k not in _CONFIG}
        chat = await provider.chat(HELLO, **call)
        async with provider.chat_stream(HELLO, **call) as stream:
            streamed = await stream.collect()
    return chat, streamed


_CONFIG = {"model", "reasoning_effort", "strict_tools", "parallel_tool_calls", "embedding_model"}


# ----- 5. reasoning: effort, reasoning tokens ----------------------------------------------

O3_USAGE = {  # the API reference's o3-mini example: 64 of the 87 completion tokens were reasoning
    "prompt_tokens": 23,
    "completion_tokens": 87,
    "total_tokens": 110,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 64,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}


async def test_reasoning_effort_is_sent_and_reasoning_tokens_are_kept() -> None:
    body = completion({"role": "assistant", "content": "Hello!", "refusal": None}, usage=O3_USAGE)
    events = [
        feature_chunk({"role": "assistant", "content": "", "refusal": None}),
        feature_chunk({"content": "Hello!"}),
        feature_chunk({}, finish="stop"),
        final_usage(O3_USAGE),
        DONE,
    ]
    server = answer(body, events)
    chat, streamed = await both(server, model="o3-mini", reasoning_effort="high", max_tokens=500)
    assert chat == streamed
    assert chat.usage == Usage(input_tokens=23, output_tokens=87, reasoning_tokens=64)
    unstreamed, _live = server.requests
    assert unstreamed == {
        "model": "o3-mini",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_completion_tokens": 500,
        "reasoning_effort": "high",  # the config default
    }


async def test_a_calls_reasoning_effort_wins_and_none_is_not_sent() -> None:
    server = answer(completion({"role": "assistant", "content": "ok"}, usage=O3_USAGE), [])
    async with make_provider(server, model="o3-mini", reasoning_effort="high") as provider:
        await provider.chat(HELLO, reasoning_effort="minimal")
    async with make_provider(server, model="o3-mini") as provider:
        await provider.chat(HELLO)
    assert server.requests[0]["reasoning_effort"] == "minimal"
    assert "reasoning_effort" not in server.requests[1]


async def test_bad_reasoning_effort_is_refused_before_sending() -> None:
    server = answer({}, [])
    async with make_provider(server) as provider:
        with pytest.raises(InvalidRequestError, match="reasoning_effort must be one of") as info:
            await provider.chat(HELLO, reasoning_effort="extreme")  # type: ignore[typeddict-item]
    assert info.value.provider == "openai-conf"
    assert server.requests == []


async def test_a_server_rejecting_reasoning_effort_gives_the_typed_error() -> None:
    rejection = {
        "error": {
            "message": "Unrecognized request argument supplied: reasoning_effort",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    server = ScriptedServer([lambda _req: httpx2.Response(400, json=rejection)])
    async with make_provider(server, model="gpt-4o-mini") as provider:
        with pytest.raises(InvalidRequestError, match="reasoning_effort"):
            await provider.chat(HELLO, reasoning_effort="low")


def test_usage_addition_keeps_reasoning_tokens() -> None:
    total = Usage(output_tokens=10, reasoning_tokens=4) + Usage(output_tokens=5, reasoning_tokens=1)
    assert total == Usage(output_tokens=15, reasoning_tokens=5)


async def test_reasoning_content_deltas_stay_thinking() -> None:
    body = completion(
        {"role": "assistant", "content": "4", "reasoning_content": "2+2 is 4."}, usage=O3_USAGE
    )
    events = [
        feature_chunk({"role": "assistant", "reasoning_content": "2+2 "}),
        feature_chunk({"reasoning_content": "is 4."}),
        feature_chunk({"content": "4"}),
        feature_chunk({}, finish="stop"),
        final_usage(O3_USAGE),
        DONE,
    ]
    chat, streamed = await both(answer(body, events))
    assert chat == streamed
    assert (chat.thinking, chat.text) == ("2+2 is 4.", "4")


# ----- 6. strict tools, parallel_tool_calls -------------------------------------------------


async def test_strict_tools_body() -> None:
    server = answer(completion({"role": "assistant", "content": "ok"}, usage=O3_USAGE), [])
    loose = WEATHER.model_copy(update={"name": "loose", "strict": False})
    async with make_provider(server, strict_tools=True) as provider:
        await provider.chat(HELLO, tools=[WEATHER, SEARCH, loose], parallel_tool_calls=False)
    tools = server.requests[0]["tools"]
    assert tools[0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
    # An optional property: strict would change the meaning, so the default sends it as it is.
    assert tools[1]["function"] == {"name": "search", "description": "", "parameters": SEARCH.parameters}
    assert "strict" not in tools[2]["function"] and "additionalProperties" not in tools[2]["function"]["parameters"]
    assert server.requests[0]["parallel_tool_calls"] is False


async def test_per_tool_strict_overrides_the_default() -> None:
    server = answer(completion({"role": "assistant", "content": "ok"}, usage=O3_USAGE), [])
    async with make_provider(server) as provider:  # strict_tools defaults to False
        await provider.chat(HELLO, tools=[WEATHER, WEATHER.model_copy(update={"name": "w2", "strict": True})])
    first, second = server.requests[0]["tools"]
    assert "strict" not in first["function"]
    assert second["function"]["strict"] is True
    assert second["function"]["parameters"]["additionalProperties"] is False


async def test_explicit_strict_on_a_schema_that_cannot_be_strict_is_refused() -> None:
    server = answer({}, [])
    async with make_provider(server) as provider:
        with pytest.raises(InvalidRequestError, match="'search' asks for strict=True"):
            await provider.chat(HELLO, tools=[SEARCH.model_copy(update={"strict": True})])
    assert server.requests == []


async def test_parallel_tool_calls_from_config_and_only_with_tools() -> None:
    server = answer(completion({"role": "assistant", "content": "ok"}, usage=O3_USAGE), [])
    async with make_provider(server, parallel_tool_calls=False) as provider:
        await provider.chat(HELLO, tools=[WEATHER])
        await provider.chat(HELLO, tools=[WEATHER], parallel_tool_calls=True)
        await provider.chat(HELLO)  # the API rejects parallel_tool_calls without tools: not sent
    assert [r.get("parallel_tool_calls") for r in server.requests] == [False, True, None]


async def test_backends_without_the_options_refuse_them() -> None:
    mock = MockProvider(replies=["hi"])
    for kwargs in (
        {"reasoning_effort": "low"},
        {"parallel_tool_calls": False, "tools": [WEATHER]},
        {"logprobs": True},
        {"tools": [WEATHER.model_copy(update={"strict": True})]},
    ):
        with pytest.raises(UnsupportedCapabilityError) as info:
            await mock.chat(HELLO, **kwargs)
        assert info.value.provider == "mock"
    with pytest.raises(UnsupportedCapabilityError, match="embedding dimensions"):
        await mock.embed("x", dimensions=4)
    assert len(await mock.embed("x")) == 8


def test_chat_options_round_trip_the_typed_options() -> None:
    options = ChatOptions.from_kwargs({"reasoning_effort": "low", "parallel_tool_calls": False, "logprobs": True})
    assert ChatOptions.from_kwargs(options.to_kwargs()) == options
    assert options.provider_options() == ["reasoning_effort", "parallel_tool_calls", "logprobs"]


# ----- 7. embeddings dimensions ---------------------------------------------------------------


def embeddings_server(requests: list[dict[str, Any]], *, length: int | None = None) -> Any:
    def respond(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        requests.append(body)
        size = length or body.get("dimensions") or 1536
        data = [{"object": "embedding", "index": i, "embedding": [0.01] * size} for i in range(len(body["input"]))]
        usage = {"prompt_tokens": 8, "total_tokens": 8}
        return httpx2.Response(200, json={"object": "list", "data": data, "model": body["model"], "usage": usage})

    return respond


async def test_embedding_dimensions_per_call_and_from_config() -> None:
    requests: list[dict[str, Any]] = []
    model = "text-embedding-3-small"
    async with make_provider(embeddings_server(requests), embedding_model=model) as provider:
        assert [len(v) for v in await provider.embed_batch(["a", "b"], dimensions=256)] == [256, 256]
        assert len(await provider.embed("a")) == 1536
    async with make_provider(embeddings_server(requests), embedding_model=model, embedding_dimensions=64) as provider:
        assert len(await provider.embed("a")) == 64
        assert len(await provider.embed("a", dimensions=32)) == 32
    assert requests == [
        {"input": ["a", "b"], "model": model, "encoding_format": "float", "dimensions": 256},
        {"input": ["a"], "model": model, "encoding_format": "float"},
        {"input": ["a"], "model": model, "encoding_format": "float", "dimensions": 64},
        {"input": ["a"], "model": model, "encoding_format": "float", "dimensions": 32},
    ]


async def test_a_server_ignoring_dimensions_is_a_bad_response() -> None:
    requests: list[dict[str, Any]] = []
    server = embeddings_server(requests, length=384)  # a compatible server that ignores the field
    async with make_provider(server, embedding_model="bge-small") as provider:
        with pytest.raises(BadResponseError, match="asked for 128-dimension embeddings, the server returned 384"):
            await provider.embed("a", dimensions=128)
        with pytest.raises(InvalidRequestError, match="positive integer"):
            await provider.embed("a", dimensions=0)
    assert len(requests) == 1


# ----- 8. refusals --------------------------------------------------------------------------

REFUSAL = "I'm sorry, I cannot assist with that request."
USAGE = {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22}


def refusal_server() -> ScriptedServer:
    body = completion({"role": "assistant", "content": None, "refusal": REFUSAL}, usage=USAGE)
    events = [
        feature_chunk({"role": "assistant", "content": None, "refusal": ""}),
        feature_chunk({"refusal": "I'm sorry, "}),
        feature_chunk({"refusal": "I cannot assist with that request."}),
        feature_chunk({}, finish="stop"),
        final_usage(USAGE),
        DONE,
    ]
    return answer(body, events)


async def test_a_refusal_has_its_own_finish_reason_and_text() -> None:
    chat, streamed = await both(refusal_server())
    assert chat == streamed
    assert (chat.finish_reason, chat.text) == ("refusal", REFUSAL)


class Answer(BaseModel):
    value: str


async def test_a_refusal_with_response_format_raises_a_refusal_error() -> None:
    async with make_provider(refusal_server()) as provider:
        with pytest.raises(RefusalError) as info:
            await provider.chat(HELLO, response_format=Answer)
        assert (info.value.refusal, info.value.provider) == (REFUSAL, "openai-conf")
        assert not info.value.retryable
        with pytest.raises(RefusalError):
            async with provider.chat_stream(HELLO, response_format=Answer) as stream:
                await stream.collect()


# ----- 9. logprobs, top_logprobs, n and other extra keys -------------------------------------


def entry(token: str, logprob: float, alternatives: list[tuple[str, float]]) -> dict[str, Any]:
    def one(tok: str, lp: float) -> dict[str, Any]:
        return {"token": tok, "logprob": lp, "bytes": list(tok.encode())}

    return {**one(token, logprob), "top_logprobs": [one(t, lp) for t, lp in alternatives]}


HELLO_LP = entry("Hello", -0.31725305, [("Hello", -0.31725305), ("Hi", -1.3190403)])
BANG_LP = entry("!", -0.02380986, [("!", -0.02380986), (" there", -3.787621)])


async def test_logprobs_are_returned_streamed_and_unstreamed_alike() -> None:
    body = completion(
        {"role": "assistant", "content": "Hello!", "refusal": None},
        usage=USAGE,
        logprobs={"content": [HELLO_LP, BANG_LP], "refusal": None},
    )
    events = [
        feature_chunk({"role": "assistant", "content": "", "refusal": None}, logprobs={"content": [], "refusal": None}),
        feature_chunk({"content": "Hello"}, logprobs={"content": [HELLO_LP], "refusal": None}),
        feature_chunk({"content": "!"}, logprobs={"content": [BANG_LP], "refusal": None}),
        feature_chunk({}, finish="stop"),
        final_usage(USAGE),
        DONE,
    ]
    server = answer(body, events)
    async with make_provider(server) as provider:
        chat = await provider.chat(HELLO, logprobs=True, top_logprobs=2)
        async with provider.chat_stream(HELLO, logprobs=True, top_logprobs=2) as stream:
            chunks = [c async for c in stream]
        streamed = stream.response
    assert chat == streamed
    assert ChatResponse.model_validate_json(chat.model_dump_json()) == chat  # logprobs survive JSON
    assert [c for c in chunks if isinstance(c, LogprobsChunk)] == [
        LogprobsChunk(tokens=(chat.logprobs or [])[0:1]),
        LogprobsChunk(tokens=(chat.logprobs or [])[1:2]),
    ]
    assert chat.logprobs == [
        TokenLogprob(
            token="Hello",
            logprob=-0.31725305,
            bytes=(72, 101, 108, 108, 111),
            top_logprobs=(
                TopLogprob(token="Hello", logprob=-0.31725305, bytes=(72, 101, 108, 108, 111)),
                TopLogprob(token="Hi", logprob=-1.3190403, bytes=(72, 105)),
            ),
        ),
        TokenLogprob(
            token="!",
            logprob=-0.02380986,
            bytes=(33,),
            top_logprobs=(
                TopLogprob(token="!", logprob=-0.02380986, bytes=(33,)),
                TopLogprob(token=" there", logprob=-3.787621, bytes=(32, 116, 104, 101, 114, 101)),
            ),
        ),
    ]
    assert server.requests[0] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello."}],
        "logprobs": True,
        "top_logprobs": 2,
    }


async def test_no_logprobs_unless_asked() -> None:
    chat, streamed = await both(refusal_server())
    assert chat.logprobs is None and streamed.logprobs is None


async def test_malformed_logprobs_are_a_bad_response() -> None:
    body = completion({"role": "assistant", "content": "x"}, usage=USAGE, logprobs={"content": [{"token": 3}]})
    async with make_provider(answer(body, [])) as provider:
        with pytest.raises(BadResponseError, match="logprobs"):
            await provider.chat(HELLO, logprobs=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top_logprobs": 3}, "top_logprobs needs logprobs=True"),
        ({"logprobs": True, "top_logprobs": 21}, "from 0 to 20"),
        ({"logprobs": "yes"}, "logprobs must be a bool"),
        ({"parallel_tool_calls": 0, "tools": [WEATHER]}, "parallel_tool_calls must be a bool"),
    ],
)
async def test_malformed_typed_options_are_refused(kwargs: dict[str, Any], match: str) -> None:
    server = answer({}, [])
    async with make_provider(server) as provider:
        with pytest.raises(InvalidRequestError, match=match):
            await provider.chat(HELLO, **kwargs)
    assert server.requests == []


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"n": 2}, r"extra\['n'\].*one reply per call"),
        ({"logprobs": True}, r"extra\['logprobs'\].*typed option logprobs=True"),
        ({"top_logprobs": 2}, r"extra\['top_logprobs'\]"),
        ({"reasoning_effort": "low"}, r"extra\['reasoning_effort'\]"),
        ({"modalities": ["text", "audio"]}, r"extra\['modalities'\].*audio"),
        ({"stream": False}, r"extra\['stream'\]"),
    ],
)
async def test_extra_keys_that_would_be_dropped_are_refused(extra: dict[str, Any], match: str) -> None:
    server = answer({}, [])
    async with make_provider(server) as provider:
        with pytest.raises(UnsupportedCapabilityError, match=match) as info:
            await provider.chat(HELLO, extra=extra)
    assert info.value.provider == "openai-conf"
    assert server.requests == []


async def test_other_extra_keys_are_sent_as_they_are() -> None:
    server = answer(completion({"role": "assistant", "content": "ok"}, usage=USAGE), [])
    async with make_provider(server) as provider:
        await provider.chat(HELLO, extra={"n": 1, "service_tier": "flex", "user": "u-1"})
    assert server.requests[0] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello."}],
        "n": 1,
        "service_tier": "flex",
        "user": "u-1",
    }


# ----- through a router: the options reach the member, which honours or refuses them ----------


async def test_a_router_passes_the_typed_options_to_its_members() -> None:
    from zeph_providers.backends.router import RouterProvider

    server = answer(completion({"role": "assistant", "content": "ok"}, usage=USAGE), [])
    gpt = make_provider(server)
    members = {"openai-conf": gpt, "mock": MockProvider(replies=["hi"])}
    try:
        routed = RouterProvider("r", ["openai-conf"], members.__getitem__)
        strict = WEATHER.model_copy(update={"strict": True})
        await routed.chat(HELLO, reasoning_effort="low", logprobs=True, tools=[strict])
        assert server.requests[0]["reasoning_effort"] == "low" and server.requests[0]["logprobs"] is True
        assert server.requests[0]["tools"][0]["function"]["strict"] is True
        mocked = RouterProvider("r2", ["mock"], members.__getitem__)
        with pytest.raises(UnsupportedCapabilityError, match="reasoning_effort"):
            await mocked.chat(HELLO, reasoning_effort="low")
    finally:
        await gpt.aclose()


async def test_a_router_passes_embedding_dimensions_to_its_members() -> None:
    from zeph_providers.backends.router import RouterProvider

    requests: list[dict[str, Any]] = []
    gpt = make_provider(embeddings_server(requests), embedding_model="text-embedding-3-small")
    members = {"openai-conf": gpt, "mock": MockProvider(replies=["hi"])}
    try:
        assert len(await RouterProvider("r", ["openai-conf"], members.__getitem__).embed("a", dimensions=16)) == 16
        assert requests[0]["dimensions"] == 16
        with pytest.raises(UnsupportedCapabilityError, match="embedding dimensions"):
            await RouterProvider("r2", ["mock"], members.__getitem__).embed("a", dimensions=16)
    finally:
        await gpt.aclose()


def test_the_blocking_twin_passes_dimensions_on() -> None:
    from zeph_providers import Registry
    from zeph_providers.blocking import BlockingRegistry

    blocking = BlockingRegistry(Registry.from_dict({"llm": {"providers": [{"name": "m", "type": "mock"}]}}))
    try:
        with pytest.raises(UnsupportedCapabilityError, match="embedding dimensions"):
            blocking.get("m").embed_batch(["a"], dimensions=4)
        assert len(blocking.get("m").embed("a")) == 8
    finally:
        blocking.close()
