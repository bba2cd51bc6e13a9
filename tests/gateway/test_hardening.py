"""The gateway's access and accounting edges, each against a real uvicorn server: forwarded
headers are never loopback, unfinished streams are charged, budgets hold a worst case while a
request is in flight, a client that leaves before its reply cancels the upstream, the key is checked
before the Anthropic body, deep JSON is a 400, health/status show nothing a key may not see, and a
reply that ended in error never looks complete."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.gateway.conftest import HANG_GUARD, Gateway, running_gateway
from zeph_providers import Registry
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.gateway._settings import hash_key
from zeph_providers.options import ChatOptions
from zeph_providers.types import Message, StreamChunk

KEY = "zk-hardening-1111111111111111-secret"
ONLY_M = "zk-hardening-2222222222222222-secret"
HI = [{"role": "user", "content": "hi"}]
TOTAL_CHUNKS = 50
HOLD_AFTER = 3


class GatedMock(MockProvider):
    """A mock whose stream sends `HOLD_AFTER` chunks, then waits for `gate` (set by the test): the
    request stays in flight for exactly as long as the test wants, with no timing involved."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, replies=[MockReply(text="x" * 20 * TOTAL_CHUNKS)], chunk_size=20, **kwargs)
        self.gate = threading.Event()
        self.delivered = 0
        self.finished = False
        self.stream_closed = threading.Event()

    async def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        try:
            async for chunk in super()._stream(messages, options):
                if self.delivered == HOLD_AFTER:
                    while not self.gate.is_set():  # noqa: ASYNC110 (a threading.Event the test thread sets)
                        await asyncio.sleep(0.01)
                self.delivered += 1
                yield chunk
            self.finished = True
        finally:
            self.stream_closed.set()


def _wait(condition: Any) -> None:
    """Poll `condition` until it holds (a hang guard, not a timing check)."""
    for _ in range(int(HANG_GUARD * 100)):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the condition never held")


@pytest.fixture
def gated() -> Iterator[tuple[Gateway, GatedMock]]:
    """A keyed gateway over one priced, gated mock ($1 a token) and two config-built mocks."""
    mock = GatedMock("gated")
    registry = Registry.from_dict(
        {
            "llm": {
                "telemetry": False,
                "providers": [
                    {"name": "gated", "type": "mock", "pricing": {"input": 1_000_000, "output": 1_000_000}},
                    {"name": "m", "type": "mock", "responses": ["one two three"]},
                    {"name": "other", "type": "mock", "responses": ["four five"]},
                ],
                "gateway": {
                    "keys": [
                        {"name": "k", "key_sha256": hash_key(KEY), "budget_usd": 100, "tpm": 10},
                        {"name": "only-m", "key_sha256": hash_key(ONLY_M), "providers": ["m"]},
                    ]
                },
            }
        }
    )
    registry._providers["gated"] = mock  # pre-built, as tests/gateway/anthropic_support.py does
    with running_gateway(registry) as gateway:
        try:
            yield gateway, mock
        finally:
            mock.gate.set()


def _auth(key: str = KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


# ----- 1. forwarded headers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", [{"x-forwarded-for": "127.0.0.1"}, {"forwarded": "for=127.0.0.1"}, {"x-real-ip": "127.0.0.1"}]
)
def test_a_forwarded_request_is_not_loopback_without_keys(mock_gateway: Gateway, header: dict[str, str]) -> None:
    body = {"model": "m", "messages": HI}
    url = mock_gateway.v1 + "/chat/completions"
    assert httpx.post(url, json=body, timeout=HANG_GUARD).status_code == 200
    refused = httpx.post(url, json=body, headers=header, timeout=HANG_GUARD)
    assert refused.status_code == 403
    assert "loopback clients only" in refused.json()["error"]["message"]


# ----- 2. unfinished streams are charged -------------------------------------------------------


