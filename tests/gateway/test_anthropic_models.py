"""`POST /v1/messages` in front of real models: the offline SmolLM2 (the `local` backend, llama.cpp
engine) and a real llama.cpp server reached through a `compatible` provider. The official
`anthropic` client drives a real uvicorn server. A 135M model answers with shapes, not facts: these
tests assert on the API's structure (event order via the SDK's stream helper, stop reasons, forced
tool calls, usage), never on wording."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.gateway.anthropic_support import NEVER_HANGS, running_gateway
from zeph_providers import Registry

pytestmark = pytest.mark.slow

WEATHER = {
    "name": "get_weather",
    "description": "The weather forecast for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 32}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
LONG = 300.0  # a few tokens took minutes on this shared machine under load: a never-hangs bound


def _client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=LONG)


@pytest.fixture(scope="module")
def local_url() -> Iterator[str]:
    with running_gateway(Registry.from_default()) as url:
        yield url


@pytest.fixture(scope="module")
def llamacpp_url(llamacpp_server: str) -> Iterator[str]:
    registry = Registry.from_dict(
        {
            "llm": {
                "telemetry": False,
                "providers": [
                    {
                        "name": "llamacpp",
                        "type": "compatible",
                        "model": "smollm2",
                        "base_url": f"{llamacpp_server}/v1",
                        "timeout_secs": LONG,
                    }
                ],
            }
        }
    )
    with running_gateway(registry) as url:
        yield url


def _stream_and_check(client: anthropic.Anthropic, **request: Any) -> anthropic.types.Message:
    with client.messages.stream(**request) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert final.usage.output_tokens > 0
    return final


@pytest.mark.parametrize("fixture", ["local_url", "llamacpp_url"])
def test_short_real_reply_streamed_and_not(request: pytest.FixtureRequest, fixture: str) -> None:
    url = request.getfixturevalue(fixture)
    model = "local" if fixture == "local_url" else "llamacpp"
    with _client(url) as client:
        final = _stream_and_check(
            client, model=model, max_tokens=12, messages=[{"role": "user", "content": "Say hello."}]
        )
        assert [b.type for b in final.content] == ["text"] and final.content[0].text.strip()  # type: ignore[union-attr]
        assert final.stop_reason in ("end_turn", "max_tokens")
        assert final.usage.input_tokens > 0
        plain = client.messages.create(
            model=model, max_tokens=4, messages=[{"role": "user", "content": "Count: 1 2 3"}]
        )
        assert plain.stop_reason == "max_tokens" and plain.usage.output_tokens == 4
        assert plain.content and plain.content[0].type == "text"


def test_local_tool_forced_with_tool_choice(local_url: str) -> None:
    with _client(local_url) as client:
        request: dict[str, Any] = {"model": "local", "max_tokens": 64, "tools": [WEATHER], "messages": ASK}
        forced = client.messages.create(**request, tool_choice={"type": "tool", "name": "get_weather"})
        calls = [b for b in forced.content if b.type == "tool_use"]
        assert len(calls) == 1 and calls[0].name == "get_weather"
        assert isinstance(calls[0].input, dict) and isinstance(calls[0].input.get("city"), str)  # the schema's grammar
        assert forced.stop_reason == "tool_use"

        streamed = _stream_and_check(client, **request, tool_choice={"type": "any"})
        calls = [b for b in streamed.content if b.type == "tool_use"]
        assert len(calls) >= 1 and calls[0].name == "get_weather" and isinstance(calls[0].input, dict)
        assert streamed.stop_reason == "tool_use"


def test_llamacpp_count_tokens(llamacpp_url: str) -> None:
    with _client(llamacpp_url) as client:
        counted = client.messages.count_tokens(model="llamacpp", messages=[{"role": "user", "content": "hello there"}])
    assert counted.input_tokens > 0


assert NEVER_HANGS <= LONG
