"""Fault injection over real loopback HTTP: every scenario x every remote backend, then the router.

The fault server (tests/servers/fault_server.py) picks each request's fault from the model name
(`"fault:<plan>"`), so one provider entry per scenario exercises it. For every call the suite checks
the outcome (typed error class, or success) and how many attempts the server saw. No wall-clock
ceiling: a call that must run into its deadline faces a server that stalls for 600 s (`secs=600`)
while its deadline is short, so the typed `ProviderTimeoutError` can only come from the deadline
being honoured; `HANG_GUARD` (far below the server's stall, far above any deadline) turns a call
that ignores it into a failure instead of a hung suite. Calls that must not run into a deadline get
a generous one, so a slow, busy machine does not change their outcome.
Providers: `max_retries = 2` (so at most 3 attempts), backoff base 0.05 s.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

import pytest

from tests.reliability.helpers import (
    REMOTE_BACKENDS,
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

TIMEOUT = 30.0
"""The deadline of scenarios that must not run into it: generous, a busy machine does not change them."""
HANG_TIMEOUT = 1.0
"""The deadline of scenarios that always run into it (hang, forever), kept short so the suite is."""
STALL = "secs=600"
"""How long the server's hang / forever faults last: far past `HANG_GUARD`."""
HANG_GUARD = 120.0
"""A call still running after this long ignored its deadline: the test fails instead of hanging."""
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
    Scenario(f"hang:{STALL}", ProviderTimeoutError, 1, HANG_TIMEOUT),  # the deadline is spent: no time to retry
    Scenario("close", ProviderUnavailableError, ALL_ATTEMPTS),  # no complete event arrived: retried
    Scenario("reset0", ProviderUnavailableError, ALL_ATTEMPTS),  # RST before any byte: retried
    # chat() makes one non-streamed request: a RST halfway through its body comes before any chunk
    # reached the caller, so it is retried (test_broken_stream_... covers the streamed case: never retried).
    Scenario("reset", ProviderUnavailableError, ALL_ATTEMPTS),
    Scenario("badjson", BadResponseError, ALL_ATTEMPTS),
    Scenario("bigline:mb=20", BadResponseError, ALL_ATTEMPTS),  # refused at the line limit (16 MiB; Ollama 8)
    Scenario("nested:depth=100000", BadResponseError, ALL_ATTEMPTS),
    Scenario(f"forever:ms=5:{STALL}", ProviderTimeoutError, 1, HANG_TIMEOUT),
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
        async with asyncio.timeout(HANG_GUARD):
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
        async with asyncio.timeout(HANG_GUARD):
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
    Scenario(f"hang:{STALL}", ProviderTimeoutError, 1, HANG_TIMEOUT),
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
        async with asyncio.timeout(HANG_GUARD):
            vectors, error, _ = await timed_embed(fast_retries(registry.get("p")), [request_id, "second"])
    finally:
        await registry.aclose()
    if scenario.error is None:
        assert error is None, repr(error)
        assert vectors is not None and len(vectors) == 2
    else:
        typed = assert_typed(error)
        assert type(typed) is scenario.error, repr(typed)
    assert fault_server.attempts(request_id, kind="embed") == scenario.attempts


# ----- the router: one faulty member, one healthy --------------------------------------------

ROUTER_TIMEOUT = 60.0
"""Generous: only `test_router_deadline_covers_members_slower_than_it` runs into a router deadline."""
MEMBER_TIMEOUT = 0.6
"""The deadline of a member that must run into it (hang, forever): its own, not the router's."""
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
    RouterScenario(f"hang:{STALL}", True, None, 1),  # the member's own 0.6 s deadline, not the router's 2 s
    RouterScenario("close", True, None, MEMBER_RETRIES + 1),
    RouterScenario("reset0", True, None, MEMBER_RETRIES + 1),
    RouterScenario("badjson", True, None, MEMBER_RETRIES + 1),
    RouterScenario("nested", True, None, MEMBER_RETRIES + 1),
    # chat() is non-streamed on the wire: nothing reached the caller when these fail, so the router
    # falls back (test_router_does_not_fall_back_after_the_first_chunk covers streams: no fallback).
    RouterScenario("reset", True, None, MEMBER_RETRIES + 1),
    RouterScenario(f"forever:{STALL}", True, None, 1),  # the member's own deadline, then the next member
    RouterScenario("400", False, InvalidRequestError, 1),  # the request's fault: raised at once
)


def _member_timeout(plan: str) -> float:
    """Short for a fault that only a deadline ends (hang, forever), generous for the rest."""
    return MEMBER_TIMEOUT if plan.split(":")[0] in ("hang", "forever") else TIMEOUT


def _router_registry(backend: str, url: str, bad_plan: str, good_model: str = GOOD_MODEL) -> Registry:
    good_plan = good_model.removeprefix("fault:")
    bad = provider_entry(
        backend,
        url,
        f"fault:{bad_plan}",
        name="bad",
        timeout_secs=_member_timeout(bad_plan),
        max_retries=MEMBER_RETRIES,
    )
    good = provider_entry(
        backend, url, good_model, name="good", timeout_secs=_member_timeout(good_plan), max_retries=MEMBER_RETRIES
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
        async with asyncio.timeout(HANG_GUARD):
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


@pytest.mark.parametrize("backend", REMOTE_BACKENDS)
@pytest.mark.parametrize(
    ("plan", "error"),
    [("reset", ProviderUnavailableError), (f"forever:{STALL}", ProviderTimeoutError)],
    ids=["reset", "forever"],
)
async def test_router_does_not_fall_back_after_the_first_chunk(
    fault_server: FaultServer, backend: str, plan: str, error: type[LlmError]
) -> None:
    registry = _router_registry(backend, fault_server.url, plan)
    request_id = new_id(f"router-{backend}")
    try:
        async with asyncio.timeout(HANG_GUARD):
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


@pytest.mark.parametrize("backend", REMOTE_BACKENDS)
@pytest.mark.parametrize(
    "plans", [("500", "503"), ("badjson", "close"), (f"hang:{STALL}", f"hang:{STALL}")], ids="+".join
)
async def test_router_all_members_fail(fault_server: FaultServer, backend: str, plans: tuple[str, str]) -> None:
    registry = _router_registry(backend, fault_server.url, plans[0], good_model=f"fault:{plans[1]}")
    request_id = new_id(f"router-{backend}")
    try:
        async with asyncio.timeout(HANG_GUARD):
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


@pytest.mark.parametrize("backend", ["openai", "ollama"])
async def test_router_deadline_covers_members_slower_than_it(fault_server: FaultServer, backend: str) -> None:
    """Members whose own deadline is longer than the router's: the router's deadline wins.

    The members would wait 300 s, past `HANG_GUARD`: the typed timeout can only be the router's 1 s one.
    """
    bad = provider_entry(backend, fault_server.url, f"fault:hang:{STALL}", name="bad", timeout_secs=300)
    good = provider_entry(backend, fault_server.url, f"fault:forever:{STALL}", name="good", timeout_secs=300)
    router = {"name": "r", "type": "router", "providers": ["bad", "good"], "timeout_secs": 1.0}
    registry = registry_of(bad, good, router)
    request_id = new_id(f"router-{backend}")
    try:
        async with asyncio.timeout(HANG_GUARD):
            outcome = await timed_chat(registry.get("r"), request_id)
    finally:
        await registry.aclose()
    assert isinstance(assert_typed(outcome.error), ProviderTimeoutError)
