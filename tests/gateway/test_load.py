"""500 concurrent streaming clients through the gateway (`/v1/messages`, SSE) to a mock backend
that echoes each client's own prompt: every client gets its own complete stream, none is lost or
mixed up, and the process's open sockets are back to their baseline once the server has shut down.

No timing assertions: `NEVER_HANGS` only stops a hang.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.gateway.anthropic_support import NEVER_HANGS, mock_registry, open_sockets, running_gateway
from zeph_providers.backends.mock import MockProvider, MockRequest
from zeph_providers.options import ChatOptions
from zeph_providers.types import ContentChunk, EndChunk, Message, StreamChunk, Usage, UsageChunk

pytestmark = pytest.mark.slow

CLIENTS = 500
REPEAT = 6
"""Each reply is its client's token repeated this many times, in 8-character chunks (several SSE
events per stream, interleaved across clients)."""


class EchoMock(MockProvider):
    """Streams back the caller's last message, so each stream's content names its client."""

    async def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        self.requests.append(MockRequest(messages=messages, options=options))
        text = f"[{messages[-1].text}]" * REPEAT
        for start in range(0, len(text), 8):
            await asyncio.sleep(0)  # let the other streams interleave
            self.chunks_sent += 1
            yield ContentChunk(text=text[start : start + 8])
        yield UsageChunk(usage=Usage(input_tokens=1, output_tokens=REPEAT))
        yield EndChunk(finish_reason="stop", model=self.model)


async def _one(client: httpx.AsyncClient, i: int) -> tuple[str, list[str]]:
    body = {"model": "echo", "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": f"client-{i}"}]}
    kinds: list[str] = []
    text: list[str] = []
    async with client.stream("POST", "/v1/messages", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                kinds.append(event["type"])
                if event["type"] == "content_block_delta":
                    text.append(event["delta"]["text"])
    return "".join(text), kinds


@pytest.fixture(autouse=True)
def _enough_file_descriptors() -> None:
    """Both ends of 500 connections live in this process: raise the soft fd limit to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * CLIENTS + 256
    if soft < wanted and (hard == resource.RLIM_INFINITY or hard >= wanted):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    elif soft < wanted:
        pytest.fail(f"the fd limit ({hard}) is too low for {CLIENTS} clients and their server ends")


async def test_500_concurrent_streams_each_get_their_own_complete_reply() -> None:
    baseline = open_sockets()
    echo = EchoMock("echo")
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    with running_gateway(mock_registry(echo), backlog=4096, timeout_keep_alive=30) as url:
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=NEVER_HANGS) as client:
            results = await asyncio.wait_for(
                asyncio.gather(*(_one(client, i) for i in range(CLIENTS))), NEVER_HANGS * 2
            )
    for i, (text, kinds) in enumerate(results):
        assert text == f"[client-{i}]" * REPEAT, f"client {i} got another's or an incomplete stream"
        assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert len(echo.requests) == CLIENTS  # none lost, none repeated
    assert sorted(r.messages[-1].text for r in echo.requests) == sorted(f"client-{i}" for i in range(CLIENTS))
    assert open_sockets() == baseline  # every client and server socket closed after shutdown
