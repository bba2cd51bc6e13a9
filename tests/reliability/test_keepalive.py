"""Keep-alive: sequential requests reuse one pooled connection, streamed or not, on every backend.

A response closed before it is read to its end cannot go back to the pool, so each request would
open a new TCP connection (Claude's stream once stopped reading at `message_stop`: one connect per
request). The fault server counts the connections it accepts.
"""

from __future__ import annotations

import pytest

from tests.reliability.helpers import REMOTE_BACKENDS, new_id, provider_entry, registry_of
from tests.servers.fault_server import FaultServer, echo_text
from zeph_providers.types import Message

REQUESTS = 5


@pytest.mark.parametrize("backend", REMOTE_BACKENDS)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "chat"])
async def test_sequential_requests_reuse_one_connection(fault_server: FaultServer, backend: str, stream: bool) -> None:
    registry = registry_of(provider_entry(backend, fault_server.url, "healthy-model"))
    provider = registry.get("p")
    try:
        if backend == "ollama":  # /api/show first (once per provider), so it is not counted below
            await provider.chat([Message.user(new_id("warm"))])
        before = fault_server.total_connections
        for _ in range(REQUESTS):
            request_id = new_id(backend)
            if stream:
                async with provider.chat_stream([Message.user(request_id)]) as live:
                    response = await live.collect()
            else:
                response = await provider.chat([Message.user(request_id)])
            assert response.text == echo_text(request_id)
        opened = fault_server.total_connections - before
    finally:
        await registry.aclose()
    assert opened <= 1, f"{REQUESTS} sequential requests opened {opened} connections"