def _read_stream_then_leave(gateway: Gateway, path: str, body: dict[str, Any], mock: GatedMock) -> None:
    with (
        httpx.Client(timeout=HANG_GUARD) as http,
        http.stream("POST", gateway.url + path, json=body, headers={**_auth(), "x-api-key": KEY}) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.count("x") >= 20 and mock.delivered >= HOLD_AFTER:
                break  # leaving the block closes the connection mid-stream
    assert mock.stream_closed.wait(HANG_GUARD)
    _wait(lambda: gateway.ctx.in_flight == 0)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "gated", "messages": HI, "stream": True, "max_tokens": 1}),
        ("/v1/messages", {"model": "gated", "messages": HI, "stream": True, "max_tokens": 1}),
    ],
)
def test_a_disconnected_stream_charges_what_it_produced(
    gated: tuple[Gateway, GatedMock], path: str, body: dict[str, Any]
) -> None:
    gateway, mock = gated
    _read_stream_then_leave(gateway, path, body, mock)
    assert not mock.finished
    # at least the 3 chunks of 20 characters the gateway received: 15 output tokens + the input, at $1
    assert 15 <= gateway.ctx.spent("k") < 100
    assert gateway.ctx.pending("k") == 0
    # ... and the tokens reached the key's tpm (10): the next request is refused (a rate limit, not the budget)
    again = httpx.post(gateway.v1 + "/chat/completions", json={"model": "m", "messages": HI},
                       headers=_auth(), timeout=HANG_GUARD)  # fmt: skip
    assert again.status_code == 429 and again.json()["error"]["code"] != "insufficient_quota"


# ----- 3. budget holds --------------------------------------------------------------------------


def test_a_budget_holds_a_requests_worst_case_while_it_is_in_flight(gated: tuple[Gateway, GatedMock]) -> None:
    gateway, mock = gated
    url = gateway.v1 + "/chat/completions"
    first_body = {"model": "gated", "messages": HI, "max_tokens": 1000}  # worst case $1001 > the $100 budget
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, url, json=first_body, headers=_auth(), timeout=HANG_GUARD)
        _wait(lambda: mock.delivered >= HOLD_AFTER)  # the first request is in flight, holding its worst case
        assert gateway.ctx.pending("k") > 100
        second = httpx.post(url, json={"model": "m", "messages": HI}, headers=_auth(), timeout=HANG_GUARD)
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "insufficient_quota"
        assert "held by requests in flight" in second.json()["error"]["message"]
        mock.gate.set()
        assert first.result(HANG_GUARD).status_code == 200
    assert gateway.ctx.pending("k") == 0  # the hold was replaced by the real cost


