"""Graceful shutdown: the gateway stops accepting, lets an in-flight stream finish, then closes
the registry; and `zeph-providers serve` itself (binds, SIGTERM, the loopback-only refusal)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.gateway.conftest import HANG_GUARD, running_gateway
from zeph_providers import Registry
from zeph_providers.backends.mock import MockProvider
from zeph_providers.options import ChatOptions
from zeph_providers.types import Message, StreamChunk

ROOT = Path(__file__).resolve().parents[2]


def _gate_after_first_chunk(provider: MockProvider, gate: threading.Event) -> None:
    """Make the provider's streams pause after their first chunk until `gate` is set."""
    original = provider._stream

    async def gated(messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        sent = 0
        async for chunk in original(messages, options):
            if sent == 1:
                assert await asyncio.to_thread(gate.wait, HANG_GUARD)
            sent += 1
            yield chunk

    provider._stream = gated  # type: ignore[method-assign]


def _refused(url: str) -> bool:
    try:
        httpx.get(url + "/healthz", timeout=5)
    except httpx.TransportError:
        return True
    return False


def test_an_in_flight_stream_finishes_before_the_registry_closes() -> None:
    registry = Registry.from_toml_string(
        '[[llm.providers]]\nname = "m"\ntype = "mock"\nresponses = ["one two three four five six"]\nchunk_size = 4\n'
    )
    provider = registry.get("m")
    assert isinstance(provider, MockProvider)
    gate = threading.Event()
    _gate_after_first_chunk(provider, gate)
    with running_gateway(registry) as gateway:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.stream("POST", gateway.v1 + "/chat/completions", json=body, timeout=HANG_GUARD) as response:
            lines = response.iter_lines()
            first = [next(lines) for _ in range(4)]  # role chunk, blank, first content chunk, blank
            assert "one " in first[2]
            gateway.server.should_exit = True  # what uvicorn does on SIGTERM / SIGINT
            for _ in range(int(HANG_GUARD * 10)):
                if _refused(gateway.url):
                    break
                threading.Event().wait(0.1)
            assert _refused(gateway.url)  # no new connections once shutdown began
            assert gateway.thread.is_alive() and gateway.ctx.in_flight == 1 and not provider.closed
            gate.set()
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        text = "one " + "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or "" for line in rest[:-1])
        assert text == "one two three four five six"
        gateway.thread.join(HANG_GUARD)
        assert not gateway.thread.is_alive()
    assert provider.closed  # the registry was closed after the stream finished


def _serve(config: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "zeph_providers", "--config", str(config), "-v", "serve", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_serve_answers_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "zeph.toml"
    config.write_text('[[llm.providers]]\nname = "m"\ntype = "mock"\n', encoding="utf-8")
    process = _serve(config, "--port", "0")
    try:
        assert process.stderr is not None
        url = None
        for line in process.stderr:
            if "serving on " in line:
                url = line.rsplit("serving on ", 1)[1].strip()
                break
        assert url is not None and url.startswith("http://127.0.0.1:")
        reply = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            timeout=HANG_GUARD,
        )
        assert reply.json()["choices"][0]["message"]["content"] == "Hello from the mock provider."
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=HANG_GUARD)
        # uvicorn re-raises the signal once its graceful shutdown is done: the conventional exit
        assert process.returncode in (0, -signal.SIGTERM)
        assert "gateway: shut down (registry closed)" in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(HANG_GUARD)


def test_serve_refuses_a_non_loopback_bind_without_keys(tmp_path: Path) -> None:
    config = tmp_path / "zeph.toml"
    config.write_text('[[llm.providers]]\nname = "m"\ntype = "mock"\n', encoding="utf-8")
    process = _serve(config, "--host", "0.0.0.0", "--port", "0")
    _, err = process.communicate(timeout=HANG_GUARD)
    assert process.returncode == 1
    assert "refusing to serve '0.0.0.0' without keys" in err
    assert "--insecure-no-auth" in err


def test_readyz_reports_shutting_down() -> None:
    registry = Registry.from_toml_string('[[llm.providers]]\nname = "m"\ntype = "mock"\n')
    with running_gateway(registry) as gateway:
        assert httpx.get(gateway.url + "/readyz").status_code == 200
        gateway.ctx.shutting_down = True
        assert httpx.get(gateway.url + "/readyz").status_code == 503
        gateway.ctx.shutting_down = False
