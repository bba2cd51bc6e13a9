"""Fault injection over real loopback HTTP: every scenario x every remote backend, then the router.

The fault server (tests/servers/fault_server.py) picks each request's fault from the model name
(`"fault:<plan>"`), so one provider entry per scenario exercises it. For every call the suite checks
the outcome (typed error class, or success), how many attempts the server saw, and that the call
ended within its deadline (plus `SLACK`: a "nothing hangs" bound, not a performance assertion).
Providers: `timeout_secs = 1.5`, `max_retries = 2` (so at most 3 attempts), backoff base 0.05 s.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from tests.reliability.helpers import (
    REMOTE_BACKENDS,
    SLACK,
    assert_typed,
    fast_retries,
    new_id,
    provider_entry,
    registry_of,
    timed_chat,
    timed_embed,
)
from tests.servers.fault_server import FaultServer, echo_text
from zeph_providers import Registry
from zeph_providers.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    BadResponseError,
    InvalidRequestError,
    LlmError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from zeph_providers.types import ContentChunk

TIMEOUT = 1.5
HANG_TIMEOUT = 1.0
"""The deadline of scenarios that always run into it (hang, forever), kept short so the suite is."""
MAX_RETRIES = 2
ALL_ATTEMPTS = MAX_RETRIES + 1


@dataclass(frozen=True)
class Scenario:
    plan: str
    error: type[LlmError] | None
    """The exact error class expected; None: the call succeeds."""
    attempts: int
    """Requests the server sees for the call."""
    timeout: float = TIMEOUT

    def __str__(self) -> str:
        return self.plan


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("ok", None, 1),
    Scenario("500,ok", None, 2),  # a transient failure, then success on the retry
    Scenario("429:retry-after=0.3", RateLimitError, ALL_ATTEMPTS),  # also: attempt gaps >= 0.3 s
    Scenario("500", ProviderUnavailableError, ALL_ATTEMPTS),
    Scenario("502", ProviderUnavailableError, ALL_ATTEMPTS),
    Scenario("503", ProviderUnavailableError, ALL_ATTEMPTS),
    Scenario("400", InvalidRequestError, 1),  # 4xx: never retried
    Scenario("401", AuthenticationError, 1),
    Scenario("hang", ProviderTimeoutError, 1, HANG_TIMEOUT),  # the deadline is spent: no time to retry
    Scenario("close", ProviderUnavailableError, ALL_ATTEMPTS),  # no complete event arrived: retried
    Scenario("reset0", ProviderUnavailableError, ALL_ATTEMPTS),  # RST before any byte: retried
    # chat() makes one non-streamed request: a RST halfway through its body comes before any chunk
    # reached the caller, so it is retried (test_broken_stream_... covers the streamed case: never retried).
    Scenario("reset", ProviderUnavailableError, ALL_ATTEMPTS),
    Scenario("badjson", BadResponseError, ALL_ATTEMPTS),
    Scenario("bigline:mb=20", BadResponseError, ALL_ATTEMPTS),  # refused at the line limit (16 MiB; Ollama 8)
    Scenario("nested:depth=100000", BadResponseError, ALL_ATTEMPTS),
    Scenario("forever:ms=5", ProviderTimeoutError, 1, HANG_TIMEOUT),
)


# ----- one backend, one scenario -------------------------------------------------------------


@pytest.mark.parametrize("backend", REMOTE_BACKENDS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
async def test_scenario(fault_server: FaultServer, scenario: Scenario, backend: str) -> None:
    registry = registry_of(
        provider_entry(backend, fault_server.url, f"fault:{scenario.plan}", timeout_secs=scenario.timeout)
    )
    request_id = new_id(backend)
    try:
        outcome = await timed_chat(fast_retries(registry.get("p")), request_id)
    finally:
        await registry.aclose()

    if scenario.error is None:
        assert outcome.error is None, repr(outcome.error)
        assert outcome.response is not None
        assert outcome.response.text == echo_text(request_id)
    else:
        error = assert_typed(outcome.error)
        assert type(error) is scenario.error, repr(error)
        assert error.provider == "p"
    assert fault_server.attempts(request_id) == scenario.attempts
    assert outcome.elapsed <= scenario.timeout + SLACK, f"took {outcome.elapsed:.2f}s"
    if "retry-after" in scenario.plan:  # honoured: the backoff base is 0.05 s, only the header explains the gaps
        assert isinstance(outcome.error, RateLimitError)
        assert outcome.error.retry_after == pytest.approx(0.3)
        times = fault_server.attempt_times(request_id)
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert all(gap >= 0.29 for gap in gaps), gaps


@pytest.mark.parametrize("backend", REMOTE_BACKENDS)
async def test_broken_stream_delivers_its_first_chunk_then_a_typed_error(
    fault_server: FaultServer, backend: str
) -> None:
    registry = registry_of(provider_entry(backend, fault_server.url, "fault:reset", timeout_secs=TIMEOUT))
    request_id = new_id(backend)
    try:
        outcome = await timed_chat(fast_retries(registry.get("p")), request_id, stream=True)
    finally:
        await registry.aclose()
    assert isinstance(assert_typed(outcome.error), ProviderUnavailableError)
    assert [c.text for c in outcome.chunks if isinstance(c, ContentChunk)] == ["echo:"]
    assert fault_server.attempts(request_id) == 1  # what the caller has seen is never repeated


EMBED_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("ok", None, 1),
    Scenario("503,ok", None, 2),
    Scenario("429:retry-after=0", RateLimitError, ALL_ATTEMPTS),
    Scenario("500", ProviderUnavailableError, ALL_ATTEMPTS),
    Scenario("400", InvalidRequestError, 1),
    Scenario("hang", ProviderTimeoutError, 1, HANG_TIMEOUT),
    Scenario("close", ProviderUnavailableError, ALL_ATTEMPTS),
    Scenario("reset0", ProviderUnavailableError, ALL_ATTEMPTS),
    Scenario("badjson", BadResponseError, ALL_ATTEMPTS),
    Scenario("nested:depth=100000", BadResponseError, ALL_ATTEMPTS),
)


@pytest.mark.parametrize("backend", ["openai", "compatible", "ollama"])
@pytest.mark.parametrize("scenario", EMBED_SCENARIOS, ids=str)
async def test_embed_scenario(fault_server: FaultServer, scenario: Scenario, backend: str) -> None:
    registry = registry_of(
        provider_entry(backend, fault_server.url, f"fault:{scenario.plan}", timeout_secs=scenario.timeout)
    )
    request_id = new_id(backend)
    try:
        vectors, error, elapsed = await timed_embed(fast_retries(registry.get("p")), [request_id, "second"])
    finally:
        await registry.aclose()
    if scenario.error is None:
        assert error is None, repr(error)
        assert vectors is not None and len(vectors) == 2
    else:
        typed = assert_typed(error)
        assert type(typed) is scenario.error, repr(typed)
    assert fault_server.attempts(request_id, kind="embed") == scenario.attempts
    assert elapsed <= scenario.timeout + SLACK, f"took {elapsed:.2f}s"


# ----- the router: one faulty member, one healthy --------------------------------------------

ROUTER_TIMEOUT = 2.0
MEMBER_TIMEOUT = 0.6
MEMBER_RETRIES = 1
GOOD_MODEL = "healthy-model"


@dataclass(frozen=True)
class RouterScenario:
    plan: str
    falls_back: bool
    error: type[LlmError] | None
    """When it does not fall back: the error the caller gets."""
    bad_attempts: int

    def __str__(self) -> str:
        return self.plan


ROUTER_SCENARIOS: tuple[RouterScenario, ...] = (
    RouterScenario("429:retry-after=0", True, None, MEMBER_RETRIES + 1),
    RouterScenario("500", True, None, MEMBER_RETRIES + 1),
    RouterScenario("503", True, None, MEMBER_RETRIES + 1),
    RouterScenario("hang", True, None, 1),  # the member's own 0.6 s deadline, not the router's 2 s
    RouterScenario("close", True, None, MEMBER_RETRIES + 1),
    RouterScenario("reset0", True, None, MEMBER_RETRIES + 1),
    RouterScenario("badjson", True, None, MEMBER_RETRIES + 1),
    RouterScenario("nested", True, None, MEMBER_RETRIES + 1),
    # chat() is non-streamed on the wire: nothing reached the caller when these fail, so the router
    # falls back (test_router_does_not_fall_back_after_the_first_chunk covers streams: no fallback).
    RouterScenario("reset", True, None, MEMBER_RETRIES + 1),
    RouterScenario("forever", True, None, 1),  # the member's own deadline, then the next member
    RouterScenario("400", False, InvalidRequestError, 1),  # the request's fault: raised at once
)


def _router_registry(backend: str, url: str, bad_plan: str, good_model: str = GOOD_MODEL) -> Registry:
    bad = provider_entry(
        backend, url, f"fault:{bad_plan}", name="bad", timeout_secs=MEMBER_TIMEOUT, max_retries=MEMBER_RETRIES
    )
    good = provider_entry(
        backend, url, good_model, name="good", timeout_secs=MEMBER_TIMEOUT, max_retries=MEMBER_RETRIES
    )
    router = {"name": "r", "type": "router", "providers": ["bad", "good"], "timeout_secs": ROUTER_TIMEOUT}
    registry = registry_of(bad, good, router)
    fast_retries(registry.get("bad"))
    fast_retries(registry.get("good"))
    return registry


@pytest.mark.parametrize("backend", REMOTE_BACKENDS)
@pytest.mark.parametrize("scenario", ROUTER_SCENARIOS, ids=str)
async def test_router_scenario(fault_server: FaultServer, scenario: RouterScenario, backend: str) -> None:
    registry = _router_registry(backend, fault_server.url, scenario.plan)
    request_id = new_id(f"router-{backend}")
    try:
        outcome = await timed_chat(registry.get("r"), request_id)
    finally:
        await registry.aclose()
    bad_seen = fault_server.attempts(request_id, model=f"fault:{scenario.plan}")
    good_seen = fault_server.attempts(request_id, model=GOOD_MODEL)
    if scenario.falls_back:
        assert outcome.error is None, repr(outcome.error)
        assert outcome.response is not None
        assert outcome.response.provider == "good"
        assert outcome.response.text == echo_text(request_id)
        assert good_seen == 1
    else:
        error = assert_typed(outcome.error)
        assert type(error) is scenario.error, repr(error)
        assert error.provider == "bad"
        assert good_seen == 0
    assert bad_seen == scenario.bad_attempts
    assert outcome.elapsed <= ROUTER_TIMEOUT + SLACK, f"took {outcome.elapsed:.2f}s"


@pytest.mark.parametrize("backend", REMOTE_BACKENDS)
@pytest.mark.parametrize(
    ("plan", "error"),
    [("reset", ProviderUnavailableError), ("forever", ProviderTimeoutError)],
    ids=["reset", "forever"],
)
async def test_router_does_not_fall_back_after_the_first_chunk(
    fault_server: FaultServer, backend: str, plan: str, error: type[LlmError]
) -> None:
    registry = _router_registry(backend, fault_server.url, plan)
    request_id = new_id(f"router-{backend}")
    try:
        outcome = await timed_chat(registry.get("r"), request_id, stream=True)
    finally:
        await registry.aclose()
    typed = assert_typed(outcome.error)
    assert type(typed) is error, repr(typed)
    assert typed.provider == "bad"
    texts = [c.text for c in outcome.chunks if isinstance(c, ContentChunk)]
    assert texts[:1] == (["echo:"] if plan == "reset" else ["tick "])
    assert fault_server.attempts(request_id, model=f"fault:{plan}") == 1
    assert fault_server.attempts(request_id, model=GOOD_MODEL) == 0
    assert outcome.elapsed <= ROUTER_TIMEOUT + SLACK, f"took {outcome.elapsed:.2f}s"


@pytest.mark.parametrize("backend", REMOTE_BACKENDS)
@pytest.mark.parametrize("plans", [("500", "503"), ("badjson", "close"), ("hang", "hang")], ids="+".join)
async def test_router_all_members_fail(fault_server: FaultServer, backend: str, plans: tuple[str, str]) -> None:
    registry = _router_registry(backend, fault_server.url, plans[0], good_model=f"fault:{plans[1]}")
    request_id = new_id(f"router-{backend}")
    try:
        outcome = await timed_chat(registry.get("r"), request_id)
    finally:
        await registry.aclose()
    error = assert_typed(outcome.error)
    assert isinstance(error, AllProvidersFailedError), repr(error)
    assert error.provider == "r"
    assert [e.provider for e in error.errors] == ["bad", "good"]
    assert all(isinstance(e, LlmError) for e in error.errors)
    assert fault_server.attempts(request_id, model=f"fault:{plans[0]}") >= 1
    assert fault_server.attempts(request_id, model=f"fault:{plans[1]}") >= 1
    assert outcome.elapsed <= ROUTER_TIMEOUT + SLACK, f"took {outcome.elapsed:.2f}s"


@pytest.mark.parametrize("backend", ["openai", "ollama"])
async def test_router_deadline_covers_members_slower_than_it(fault_server: FaultServer, backend: str) -> None:
    """Members whose own deadline is longer than the router's: the router's deadline wins."""
    bad = provider_entry(backend, fault_server.url, "fault:hang", name="bad", timeout_secs=30)
    good = provider_entry(backend, fault_server.url, "fault:forever", name="good", timeout_secs=30)
    router = {"name": "r", "type": "router", "providers": ["bad", "good"], "timeout_secs": 1.0}
    registry = registry_of(bad, good, router)
    request_id = new_id(f"router-{backend}")
    try:
        outcome = await timed_chat(registry.get("r"), request_id)
    finally:
        await registry.aclose()
    assert isinstance(assert_typed(outcome.error), ProviderTimeoutError)
    assert outcome.elapsed <= 1.0 + SLACK, f"took {outcome.elapsed:.2f}s"
