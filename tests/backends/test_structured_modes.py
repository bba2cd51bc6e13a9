"""`structured_output = "native" | "tool" | "prompted"` on the OpenAI backend, on the wire.

Exact request bodies of each mode, the parsed result streamed and not, and the repair loop's second
request (the bad reply and the error fed back). A `httpx2.MockTransport` plays the server with real
Chat Completions payload shapes (`tests/conformance/harness_openai.py`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from tests.conformance.harness_claude import FakeAnthropic
from tests.conformance.harness_claude import make_provider as claude_provider
from tests.conformance.harness_openai import ScriptedServer, make_provider, sse_response, text_events, tool_events
from tests.conformance.scenarios import TextReply, ToolCallSpec, ToolReply
from zeph_providers import StructuredOutputError
from zeph_providers.backends._convert import strict_json_schema
from zeph_providers.structured import prompt_instructions
from zeph_providers.types import ContentChunk, Message, ToolCallDeltaChunk, ToolDefinition, ToolUseChunk

HELLO = [Message.system("Be brief."), Message.user("Which city?")]


class City(BaseModel):
    name: str
    population: int


CITY = {"name": "Oslo", "population": 700000}
SCHEMA = City.model_json_schema()
STRICT = strict_json_schema(SCHEMA)


def server_of(*event_lists: list[bytes]) -> ScriptedServer:
    return ScriptedServer([lambda _req, events=events: sse_response(events) for events in event_lists])  # type: ignore[misc]


def answer_call(arguments: dict[str, Any], name: str = "City") -> list[bytes]:
    return tool_events(ToolReply(calls=(ToolCallSpec("call_a", name, arguments),), fragments=3))


def without_stream_keys(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("stream", "stream_options")}


# ----- native -------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
async def test_native_sends_json_schema(streamed: bool) -> None:
    server = server_of(text_events([json.dumps(CITY)]))
    async with make_provider(server, structured_output="native") as provider:
        if streamed:
            async with provider.chat_stream(HELLO, response_format=City) as stream:
                resp = await stream.collect()
        else:
            resp = await provider.chat(HELLO, response_format=City)
    body = without_stream_keys(server.requests[0])
    assert body == {
        "model": body["model"],
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Which city?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "City", "schema": STRICT, "strict": True}},
    }
    assert resp.parsed == City(**CITY)


# ----- tool ---------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
async def test_tool_mode_forces_the_answer_tool_and_hides_its_call(streamed: bool) -> None:
    server = server_of(answer_call(CITY))
    async with make_provider(server, structured_output="tool") as provider:
        if streamed:
            async with provider.chat_stream(HELLO, response_format=City) as stream:
                chunks = [chunk async for chunk in stream]
            resp = stream.response
            assert not any(isinstance(c, ToolUseChunk | ToolCallDeltaChunk) for c in chunks)
            assert "".join(c.text for c in chunks if isinstance(c, ContentChunk)) == json.dumps(CITY)
        else:
            resp = await provider.chat(HELLO, response_format=City)
    body = without_stream_keys(server.requests[0])
    assert "response_format" not in body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "City",
                "description": "Give the final answer in exactly this structure.",
                "parameters": STRICT,
                "strict": True,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "City"}}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Which city?"},
    ]
    assert resp.parsed == City(**CITY)
    assert resp.tool_calls == [] and resp.finish_reason == "stop"
    assert resp.text == json.dumps(CITY)


async def test_tool_mode_stream_equals_chat() -> None:
    server = server_of(answer_call(CITY))
    async with make_provider(server, structured_output="tool") as provider:
        async with provider.chat_stream(HELLO, response_format=City) as stream:
            await stream.collect()
        chat = await provider.chat(HELLO, response_format=City)
    assert stream.response == chat


async def test_tool_mode_wraps_a_schema_that_is_not_an_object() -> None:
    schema = {"title": "Numbers", "type": "array", "items": {"type": "integer"}}
    server = server_of(answer_call({"value": [1, 2, 3]}, name="Numbers"))
    async with make_provider(server, structured_output="tool") as provider:
        resp = await provider.chat(HELLO, response_format=schema)
    parameters = server.requests[0]["tools"][0]["function"]["parameters"]
    assert parameters["properties"]["value"] == schema and parameters["required"] == ["value"]
    assert resp.parsed == [1, 2, 3] and resp.text == "[1, 2, 3]"


async def test_tool_mode_with_caller_tools_requires_a_call_and_passes_theirs_through() -> None:
    weather = ToolDefinition(
        name="get_weather",
        description="Weather",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    server = server_of(tool_events(ToolReply(calls=(ToolCallSpec("call_w", "get_weather", {"city": "Oslo"}),))))
    async with make_provider(server, structured_output="tool") as provider:
        resp = await provider.chat(HELLO, response_format=City, tools=[weather])
    body = server.requests[0]
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "City"]
    assert body["tool_choice"] == "required"
    assert [c.name for c in resp.tool_calls] == ["get_weather"]
    assert resp.parsed is None and resp.finish_reason == "tool_use"
    assert len(server.requests) == 1  # a call of the caller's tool is not a structured failure


# ----- prompted -----------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
async def test_prompted_puts_the_schema_in_the_system_prompt_and_extracts_the_json(streamed: bool) -> None:
    reply = f"Here it is:\n```json\n{json.dumps(CITY, indent=2)}\n```\nAnything else?"
    server = server_of(text_events([reply[:10], reply[10:]]))
    async with make_provider(server, structured_output="prompted") as provider:
        if streamed:
            async with provider.chat_stream(HELLO, response_format=City) as stream:
                resp = await stream.collect()
        else:
            resp = await provider.chat(HELLO, response_format=City)
    body = without_stream_keys(server.requests[0])
    assert body == {
        "model": body["model"],
        "messages": [
            {"role": "system", "content": "Be brief.\n\n" + prompt_instructions(SCHEMA)},
            {"role": "user", "content": "Which city?"},
        ],
    }
    assert resp.parsed == City(**CITY)
    assert resp.text == reply  # the reply text stays the model's own


async def test_prompted_without_a_system_message_adds_one() -> None:
    server = server_of(text_events([json.dumps(CITY)]))
    async with make_provider(server, structured_output="prompted") as provider:
        await provider.chat([Message.user("Which city?")], response_format=City)
    assert server.requests[0]["messages"][0] == {"role": "system", "content": prompt_instructions(SCHEMA)}


async def test_prompted_stream_without_json_raises_the_typed_error_at_the_end() -> None:
    server = server_of(text_events(["Oslo, ", "I think."]))
    async with (
        make_provider(server, structured_output="prompted") as provider,
        provider.chat_stream(HELLO, response_format=City) as stream,
    ):
        with pytest.raises(StructuredOutputError, match="no JSON value"):
            await stream.collect()
    assert len(server.requests) == 1


# ----- the repair loop on the wire ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["native", "tool", "prompted"])
async def test_repair_sends_the_bad_reply_and_the_error_back(mode: str) -> None:
    bad = {"name": "Oslo"}
    if mode == "tool":
        server = server_of(answer_call(bad), answer_call(CITY))
    else:
        server = server_of(text_events([json.dumps(bad)]), text_events([json.dumps(CITY)]))
    async with make_provider(server, structured_output=mode) as provider:
        resp = await provider.chat(HELLO, response_format=City)
    assert resp.parsed == City(**CITY)
    assert [a.outcome for a in resp.attempts] == ["StructuredOutputError", "ok"]
    assert len(server.requests) == 2
    first, second = server.requests
    assert second["messages"][: len(first["messages"])] == first["messages"]
    assistant, feedback = second["messages"][len(first["messages"]) :]
    assert assistant == {"role": "assistant", "content": json.dumps(bad)}
    assert feedback["role"] == "user"
    assert "population" in feedback["content"] and "Field required" in feedback["content"]
    # Every try asks the same way.
    assert {k: v for k, v in first.items() if k != "messages"} == {k: v for k, v in second.items() if k != "messages"}


async def test_repair_gives_up_after_the_last_try_naming_the_error() -> None:
    server = server_of(text_events(["not json"]))
    async with make_provider(server, structured_output="prompted") as provider:
        with pytest.raises(StructuredOutputError) as info:
            await provider.chat(HELLO, response_format=City, structured_retries=2)
    assert len(server.requests) == 3
    assert info.value.provider == "openai-conf"
    assert "3 tries" in info.value.message and "no JSON value" in info.value.message
    assert [a.outcome for a in info.value.attempts] == ["StructuredOutputError"] * 3


async def test_structured_retries_from_the_config() -> None:
    server = server_of(text_events(['{"name": "Oslo"}']))
    async with make_provider(server, structured_retries=0) as provider:
        with pytest.raises(StructuredOutputError):
            await provider.chat(HELLO, response_format=City)
    assert len(server.requests) == 1


# ----- Claude: "tool" (its default) and "prompted" ------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
async def test_claude_prompted_sends_no_answer_tool_and_extracts_the_json(streamed: bool) -> None:
    reply = 'Sure. {"name": "Oslo", "population": 700000} Hope that helps.'
    server = FakeAnthropic([TextReply(chunks=(reply[:12], reply[12:]))])
    async with claude_provider(server, structured_output="prompted") as provider:
        if streamed:
            async with provider.chat_stream(HELLO, response_format=City) as stream:
                resp = await stream.collect()
        else:
            resp = await provider.chat(HELLO, response_format=City)
    body = server.bodies[0]
    assert "tools" not in body and "tool_choice" not in body
    assert body["system"] == "Be brief.\n\n" + prompt_instructions(SCHEMA)
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Which city?"}]}]
    assert resp.parsed == City(**CITY) and resp.text == reply


async def test_claude_prompted_repairs_with_the_error_fed_back() -> None:
    server = FakeAnthropic([TextReply(chunks=("no idea",)), TextReply(chunks=(json.dumps(CITY),))])
    async with claude_provider(server, structured_output="prompted") as provider:
        resp = await provider.chat(HELLO, response_format=City)
    assert resp.parsed == City(**CITY)
    second = server.bodies[1]["messages"]
    assert second[1] == {"role": "assistant", "content": [{"type": "text", "text": "no idea"}]}
    assert second[2]["role"] == "user" and "no JSON value" in second[2]["content"][0]["text"]
