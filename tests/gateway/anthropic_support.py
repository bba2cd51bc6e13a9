"""A real uvicorn server running the gateway on a free loopback port, in a thread, for the Anthropic
tests and the load test (their own event loop, as a deployed gateway has)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from zeph_providers.backends.mock import MockProvider
from zeph_providers.registry import Registry

NEVER_HANGS = 120.0
"""A bound that only stops a hang (never a speed assertion)."""


def mock_registry(*providers: MockProvider) -> Registry:
    """A registry whose providers are these pre-built mocks (their scripts live in code)."""
    registry = Registry.from_dict({"llm": {"telemetry": False, "providers": [{"name": p.name, "type": "mock"} for p in providers]}})
    for provider in providers:
        registry._providers[provider.name] = provider  # pre-built, as tests/unit/test_blocking.py does
    return registry


@contextlib.contextmanager
def running_gateway(registry: Registry, *, settings: Any = None, **uvicorn_options: Any) -> Iterator[str]:
    """Serve `create_app(registry)` on 127.0.0.1; yields the base URL. Shuts the server down (and,
    through the app's lifespan, closes the registry) on exit."""
    import uvicorn

    from zeph_providers.gateway import GatewaySettings, create_app

    app = create_app(registry, settings=settings or GatewaySettings())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "on", "timeout_graceful_shutdown": 30}
    options.update(uvicorn_options)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="gateway-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + NEVER_HANGS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(NEVER_HANGS)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("the gateway server did not shut down")


def open_sockets() -> set[str]:
    """This process's open sockets (`socket:[inode]` links under /proc/self/fd)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:"):
                found.add(target)
    return found
