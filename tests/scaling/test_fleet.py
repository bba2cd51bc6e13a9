"""A real fleet: three llama.cpp server processes (xllamacpp, SmolLM2) behind one router of
`compatible` members (least_busy, health checks every 0.5 s). One replica is SIGKILLed mid-load and
started again on the same port.

What is asserted is what the router guarantees, never how fast: every call ends in an answer or a
typed `LlmError` (never a hang, never a raw exception); once a probe has seen the replica dead it
is not even attempted; its breaker opens from the failed probes; after it returns, a passing probe
closes its breaker (its cooldown is far longer than the test) and a later call is answered by it.
Bounds are never-hang bounds only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from zeph_providers import ChatResponse, LlmError, Message, Registry
from zeph_providers.backends.router import RouterProvider

pytestmark = pytest.mark.slow

NEVER_HANG_SECS = 300.0
START_SECS = 180.0
CALLERS = 12
CALLS_EACH = 4
PROBE_EVERY = 0.5
THRESHOLD = 3
PROMPT = [Message.user("Say hello.")]
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    """One llama.cpp server process (`tests/servers/llamacpp_process.py`) on a fixed port."""

    def __init__(self, name: str, model: Path, port: int, log: Path) -> None:
        self.name, self.model, self.port, self.log = name, model, port, log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        command = [sys.executable, "-m", "tests.servers.llamacpp_process", "--model", str(self.model)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log
            )

    def wait_ready(self) -> None:
        """Until `/health` answers 200; respawns (same port) if the process died starting up."""
        bound = time.monotonic() + START_SECS
        while time.monotonic() < bound:
            assert self.process is not None
            if self.process.poll() is not None:  # e.g. the port not yet free after a kill
                time.sleep(0.5)
                self.spawn()
                continue
            try:
                if httpx.get(f"{self.base_url}/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-2000:]
        pytest.fail(f"replica {self.name} did not start on port {self.port}:\n{tail}")

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture
def fleet(smollm2_gguf: Path, tmp_path: Path) -> Iterator[dict[str, Replica]]:
    replicas = {n: Replica(n, smollm2_gguf, free_port(), tmp_path / f"{n}.log") for n in ("r0", "r1", "r2")}
    try:
        for replica in replicas.values():
            replica.spawn()
        for replica in replicas.values():
            replica.wait_ready()
        yield replicas
    finally:
        for replica in replicas.values():
            replica.stop()


def fleet_config(replicas: dict[str, Replica]) -> dict[str, Any]:
    members = [
        {
            "name": name,
            "type": "compatible",
            "model": "smollm2",
            "base_url": f"{replica.base_url}/v1",
            "max_retries": 0,  # the router's fallback is the retry
            "timeout_secs": 120,
            "connect_timeout_secs": 5,
        }
        for name, replica in replicas.items()
    ]
    router = {
        "name": "fleet",
        "type": "router",
        "providers": list(replicas),
        "strategy": "least_busy",
        "timeout_secs": 240,
        "health_check_interval_secs": PROBE_EVERY,
        "health_check_timeout_secs": 10,
        "failure_threshold": THRESHOLD,
        "cooldown_secs": 3600,  # far longer than the test: only a passing probe can close it
    }
    return {"llm": {"providers": [*members, router]}}


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(NEVER_HANG_SECS):
        while not condition():  # noqa: ASYNC110 - the state belongs to the router under test
            await asyncio.sleep(0.05)


Outcome = tuple[bool, ChatResponse | BaseException]
"""(whether the victim was already marked down when the call started, what the call returned)."""


async def call(router: RouterProvider, victim: str, outcomes: list[Outcome]) -> None:
    assert router.health is not None
    after_down = victim in router.health.down()
    try:
        outcomes.append((after_down, await router.chat(PROMPT, max_tokens=8, temperature=0.0)))
    except Exception as exc:  # recorded, judged below: only LlmError is allowed
        outcomes.append((after_down, exc))


async def test_a_replica_killed_mid_load_is_skipped_and_rejoins(fleet: dict[str, Replica]) -> None:
    async with Registry.from_dict(fleet_config(fleet)) as registry:
        router = registry.get("fleet")
        assert isinstance(router, RouterProvider)
        health = router.health
        assert health is not None
        victim = "r1"

        # Idle: ties rotate, so three calls in a row reach all three replicas.
        async with asyncio.timeout(NEVER_HANG_SECS):
            warm = [await router.chat(PROMPT, max_tokens=8) for _ in range(3)]
        assert {resp.provider for resp in warm} == set(fleet)
        await until(lambda: health.rounds >= 1)
        assert not health.down()

        # Under load: 12 callers, 4 calls each; the victim is killed while it serves some of them.
        outcomes: list[Outcome] = []
        rounds_at_kill = 0

        async def caller() -> None:
            for _ in range(CALLS_EACH):
                await call(router, victim, outcomes)

        async def killer() -> None:
            nonlocal rounds_at_kill
            # Mid-load: a quarter of the calls done and the victim serving some right now.
            await until(lambda: len(outcomes) >= CALLERS and router.status()[victim]["in_flight"] > 0)
            fleet[victim].kill()
            rounds_at_kill = health.rounds

        async with asyncio.timeout(NEVER_HANG_SECS):
            await asyncio.gather(killer(), *(caller() for _ in range(CALLERS)))
        # The probe marks it down; the failing rounds (and failed calls) open its breaker.
        await until(lambda: victim in health.down() and health.rounds >= rounds_at_kill + THRESHOLD + 1)
        status = router.status()[victim]
        assert status["last_probe"]["ok"] is False
        assert status["state"] in ("open", "half_open")

        # Once the probe has seen it dead, the router does not even try it.
        async with asyncio.timeout(NEVER_HANG_SECS):
            await asyncio.gather(*(call(router, victim, outcomes) for _ in range(CALLERS)))

        # Back on the same port: a passing probe closes its breaker and it answers again.
        await asyncio.to_thread(fleet[victim].spawn)
        await asyncio.to_thread(fleet[victim].wait_ready)
        await until(lambda: victim not in health.down())
        assert router.status()[victim]["state"] == "closed"
        async with asyncio.timeout(NEVER_HANG_SECS):
            later = [await router.chat(PROMPT, max_tokens=8) for _ in range(3)]
        assert victim in [resp.provider for resp in later]

    assert not health.running  # the registry's aclose stopped the probes

    raw = [o for _, o in outcomes if not isinstance(o, ChatResponse | LlmError)]
    assert raw == [], f"untyped exceptions reached callers: {raw!r}"
    assert len(outcomes) == CALLERS * CALLS_EACH + CALLERS  # every call ended
    answers = [o for _, o in outcomes if isinstance(o, ChatResponse)]
    assert answers and all(o.provider in fleet for o in answers)
    skipped = [o for down, o in outcomes if down]
    assert len(skipped) >= CALLERS
    for outcome in skipped:
        tried = outcome.attempts if isinstance(outcome, ChatResponse) else getattr(outcome, "attempts", [])
        assert victim not in [attempt.provider for attempt in tried]
    fell_back = sum(1 for o in answers if victim in [a.provider for a in o.attempts] and o.provider != victim)
    by_member = Counter(o.provider for o in answers)
    errors = Counter(type(o).__name__ for _, o in outcomes if isinstance(o, LlmError))
    print(
        f"\nfleet: answers per replica {dict(by_member)}, typed errors {dict(errors)}, "
        f"answered after falling back from the killed replica {fell_back}, probe rounds {health.rounds}"
    )
