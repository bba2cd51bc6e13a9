"""Typed errors through the gateway: each becomes OpenAI's error shape with its status.

The upstream failures are real HTTP ones: a `compatible` provider talks to the loopback fault
server (tests/fakes/fault_server.py), which answers 429 with Retry-After, 401, 500, or hangs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.fault_server import FaultServer
from tests.gateway.conftest import HANG_GUARD, Gateway, running_gateway
from zeph_providers import Registry
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.errors import ContextLengthError, ProviderUnavailableError, UnsupportedCapabilityError

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def _upstream(name: str, url: str, plan: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "compatible",
        "base_url": f"{url}/v1",
        "model": f"fault:{plan}",
        "max_retries": 0,
        **extra,
    }


@pytest.fixture
def gateway(faults: FaultServer) -> Iterator[Gateway]:
    providers = [
        _upstream("limited", faults.url, "429:retry-after=7"),
        _upstream("badkey", faults.url, "401"),
        _upstream("slow", faults.url, "hang", timeout_secs=1.0),
        _upstream("down", faults.url, "500"),
        {"name": "up", "type": "mock", "responses": ["from up"]},
        {"name": "router", "type": "router", "providers": ["down", "up"], "strategy": "fallback"},
        {"name": "scripted", "type": "mock", "responses": []},
    ]
    with running_gateway(Registry.from_dict({"llm": {"providers": providers}})) as gateway:
        yield gateway


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0, timeout=HANG_GUARD) as c:
        yield c


def _script(gateway: Gateway, *replies: MockReply) -> None:
    provider = gateway.registry.get("scripted")
    assert isinstance(provider, MockProvider)
    provider.push(*replies)


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body
    assert isinstance(body, dict), body
    assert set(body) == {"message", "type", "param", "code"}
    assert "Traceback" not in exc.response.text
    return body


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_rate_limit_is_429_with_retry_after(client: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="limited", messages=HI, stream=stream)  # type: ignore[call-overload]
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    assert _error(info.value)["code"] == "rate_limit_exceeded"


def test_upstream_auth_failure_is_502_not_401(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="badkey", messages=HI)
    assert info.value.status_code == 502
    assert _error(info.value)["code"] == "upstream_authentication_failed"


def test_upstream_timeout_is_504(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="slow", messages=HI)
    assert info.value.status_code == 504
    assert _error(info.value)["type"] == "timeout_error"


def test_context_length_is_400_with_its_code(client: openai.OpenAI, gateway: Gateway) -> None:
    _script(gateway, MockReply(error=ContextLengthError("prompt is too long", provider="scripted")))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="scripted", messages=HI)
    assert _error(info.value)["code"] == "context_length_exceeded"


def test_unsupported_capability_is_400(client: openai.OpenAI, gateway: Gateway) -> None:
    _script(gateway, MockReply(error=UnsupportedCapabilityError("vision", provider="scripted")))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="scripted", messages=HI)
    assert "vision" in _error(info.value)["message"]


def test_an_error_mid_stream_reaches_the_client(client: openai.OpenAI, gateway: Gateway) -> None:
    _script(
        gateway,
        MockReply(
            text="abcdefghijkl",
            error=ProviderUnavailableError("upstream died", provider="scripted"),
            error_after_chunks=2,
        ),
    )
    stream = client.chat.completions.create(model="scripted", messages=HI, stream=True)
    texts: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            texts.append(chunk.choices[0].delta.content or "")
    assert "".join(texts) == "abcdefgh"  # the two chunks before the failure arrived
    assert "upstream died" in info.value.message


def test_router_with_a_failing_member_answers_from_the_other(client: openai.OpenAI, gateway: Gateway) -> None:
    raw = client.chat.completions.with_raw_response.create(model="router", messages=HI)
    reply = raw.parse()
    assert reply.choices[0].message.content == "from up"
    assert reply.model == "router"
    assert raw.headers["x-zeph-provider"] == "up"
    chunks = list(client.chat.completions.create(model="router", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "from up"
    status = httpx.get(gateway.v1 + "/zeph/status", timeout=HANG_GUARD).json()
    members = status["routers"]["router"]
    assert set(members) == {"down", "up"}
    assert status["providers"]["up"]["calls"] == 2
    assert status["providers"]["down"]["failed"] == 2
