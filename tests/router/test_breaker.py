"""The circuit breaker on its own: opening, cooldown, the half-open probe, the failure-rate window."""

from __future__ import annotations

import json

import pytest

from tests.router.helpers import FakeClock
from zeph_providers.breaker import Admission, BreakerState, CircuitBreaker


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read the state through a call, so type checkers do not pin it between transitions."""
    return breaker.state


def test_opens_after_threshold_consecutive_failures() -> None:
    breaker = CircuitBreaker(3, 10.0, clock=FakeClock())
    for _ in range(2):
        admission = breaker.acquire()
        assert admission is Admission.NORMAL
        breaker.record_failure(admission)
    assert state(breaker) is BreakerState.CLOSED
    breaker.record_failure(Admission.NORMAL)
    assert state(breaker) is BreakerState.OPEN
    assert breaker.acquire() is None


def test_a_success_resets_the_streak() -> None:
    breaker = CircuitBreaker(3, 10.0, window_size=0, clock=FakeClock())
    for _ in range(10):
        breaker.record_failure(Admission.NORMAL)
        breaker.record_failure(Admission.NORMAL)
        breaker.record_success(Admission.NORMAL)
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.snapshot()["consecutive_failures"] == 0


def test_cooldown_then_single_probe_then_close() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    breaker.record_failure(Admission.NORMAL)
    clock.advance(9.9)
    assert breaker.acquire() is None
    assert breaker.retry_in() == pytest.approx(0.1)
    clock.advance(0.1)
    assert state(breaker) is BreakerState.HALF_OPEN
    probe = breaker.acquire()
    assert probe is Admission.PROBE
    assert breaker.acquire() is None  # only one probe at a time
    breaker.record_success(probe)
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.acquire() is Admission.NORMAL


def test_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    breaker.record_failure(Admission.NORMAL)
    clock.advance(10)
    probe = breaker.acquire()
    assert probe is Admission.PROBE
    breaker.record_failure(probe)
    assert state(breaker) is BreakerState.OPEN
    clock.advance(9)
    assert breaker.acquire() is None
    clock.advance(1)
    assert breaker.acquire() is Admission.PROBE
    assert breaker.snapshot()["times_opened"] == 2


def test_released_probe_lets_another_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 0.0, clock=clock)
    breaker.record_failure(Admission.NORMAL)
    probe = breaker.acquire()
    assert probe is Admission.PROBE
    breaker.release(probe)  # e.g. the caller cancelled
    assert breaker.acquire() is Admission.PROBE


def test_failure_rate_window_opens_without_a_streak() -> None:
    breaker = CircuitBreaker(5, 10.0, window_size=10, failure_rate=0.5, clock=FakeClock())
    for _ in range(4):  # alternate: never 5 in a row, but 50% of the last 10 after the next failure
        breaker.record_success(Admission.NORMAL)
        breaker.record_failure(Admission.NORMAL)
    breaker.record_success(Admission.NORMAL)
    assert state(breaker) is BreakerState.CLOSED
    breaker.record_failure(Admission.NORMAL)
    assert state(breaker) is BreakerState.OPEN


def test_late_outcomes_do_not_flip_an_open_breaker() -> None:
    breaker = CircuitBreaker(1, 10.0, clock=FakeClock())
    breaker.record_failure(Admission.NORMAL)
    breaker.record_success(Admission.NORMAL)  # a request admitted before it opened
    assert state(breaker) is BreakerState.OPEN


def test_snapshot_is_json_and_names_opened_at() -> None:
    breaker = CircuitBreaker(1, 10.0, clock=FakeClock(), wall_clock=lambda: 1_700_000_000.0)
    breaker.record_failure(Admission.NORMAL)
    snap = json.loads(json.dumps(breaker.snapshot()))
    assert snap["state"] == "open"
    assert snap["opened_at"] == 1_700_000_000.0
    assert snap["failures"] == 1
    assert snap["retry_in_secs"] == 10.0


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0)
    with pytest.raises(ValueError):
        CircuitBreaker(1, -1)
    with pytest.raises(ValueError):
        CircuitBreaker(1, 1, failure_rate=0)
