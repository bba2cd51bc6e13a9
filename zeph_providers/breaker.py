"""A per-provider circuit breaker: stop sending requests to a member that keeps failing.

States: `closed` (requests flow), `open` (requests are refused until `cooldown_secs` have passed)
and `half_open` (exactly one probe request is let through; its success closes the breaker, its
failure opens it again for another cooldown). The breaker opens after `failure_threshold`
consecutive failures, or when the failure rate over the last `window_size` outcomes reaches
`failure_rate`. Time comes from an injectable monotonic clock so tests never sleep.

Thread-safe: every transition happens under one lock, so a breaker may be shared by event loops
running in different threads.

The router talks to breakers through the async pair `admit()` / `report(admission, ok)`. On the
in-process breaker they are the sync `acquire()` / `record_*()` / `release()`; a
`SharedCircuitBreaker` (on a shared `StateStore`, e.g. Redis) keeps the open / half-open state in
the store, so failures seen by one replica open the breaker for all of them and exactly one
replica sends the half-open probe (the store's SET NX PX). What stays per process: the failure-rate
window (each replica judges the rate of what it saw; when it trips, it opens the shared breaker)
and the totals in `snapshot()`.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zeph_providers.state import StateStore

__all__ = ["Admission", "BreakerState", "CircuitBreaker", "SharedCircuitBreaker"]

Clock = Callable[[], float]


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Admission(enum.Enum):
    """Why a request was let through: a normal call, or the single half-open probe."""

    NORMAL = "normal"
    PROBE = "probe"


class CircuitBreaker:
    """Counts one member's outcomes and decides whether the next request may go to it."""

    def __init__(
        self,
        failure_threshold: int = 3,
        cooldown_secs: float = 30.0,
        *,
        window_size: int = 50,
        failure_rate: float = 0.5,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown_secs < 0:
            raise ValueError("cooldown_secs must not be negative")
        if window_size < 0 or not 0.0 < failure_rate <= 1.0:
            raise ValueError("window_size must be >= 0 and failure_rate in (0, 1]")
        self.failure_threshold = failure_threshold
        self.cooldown_secs = cooldown_secs
        self.window_size = window_size
        self.failure_rate = failure_rate
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._window: deque[bool] = deque(maxlen=window_size)
        self._opened_at: float | None = None
        self._opened_at_wall: float | None = None
        self._probe_in_flight = False
        self._successes = 0
        self._failures = 0
        self._times_opened = 0

    # ----- decisions ----------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The state as of now (an open breaker whose cooldown has passed reads `half_open`)."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._cooldown_over():
                return BreakerState.HALF_OPEN
            return self._state

    def acquire(self) -> Admission | None:
        """Ask to send one request: an `Admission` to report back on, or None (refused, skip it)."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return Admission.NORMAL
            if self._state is BreakerState.OPEN:
                if not self._cooldown_over():
                    return None
                self._state = BreakerState.HALF_OPEN
            if self._probe_in_flight:
                return None
            self._probe_in_flight = True
            return Admission.PROBE

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        with self._lock:
            if self._state is not BreakerState.OPEN or self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self.cooldown_secs - self._clock())

    async def admit(self) -> Admission | None:
        """`acquire()`, awaitable (what the router calls: a shared breaker asks its store)."""
        return self.acquire()

    async def report(self, admission: Admission, ok: bool | None) -> None:
        """The admitted request's outcome: True succeeded, False failed, None no verdict (`release`)."""
        if ok is None:
            self.release(admission)
        elif ok:
            self.record_success(admission)
        else:
            self.record_failure(admission)

    async def areset(self) -> None:
        """`reset()`, awaitable (a shared breaker also closes the shared state)."""
        self.reset()

    # ----- outcomes -----------------------------------------------------------------

    def record_success(self, admission: Admission) -> None:
        """The admitted request succeeded: a probe closes the breaker."""
        with self._lock:
            self._successes += 1
            if admission is Admission.PROBE:
                self._probe_in_flight = False
                self._close()
            elif self._state is BreakerState.CLOSED:
                self._consecutive_failures = 0
                self._window.append(True)

    def record_failure(self, admission: Admission) -> None:
        """The admitted request failed: a probe reopens the breaker; enough failures open it."""
        with self._lock:
            self._failures += 1
            if admission is Admission.PROBE:
                self._probe_in_flight = False
                self._open()
                return
            if self._state is not BreakerState.CLOSED:
                return  # a request admitted before the breaker opened; it changes nothing now
            self._consecutive_failures += 1
            self._window.append(False)
            if self._consecutive_failures >= self.failure_threshold or self._rate_tripped():
                self._open()

    def release(self, admission: Admission) -> None:
        """The admitted request ended without a verdict (cancelled, closed early, not the member's fault)."""
        with self._lock:
            if admission is Admission.PROBE:
                self._probe_in_flight = False

    def reset(self) -> None:
        """Close the breaker and forget the failure streak (the totals are kept)."""
        with self._lock:
            self._probe_in_flight = False
            self._close()

    # ----- introspection ------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A JSON-serialisable view: state, failure streak, totals, when it opened."""
        with self._lock:
            state = self._state
            if state is BreakerState.OPEN and self._cooldown_over():
                state = BreakerState.HALF_OPEN
            retry_in = 0.0
            if self._state is BreakerState.OPEN and self._opened_at is not None:
                retry_in = max(0.0, self._opened_at + self.cooldown_secs - self._clock())
            return {
                "state": state.value,
                "consecutive_failures": self._consecutive_failures,
                "successes": self._successes,
                "failures": self._failures,
                "times_opened": self._times_opened,
                "opened_at": self._opened_at_wall,
                "retry_in_secs": round(retry_in, 3),
            }

    # ----- internals (lock held) ----------------------------------------------------

    def _cooldown_over(self) -> bool:
        return self._opened_at is None or self._clock() - self._opened_at >= self.cooldown_secs

    def _rate_tripped(self) -> bool:
        if not self.window_size or len(self._window) < self.window_size:
            return False
        failed = sum(1 for ok in self._window if not ok)
        return failed / len(self._window) >= self.failure_rate

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._opened_at_wall = self._wall_clock()
        self._times_opened += 1

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._window.clear()
        self._opened_at = None
        self._opened_at_wall = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} state={self.state.value} consecutive_failures={self._consecutive_failures}>"


