"""Helpers for the Anthropic and load tests: registries of pre-built mocks, the core's real uvicorn
server yielding its URL, and this process's open sockets."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from zeph_providers.backends.mock import MockProvider
from zeph_providers.registry import Registry

NEVER_HANGS = 120.0
"""A bound that only stops a hang (never a speed assertion)."""


def mock_registry(*providers: MockProvider) -> Registry:
    """A registry whose providers are these pre-built mocks (their scripts live in code)."""
    registry = Registry.from_dict(
        {"llm": {"telemetry": False, "providers": [{"name": p.name, "type": "mock"} for p in providers]}}
    )
    for provider in providers:
        registry._providers[provider.name] = provider  # pre-built, as tests/unit/test_blocking.py does
    return registry


@contextlib.contextmanager
def running_gateway(registry: Registry, *, settings: Any = None, **uvicorn_options: Any) -> Iterator[str]:
    """The core's `running_gateway` (tests/gateway/conftest.py), yielding the base URL; the app's
    lifespan closes the registry when the server stops."""
    from tests.gateway.conftest import running_gateway as serve

    with serve(registry, settings, **uvicorn_options) as gateway:
        yield gateway.url


def open_sockets() -> set[str]:
    """This process's open sockets (`socket:[inode]` links under /proc/self/fd)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:"):
                found.add(target)
    return found
