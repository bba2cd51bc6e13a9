"""Fixtures for the gateway tests: a REAL uvicorn server on a free loopback port, in a thread.

Every test in this folder is in the slow tier (it starts a real server). `running_gateway(app)`
binds 127.0.0.1:0 itself and hands uvicorn the socket, so the port is known before the server
runs and no two tests race for one.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from zeph_providers import Registry
from zeph_providers.gateway import GatewaySettings, create_app
from zeph_providers.gateway._context import GatewayContext

HANG_GUARD = 120.0
"""Seconds before a test that should never wait that long gives up (a hang, not a timing check)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/gateway/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.slow)


@dataclass
class Gateway:
    url: str
    registry: Registry
    ctx: GatewayContext
    server: Any
    thread: threading.Thread

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(HANG_GUARD)
        assert not self.thread.is_alive(), "the gateway did not stop"


@contextlib.contextmanager
def running_gateway(
    registry: Registry, settings: GatewaySettings | None = None, *, host: str = "127.0.0.1", **uvicorn_options: Any
) -> Iterator[Gateway]:
    import uvicorn

    app = create_app(registry, settings=settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, lifespan="on", **uvicorn_options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="gateway")
    thread.start()
    gateway = Gateway(
        f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}", registry, app.state.gateway, server, thread
    )
    try:
        for _ in range(int(HANG_GUARD * 20)):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.05)
        assert server.started, "the gateway did not start"
        yield gateway
    finally:
        if thread.is_alive():
            gateway.stop()
        sock.close()


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


MOCK_TOML = """
[[llm.providers]]
name = "m"
type = "mock"
responses = ["Hello from the mock provider."]
chunk_size = 4

[[llm.providers]]
name = "other"
type = "mock"
responses = ["other"]

[[llm.providers]]
name = "scripted"
type = "mock"
responses = []   # tests push their replies (MockReply) before calling
"""


@pytest.fixture
def mock_gateway() -> Iterator[Gateway]:
    """A gateway over two mock providers, no keys (loopback only)."""
    with running_gateway(Registry.from_toml_string(MOCK_TOML)) as gateway:
        yield gateway


@pytest.fixture
def client(mock_gateway: Gateway) -> Any:
    import openai

    with openai.OpenAI(base_url=mock_gateway.v1, api_key="unused", max_retries=0, timeout=HANG_GUARD) as c:
        yield c