# ----- 4. a client that leaves before its reply cancels the upstream ---------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_client_leaving_a_non_streamed_call_cancels_the_upstream(gated: tuple[Gateway, GatedMock], path: str) -> None:
    gateway, mock = gated
    body = json.dumps({"model": "gated", "messages": HI, "max_tokens": 1}).encode()
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=HANG_GUARD) as raw:
        raw.sendall(
            f"POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {KEY}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        _wait(lambda: mock.delivered >= HOLD_AFTER)
    # the gate never opens: only a cancelled upstream stream ever closes
    assert mock.stream_closed.wait(HANG_GUARD)
    assert not mock.finished and mock.delivered == HOLD_AFTER
    _wait(lambda: gateway.ctx.in_flight == 0)
    assert gateway.ctx.pending("k") == 0


def test_a_client_leaving_while_a_stream_waits_for_its_first_chunk_cancels_it() -> None:
    class Silent(MockProvider):
        def __init__(self) -> None:
            super().__init__("silent", replies=["never"])
            self.started = threading.Event()
            self.closed_stream = threading.Event()

        async def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
            self.started.set()
            try:
                await asyncio.Event().wait()  # no first chunk, ever
                yield  # type: ignore[misc]  # pragma: no cover
            finally:
                self.closed_stream.set()

    silent = Silent()
    registry = Registry.from_dict({"llm": {"telemetry": False, "providers": [{"name": "silent", "type": "mock"}]}})
    registry._providers["silent"] = silent
    with running_gateway(registry) as gateway:
        body = json.dumps({"model": "silent", "messages": HI, "stream": True}).encode()
        host, port = gateway.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=HANG_GUARD) as raw:
            raw.sendall(
                f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            assert silent.started.wait(HANG_GUARD)
        assert silent.closed_stream.wait(HANG_GUARD)
        _wait(lambda: gateway.ctx.in_flight == 0)


# ----- 5. the Anthropic routes check the key before the body -----------------------------------


def test_anthropic_checks_the_key_before_reading_the_body(gated: tuple[Gateway, GatedMock]) -> None:
    gateway, _ = gated
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        response = httpx.post(gateway.url + path, content=b"{not json", timeout=HANG_GUARD)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


# ----- 6. deeply nested JSON ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/embeddings"])
def test_deeply_nested_json_is_a_400(mock_gateway: Gateway, path: str, caplog: pytest.LogCaptureFixture) -> None:
    depth = 200_000
    body = b'{"model": "m", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    response = httpx.post(mock_gateway.url + path, content=body, timeout=HANG_GUARD)
    assert response.status_code == 400
    assert "nested too deeply" in response.text
    assert "Traceback" not in response.text and "Traceback" not in caplog.text


# ----- 7. what health and status show -------------------------------------------------------------


def test_readyz_names_no_provider(mock_gateway: Gateway) -> None:
    ready = httpx.get(mock_gateway.url + "/readyz", timeout=HANG_GUARD)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


def test_status_shows_a_restricted_key_only_its_providers(gated: tuple[Gateway, GatedMock]) -> None:
    gateway, _ = gated
    for model, key in (("m", ONLY_M), ("other", KEY)):
        reply = httpx.post(gateway.v1 + "/chat/completions", json={"model": model, "messages": HI},
                           headers=_auth(key), timeout=HANG_GUARD)  # fmt: skip
        assert reply.status_code == 200
    full = httpx.get(gateway.v1 + "/zeph/status", headers=_auth(KEY), timeout=HANG_GUARD).json()
    assert {"m", "other"} <= set(full["providers"])
    restricted = httpx.get(gateway.v1 + "/zeph/status", headers=_auth(ONLY_M), timeout=HANG_GUARD).json()
    assert set(restricted["providers"]) == {"m"}
    assert restricted["routers"] == {}


# ----- 8. finish_reason "error" ------------------------------------------------------------------


def test_a_reply_that_ended_in_error_is_not_complete(client: openai.OpenAI, mock_gateway: Gateway) -> None:
    scripted = mock_gateway.registry.get("scripted")
    assert isinstance(scripted, MockProvider)
    scripted.push(MockReply(text="partial", finish_reason="error"))
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="scripted", messages=HI)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    error = caught.value.body
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}
    assert "ended the reply with an error" in error["message"]

    body = {"model": "scripted", "messages": HI, "stream": True}
    with httpx.stream("POST", mock_gateway.v1 + "/chat/completions", json=body, timeout=HANG_GUARD) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert "ended the reply with an error" in last["error"]["message"]
    assert not any('"finish_reason": "stop"' in event for event in events)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="scripted", messages=HI, stream=True))  # type: ignore[arg-type]


# ----- shutdown begins at the signal -------------------------------------------------------------


def test_serve_marks_the_gateway_shutting_down_at_the_signal() -> None:
    import signal

    import uvicorn

    from zeph_providers._cli_serve import _announcing_server
    from zeph_providers.gateway import create_app

    app = create_app(Registry.from_toml_string('[[llm.providers]]\nname = "m"\ntype = "mock"\n'))
    ctx = app.state.gateway
    server = _announcing_server(uvicorn.Config(app, log_config=None), ctx)
    assert not ctx.shutting_down
    server.handle_exit(signal.SIGTERM, None)  # what uvicorn's signal handler calls
    assert server.should_exit and ctx.shutting_down  # before uvicorn's graceful wait, not after it
