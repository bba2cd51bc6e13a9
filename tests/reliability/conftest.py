"""Fixtures of the reliability suite: one fault server per module, warmed up once per backend."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.reliability.helpers import REMOTE_BACKENDS, provider_entry, registry_of, timed_chat
from tests.servers.fault_server import FaultServer


async def _warm_up(url: str) -> None:
    """One normal call per backend, so first-use costs (lazy SDK imports) never count against a deadline."""
    for backend in REMOTE_BACKENDS:
        registry = registry_of(provider_entry(backend, url, "warm-up", timeout_secs=30))
        try:
            outcome = await timed_chat(registry.get("p"), "warm-up")
            assert outcome.error is None, outcome.error
        finally:
            await registry.aclose()


@pytest.fixture(scope="module")
def fault_server() -> Iterator[FaultServer]:
    """A running `FaultServer` (tests/servers/fault_server.py), shared by one module's tests."""
    with FaultServer() as server:
        asyncio.run(_warm_up(server.url))
        server.clear()
        yield server
