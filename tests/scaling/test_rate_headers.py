"""The limiter learns from real HTTP responses: `x-ratelimit-*`, `anthropic-ratelimit-*` and usage.

A small real HTTP server (the standard library's, on a free loopback port) answers OpenAI and
Anthropic requests with the rate-limit headers a test chooses; the official SDKs talk to it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.fakes import anthropic, openai
from zeph_providers import Registry
from zeph_providers.errors import RateLimitError
from zeph_providers.types import Message


class HeaderServer:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                owner.requests += 1
                if self.path.endswith("/messages"):
                    body: Any = anthropic.message("hi", input_tokens=10, output_tokens=5)
                else:
                    body = openai.completion("hi", prompt=10, completion_tokens=5)
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in owner.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def header_server() -> Iterator[HeaderServer]:
    server = HeaderServer()
    try:
        yield server
    finally:
        server.close()


async def test_openai_remaining_zero_blocks_until_reset(header_server: HeaderServer) -> None:
    header_server.headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}
    toml = f"""
[[llm.providers]]
name = "gpt"
type = "compatible"
base_url = "{header_server.url}/v1"
model = "m"
max_retries = 0
rpm = 100
rate_limit = "fail"
"""
    async with Registry.from_toml_string(toml) as registry:
        provider = registry.get("gpt")
        assert (await provider.chat([Message.user("a")])).text == "hi"
        with pytest.raises(RateLimitError) as caught:
            await provider.chat([Message.user("a")])
        assert caught.value.provider == "gpt"
        assert 25 < (caught.value.retry_after or 0) <= 30
    assert header_server.requests == 1


async def test_usage_corrects_the_token_estimate(header_server: HeaderServer) -> None:
    toml = f"""
[[llm.providers]]
name = "gpt"
type = "compatible"
base_url = "{header_server.url}/v1"
model = "m"
max_retries = 0
tpm = 1000
rate_limit = "fail"
"""
    async with Registry.from_toml_string(toml) as registry:
        provider = registry.get("gpt")
        limiter = provider.rate_limiter  # type: ignore[attr-defined]
        await provider.chat([Message.user("a")], max_tokens=900)  # estimated 901, used 15
        assert await limiter.has_capacity(900)  # the 886 over-estimated tokens came back
        header_server.headers = {"x-ratelimit-remaining-tokens": "50"}
        await provider.chat([Message.user("a")], max_tokens=10)
        await limiter.drain()
        assert not await limiter.has_capacity(100)  # the server said 50 are left


async def test_anthropic_headers_block_until_reset(header_server: HeaderServer) -> None:
    reset = (datetime.now(UTC) + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    header_server.headers = {"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": reset}
    toml = f"""
[[llm.providers]]
name = "claude"
type = "claude"
base_url = "{header_server.url}"
api_key = "sk-ant-test-key-0000"
max_retries = 0
rpm = 50
rate_limit = "fail"
"""
    async with Registry.from_toml_string(toml) as registry:
        provider = registry.get("claude")
        assert (await provider.chat([Message.user("a")])).text == "hi"
        with pytest.raises(RateLimitError, match="client-side"):
            await provider.chat([Message.user("a")])
    assert header_server.requests == 1
