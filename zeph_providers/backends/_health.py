"""Active health checks for a router's members (`health_check_interval_secs`, issue 14).

Decisions:
- One background task per router, started lazily by the first call in the running event loop
  (a router built outside any loop, or used through the blocking twin, gets it where it runs) and
  stopped by the router's `aclose()`. A task left behind in a closed loop is replaced by the next
  call's loop.
- Each round probes every built member at once, each bounded by `health_check_timeout_secs`; then
  the task sleeps the interval. The first round runs as soon as the task starts.
- The probe is the cheapest request the member has: `list_models(refresh=True)` (OpenAI and
  compatible servers: `GET /v1/models`; Ollama: `/api/tags`; Claude: `/v1/models`; a nested router:
  its members' lists). A member whose backend lists no models (`UnsupportedCapabilityError`) gets a
  1-token chat instead, from then on (it costs a token, and a response cache may answer it).
- A probe feeds the member's breaker through its async methods (so a breaker shared across
  replicas hears it too): a failure that says the member is down (a timeout, a refused or broken
  connection, a 5xx: `ProviderTimeoutError`, `ProviderUnavailableError`, `InferenceError`) is
  recorded like a failed call (it counts towards `failure_threshold` while closed, and reopens a
  half-open breaker); any other failure (a 401/404 on the model list of a server whose chat works)
  only moves the member behind the others; a success while the breaker is open or half-open closes
  it so a member that came back rejoins at once; a success while closed changes nothing (probe
  successes must not mask real calls' failures).
- A member whose last probe failed is moved behind the others (`down()`) at once, before its breaker
  opens; it is still tried when every other member has failed (the probe may be wrong: a server
  whose model list fails can still chat).
- A probe never raises into a caller; its outcome is logged at DEBUG with the error's type only (no
  message, URL or key) and shown in `router.status()` as `last_probe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from zeph_providers.breaker import BreakerState
from zeph_providers.errors import InferenceError, ProviderUnavailableError, UnsupportedCapabilityError
from zeph_providers.types import Message

if TYPE_CHECKING:
    from zeph_providers.breaker import CircuitBreaker
    from zeph_providers.protocol import LlmProvider

__all__ = ["HealthChecker", "ProbeResult"]

log = logging.getLogger("zeph_providers.router")

ProbeKind = Literal["models", "chat"]
_PING = [Message.user("ping")]


@dataclass(frozen=True)
class ProbeResult:
    """One probe's outcome, as `status()` shows it."""

    ok: bool
    kind: ProbeKind
    at: float
    """Wall-clock time (Unix seconds) the probe finished."""
    latency_ms: float
    error: str | None = None
    """The error's type name when it failed (never its message: it may quote a URL)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "kind": self.kind,
            "at": self.at,
            "latency_ms": round(self.latency_ms, 3),
            "error": self.error,
        }


async def feed(breaker: CircuitBreaker, ok: bool) -> None:
    """A probe's outcome into the member's breaker (see the module doc). Through the breaker's
    async API, so a breaker shared across replicas (`SharedCircuitBreaker`) hears it too."""
    if ok:
        if breaker.state is not BreakerState.CLOSED:
            await breaker.areset()
        return
    admission = await breaker.admit()
    if admission is not None:  # None: open, or a half-open probe already in flight
        await breaker.report(admission, False)


class HealthChecker:
    """Probes a router's members on an interval and feeds their breakers."""

    def __init__(
        self,
        router: str,
        interval: float,
        timeout: float,
        members: Callable[[], Mapping[str, LlmProvider]],
        breakers: Mapping[str, CircuitBreaker],
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("the health check interval and timeout must be positive")
        self.router = router
        self.interval = interval
        self.timeout = timeout
        self._members = members
        self._breakers = breakers
        self._wall_clock = wall_clock
        self._kinds: dict[str, ProbeKind] = {}
        self.results: dict[str, ProbeResult] = {}
        self.rounds = 0
        """Completed probe rounds (tests wait on it instead of on time)."""
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ----- state --------------------------------------------------------------------

    def down(self) -> set[str]:
        """The members whose last probe failed."""
        return {name for name, result in list(self.results.items()) if not result.ok}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: result.as_dict() for name, result in list(self.results.items())}

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # ----- the task -------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the probe task in the running loop unless one runs already (in a live loop)."""
        loop = asyncio.get_running_loop()
        if self.running and self._loop is not None and (self._loop is loop or not self._loop.is_closed()):
            return
        self._loop = loop
        self._task = loop.create_task(self._run(), name=f"zeph-providers health checks: {self.router}")

    async def aclose(self) -> None:
        """Stop the probe task (from any loop)."""
        task, loop = self._task, self._loop
        self._task = self._loop = None
        if task is None or task.done():
            return
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if loop is current:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    async def _run(self) -> None:
        while True:
            try:
                await self.probe_all()
            except Exception as exc:  # never let the task die: the next round tries again
                log.debug("router %r: health round failed (%s)", self.router, type(exc).__name__)
            await asyncio.sleep(self.interval)

    async def probe_all(self) -> None:
        """One round: every built member probed at once (never raises but for cancellation)."""
        members = dict(self._members())
        await asyncio.gather(*(self.probe(name, member) for name, member in members.items()))
        self.rounds += 1

    async def probe(self, name: str, member: LlmProvider) -> ProbeResult:
        """Probe one member, record the result and feed its breaker."""
        kind: ProbeKind = self._kinds.get(name, "models")
        started = time.perf_counter()
        error: str | None = None
        down = False
        try:
            async with asyncio.timeout(self.timeout):
                list_models = getattr(member, "list_models", None)  # not part of the protocol
                if kind == "models" and list_models is None:
                    kind = self._kinds[name] = "chat"
                if kind == "models" and list_models is not None:
                    try:
                        await list_models(refresh=True)
                    except UnsupportedCapabilityError:
                        kind = self._kinds[name] = "chat"
                if kind == "chat":
                    await member.chat(_PING, max_tokens=1, response_cache=False)
        except TimeoutError:  # ProviderTimeoutError included
            error = "ProviderTimeoutError"
            down = True
        except Exception as exc:  # LlmError, or a plugin member breaking the protocol
            error = type(exc).__name__
            down = isinstance(exc, ProviderUnavailableError | InferenceError)
        latency_ms = (time.perf_counter() - started) * 1000.0
        result = ProbeResult(error is None, kind, self._wall_clock(), latency_ms, error)
        self.results[name] = result
        breaker = self._breakers.get(name)
        if breaker is not None and (result.ok or down):
            await feed(breaker, result.ok)
        if error is None:
            log.debug("router %r: health probe of %r (%s) ok in %.1f ms", self.router, name, kind, latency_ms)
        else:
            log.debug("router %r: health probe of %r (%s) failed: %s", self.router, name, kind, error)
        return result
