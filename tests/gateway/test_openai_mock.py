"""The official `openai` client against the gateway in front of the mock backend: chat, streams,
tools, response_format, usage, embeddings, models, and requests refused before any provider runs."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import openai
import pytest

from tests.gateway.conftest import HANG_GUARD, Gateway
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.types import ImagePart, Role, ToolCall, ToolResultPart, ToolUsePart, Usage


def _mock(gateway: Gateway, name: str = "m") -> MockProvider:
    provider = gateway.registry.get(name)
    assert isinstance(provider, MockProvider)
    return provider


def test_models_lists_the_registry_providers(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["m", "other", "scripted"]
    assert {m.object for m in models.data} == {"model"}


def test_chat_completion(client: openai.OpenAI, mock_gateway: Gateway) -> None:
    reply = client.chat.completions.create(
        model="m",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello please"}],
        temperature=0.2,
        top_p=0.9,
        max_tokens=32,
        stop=["END"],
        seed=7,
        user="someone",
        metadata={"team": "a"},
    )
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == "m"
    choice = reply.choices[0]
    assert choice.message.content == "Hello from the mock provider."
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (5, 5)  # the mock counts words
    assert reply.usage.total_tokens == 10
    sent = _mock(mock_gateway).requests[-1]
    assert [m.role for m in sent.messages] == [Role.SYSTEM, Role.USER]
    assert sent.messages[1].text == "say hello please"
    options = sent.options
    assert (options.temperature, options.top_p, options.max_tokens, options.stop, options.seed) == (
        0.2,
        0.9,
        32,
        ("END",),
        7,
    )


def test_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the mock provider."
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == len(text) // 4 + 1  # chunk_size 4: streamed, not one blob
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (1, 5)
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def _script_tool_call(gateway: Gateway) -> None:
    _mock(gateway, "scripted").push(
        MockReply(tool_calls=[ToolCall(id="call_abc", name="get_weather", arguments={"city": "Paris"})])
    )


def test_tool_call_reply(client: openai.OpenAI, mock_gateway: Gateway) -> None:
    _script_tool_call(mock_gateway)
    reply = client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.id == "call_abc" and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    options = _mock(mock_gateway, "scripted").requests[-1].options
    assert [t.name for t in options.tools] == ["get_weather"]
    assert options.tools[0].parameters["required"] == ["city"]
    assert options.tool_choice == "get_weather"


def test_tool_call_stream_deltas(client: openai.OpenAI, mock_gateway: Gateway) -> None:
    _script_tool_call(mock_gateway)
    chunks = list(
        client.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": "weather?"}],
            tools=TOOLS,
            tool_choice="required",
            stream=True,
        )
    )
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert len(deltas) > 2  # the arguments arrive in pieces
    assert {d.index for d in deltas} == {0}
    assert deltas[0].id == "call_abc" and deltas[0].function is not None and deltas[0].function.name == "get_weather"
    assert all(d.id is None for d in deltas[1:])
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert _mock(mock_gateway, "scripted").requests[-1].options.tool_choice == "required"


def test_tool_results_reach_the_provider(client: openai.OpenAI, mock_gateway: Gateway) -> None:
    client.chat.completions.create(
        model="m",
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=TOOLS,
    )
    messages = _mock(mock_gateway).requests[-1].messages
    assert [m.role for m in messages] == [Role.USER, Role.ASSISTANT, Role.TOOL]
    assert messages[1].parts == (ToolUsePart(id="call_1", name="get_weather", arguments={"city": "Oslo"}),)
    assert messages[2].parts == (ToolResultPart(tool_call_id="call_1", content="sunny"),)


def test_response_format_json_schema(client: openai.OpenAI, mock_gateway: Gateway) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    _mock(mock_gateway, "scripted").push('{"answer": 42}')
    reply = client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "6 x 7?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "Answer", "schema": schema}},
    )
    assert json.loads(reply.choices[0].message.content or "") == {"answer": 42}
    sent = _mock(mock_gateway, "scripted").requests[-1].options.response_format
    assert isinstance(sent, dict)
    assert sent["properties"] == schema["properties"] and sent["title"] == "Answer"


def test_response_format_json_object(client: openai.OpenAI, mock_gateway: Gateway) -> None:
    _mock(mock_gateway, "scripted").push('{"ok": true}')
    reply = client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "json"}], response_format={"type": "json_object"}
    )
    assert json.loads(reply.choices[0].message.content or "") == {"ok": True}
    assert _mock(mock_gateway, "scripted").requests[-1].options.response_format == {"type": "object"}


def test_image_parts_arrive_as_bytes(client: openai.OpenAI, mock_gateway: Gateway) -> None:
    pixel = b"\x89PNG\r\n\x1a\nfake"
    url = "data:image/png;base64," + base64.b64encode(pixel).decode()
    client.chat.completions.create(
        model="m",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    )
    message = _mock(mock_gateway).requests[-1].messages[0]
    assert message.text == "what is this?"
    assert message.images == [ImagePart(data=pixel, mime_type="image/png")]


def test_remote_image_urls_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="m",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}
            ],
        )
    assert "data:" in info.value.message


def test_unknown_fields_that_change_the_reply_are_refused(client: openai.OpenAI, mock_gateway: Gateway) -> None:
    before = len(_mock(mock_gateway).requests)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], extra_body={"guided_regex": "a+"}
        )
    assert "guided_regex" in info.value.message
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "guided_regex"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], frequency_penalty=0.5)
    assert "frequency_penalty" in info.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], n=2)
    assert len(_mock(mock_gateway).requests) == before  # refused before any provider ran
    # at their defaults they change nothing and pass
    client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], n=1, frequency_penalty=0, presence_penalty=0
    )


def test_embeddings_float_and_base64(client: openai.OpenAI, mock_gateway: Gateway) -> None:
    import asyncio

    expected = asyncio.run(_mock(mock_gateway).embed_batch(["one", "two words"]))
    as_float = client.embeddings.create(model="m", input=["one", "two words"], encoding_format="float")
    assert [d.embedding for d in as_float.data] == expected
    assert [d.index for d in as_float.data] == [0, 1]
    default = client.embeddings.create(model="m", input="one")  # the client asks for base64 and decodes it
    assert default.data[0].embedding == pytest.approx(expected[0], abs=1e-6)
    assert as_float.usage.prompt_tokens == 3


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_found" and body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")


def test_malformed_json_is_400_in_openai_shape(mock_gateway: Gateway) -> None:
    response = httpx.post(mock_gateway.v1 + "/chat/completions", content=b"{not json", timeout=HANG_GUARD)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert "Traceback" not in response.text


def test_status_endpoint_reports_usage(client: openai.OpenAI, mock_gateway: Gateway) -> None:
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi there"}])
    status = httpx.get(mock_gateway.v1 + "/zeph/status", timeout=HANG_GUARD).json()
    assert status["providers"]["m"]["calls"] == 1
    assert status["providers"]["m"]["input_tokens"] == 2
    assert status["total_cost_usd"] == 0.0


def test_health_and_ready(mock_gateway: Gateway) -> None:
    assert httpx.get(mock_gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(mock_gateway.url + "/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}  # no provider names without a key


def test_usage_object_counts_cached_tokens() -> None:
    from zeph_providers.gateway._openai import usage_object

    usage = usage_object(Usage(input_tokens=10, cache_read_tokens=5, output_tokens=3, reasoning_tokens=1))
    assert usage["prompt_tokens"] == 15 and usage["total_tokens"] == 18
    assert usage["prompt_tokens_details"] == {"cached_tokens": 5}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 1}


def test_status_command_reads_a_running_gateway(
    client: openai.OpenAI, mock_gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    from zeph_providers.cli import main

    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi there"}])
    assert main(["status", "--url", mock_gateway.url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["providers"]["m"]["calls"] == 1
    assert main(["status", "--url", mock_gateway.url]) == 0
    text = capsys.readouterr().out
    assert "m: 1 calls (0 failed), 2 in / 5 out tokens" in text


def test_streamed_response_format(client: openai.OpenAI, mock_gateway: Gateway) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    _mock(mock_gateway, "scripted").push('{"answer": 42}')
    chunks = list(
        client.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": "6 x 7?"}],
            response_format={"type": "json_schema", "json_schema": {"name": "Answer", "schema": schema}},
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"answer": 42}
    sent = _mock(mock_gateway, "scripted").requests[-1].options
    assert isinstance(sent.response_format, dict) and sent.response_format["title"] == "Answer"
