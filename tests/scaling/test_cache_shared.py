"""A response cache shared through Redis: a reply stored by process A is replayed in process B.

A real `redis-server` on a free loopback port (never 6379), two separate Python processes, each with
its own registry whose `[llm.state]` is that server; the two configs script different mock replies,
so B's answer says where it came from. Skips until `zeph_providers.state.redis` exists.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("zeph_providers.state.redis")

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import asyncio, json, sys
from zeph_providers import Message, Registry
from zeph_providers.state.redis import RedisStore

CONFIG = '''
[llm]
telemetry = false

[llm.state]
backend = "redis"
url = "redis://127.0.0.1:%(port)d/0"

[[llm.providers]]
name = "m"
type = "mock"
responses = ["%(reply)s"]

[llm.providers.response_cache]
ttl_secs = 600
'''

async def main() -> None:
    registry = Registry.from_toml_string(CONFIG % {"port": int(sys.argv[1]), "reply": sys.argv[2]})
    try:
        provider = registry.get("m")
        store = provider.response_cache.store
        resp = await provider.chat([Message.user("a question both processes ask")])
        print(json.dumps({"text": resp.text, "cached": resp.cached, "cost": resp.cost,
                          "redis": isinstance(store, RedisStore), "mock_requests": len(provider.requests)}))
    finally:
        await registry.aclose()

asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not on PATH (scripts/install.sh installs it)")
    port = _free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    process = subprocess.Popen(
        [server, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(1200):  # until it accepts connections (never-hang bound: 120 s)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("redis-server did not start")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=60)


def _run(port: int, reply: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(port), reply], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_reply_stored_in_process_a_is_replayed_in_process_b(redis_port: int) -> None:
    first = _run(redis_port, "answered by A")
    assert first == {"text": "answered by A", "cached": False, "cost": None, "redis": True, "mock_requests": 1}
    second = _run(redis_port, "answered by B")
    assert second == {"text": "answered by A", "cached": True, "cost": 0.0, "redis": True, "mock_requests": 0}