class SharedCircuitBreaker(CircuitBreaker):
    """A breaker whose open / half-open state lives in a `StateStore` under `key`, shared by every
    replica using the store. `probe_ttl_secs` bounds how long a probe holds the half-open slot
    (a replica that dies mid-probe frees it then). The sync API answers from this process's last
    view of the shared state (for `status()`); the router uses `admit()` / `report()`."""

    def __init__(
        self,
        store: StateStore,
        key: str,
        failure_threshold: int = 3,
        cooldown_secs: float = 30.0,
        *,
        probe_ttl_secs: float = 300.0,
        window_size: int = 50,
        failure_rate: float = 0.5,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        super().__init__(
            failure_threshold,
            cooldown_secs,
            window_size=window_size,
            failure_rate=failure_rate,
            clock=clock,
            wall_clock=wall_clock,
        )
        self.store = store
        self.key = key
        self.probe_ttl_secs = max(probe_ttl_secs, 0.001)
        self._shared_failures = 0
        self._pending: set[asyncio.Task[None]] = set()

    async def admit(self) -> Admission | None:
        answer = await self.store.breaker_admit(self.key, self.probe_ttl_secs)
        with self._lock:
            self._shared_failures = answer.failures
            self._consecutive_failures = answer.failures
            if answer.verdict == "normal":
                if self._state is not BreakerState.CLOSED:
                    self._close()
                return Admission.NORMAL
            if answer.verdict == "probe":
                self._state = BreakerState.HALF_OPEN
                return Admission.PROBE
            self._mirror_open(answer.retry_in)
            return None

    async def report(self, admission: Admission, ok: bool | None) -> None:
        if ok is None:
            if admission is Admission.PROBE:
                await self.store.breaker_release(self.key)
            return
        if ok:
            with self._lock:
                self._successes += 1
                if admission is Admission.NORMAL:
                    self._window.append(True)
                streak = self._shared_failures
            if admission is Admission.PROBE:
                await self.store.breaker_close(self.key)
                with self._lock:
                    self._close()
            elif streak:
                await self.store.breaker_success(self.key)
                with self._lock:
                    self._shared_failures = self._consecutive_failures = 0
            return
        with self._lock:
            self._failures += 1
            if admission is Admission.NORMAL:
                self._window.append(False)
            rate_tripped = admission is Admission.NORMAL and self._rate_tripped()
        if admission is Admission.PROBE:
            await self.store.breaker_open(self.key, self.cooldown_secs)
            opened = True
        else:
            opened = await self.store.breaker_failure(self.key, self.failure_threshold, self.cooldown_secs)
            if not opened and rate_tripped:
                await self.store.breaker_open(self.key, self.cooldown_secs)
                opened = True
        if opened:
            with self._lock:
                self._open()
                self._window.clear()

    async def areset(self) -> None:
        await self.store.breaker_close(self.key)
        super().reset()

    def reset(self) -> None:
        """Close this view now and the shared breaker in the background (inside an event loop;
        outside one, use `areset()`)."""
        super().reset()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.store.breaker_close(self.key))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _mirror_open(self, retry_in: float) -> None:
        """Another replica's open breaker, seen here (lock held): open with `retry_in` left."""
        if self._state is not BreakerState.OPEN:
            self._times_opened += 1
            self._opened_at_wall = self._wall_clock()
        self._state = BreakerState.OPEN
        self._opened_at = self._clock() - max(0.0, self.cooldown_secs - retry_in)
