"""The router's parts that need no router: member statistics and selection (building, ordering,
status), request needs, error verdicts, stream helpers, the final error and the cycle guard.

`router.py` holds the routing itself (the router class: members, order, breakers, the chat and
embedding loops); this module the pieces it is made of that need no router instance, so each reads
alone and `router.py` stays under 500 lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, get_args

from zeph_providers.config.models import Strategy, weight_problems
from zeph_providers.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    BudgetExceededError,
    ConfigError,
    ContextLengthError,
    InferenceError,
    InvalidRequestError,
    LlmError,
    ProviderTimeoutError,
    RateLimitError,
    UnsupportedCapabilityError,
)
from zeph_providers.options import Capabilities, ChatOptions
from zeph_providers.protocol import LlmProvider
from zeph_providers.stream import AttemptClock, ChatStream
from zeph_providers.types import Attempt, ChatResponse, DocumentPart, EndChunk, ImagePart, Message, StreamChunk

if TYPE_CHECKING:
    from zeph_providers.breaker import CircuitBreaker
    from zeph_providers.config import RouterConfig
    from zeph_providers.registry import Registry

log = logging.getLogger("zeph_providers.router")

_EMA_ALPHA = 0.3
_MIN_SUCCESS = 0.05


@dataclass
class MemberStats:
    """Learned numbers for the latency strategy and `status()`."""

    ema_latency: float | None = None
    """Seconds to the first chunk (or to the embedding), smoothed."""
    ema_success: float = 1.0
    attempts: int = 0
    last_used: int = 0
    """The request sequence number of the last attempt (for exploration)."""

    def fold(self, *, ok: bool | None, latency: float | None, sequence: int) -> None:
        """One attempt's outcome into the EMAs (ok=None: no verdict on the member's health)."""
        self.attempts += 1
        self.last_used = sequence
        if latency is not None:
            prev = self.ema_latency
            self.ema_latency = latency if prev is None else prev + _EMA_ALPHA * (latency - prev)
        if ok is not None:
            self.ema_success += _EMA_ALPHA * ((1.0 if ok else 0.0) - self.ema_success)


def scores(stats: dict[str, MemberStats]) -> dict[str, float]:
    """Expected cost per member: EMA latency divided by EMA success; untried = 0 (tried first)."""
    known = [s.ema_latency for s in stats.values() if s.ema_latency is not None]
    worst = max(known) if known else 1.0
    result: dict[str, float] = {}
    for name, member in stats.items():
        if member.attempts == 0:
            result[name] = 0.0
            continue
        latency = member.ema_latency if member.ema_latency is not None else worst
        result[name] = max(latency, 1e-6) / max(member.ema_success, _MIN_SUCCESS)
    return result


# ----- member selection ---------------------------------------------------------------


def order(
    names: Sequence[str],
    strategy: str,
    sequence: int,
    stats: dict[str, MemberStats],
    explore_every: int,
    *,
    in_flight: Mapping[str, int] | None = None,
    weights: Mapping[str, int] | None = None,
    current: dict[str, int] | None = None,
) -> list[str]:
    """The members in the order request number `sequence` tries them, per the strategy (stats locked).

    - `fallback`: the listed order. `round_robin`: the first member rotates on every request.
    - `latency`: an exponential moving average (EMA) of each member's time to the first chunk and of
      its success rate; the cheapest expected member first (members never tried go first, and every
      `explore_every`-th request tries the least recently used first so a recovered member can win
      its place back).
    - `least_busy` (needs `in_flight`): the fewest calls in flight through this router first; ties
      rotate like `round_robin`, so a quiet fleet still spreads its calls.
    - `weighted` (needs `weights` and the running `current` weights, updated here): the leader by
      smooth weighted round robin (`smooth_pick`), the rest by weight.
    """
    ordered = list(names)
    if strategy in ("round_robin", "least_busy"):
        start = (sequence - 1) % len(ordered)
        ordered = ordered[start:] + ordered[:start]
        if strategy == "least_busy" and in_flight is not None:
            ordered.sort(key=lambda n: in_flight.get(n, 0))  # stable: ties keep the rotation
    elif strategy == "weighted" and weights is not None and current is not None:
        first = smooth_pick(ordered, weights, current)
        rest = sorted((n for n in ordered if n != first), key=lambda n: -weights.get(n, 1))
        ordered = [first, *rest]
    elif strategy == "latency":
        expected = scores(stats)
        ordered.sort(key=lambda n: expected[n])  # stable: ties keep the configured order
        if explore_every and len(ordered) > 1 and sequence % explore_every == 0:
            stalest = min(ordered[1:], key=lambda n: stats[n].last_used)
            ordered.remove(stalest)
            ordered.insert(0, stalest)
    return ordered


def smooth_pick(names: Sequence[str], weights: Mapping[str, int], current: dict[str, int]) -> str:
    """Smooth weighted round robin (nginx's): every member gains its weight, the highest leads
    (ties: configured order) and gives back the total. Over a cycle of `sum(weights)` requests each
    member leads exactly `weight` times, spread out rather than in runs."""
    total = 0
    for name in names:
        weight = weights.get(name, 1)
        current[name] = current.get(name, 0) + weight
        total += weight
    best = max(names, key=lambda n: current[n])  # max keeps the first of equals
    current[best] -= total
    return best


STRATEGIES: tuple[str, ...] = get_args(Strategy)


def settings_problems(
    members: Sequence[str],
    strategy: str,
    weights: Mapping[str, object] | None,
    health_interval: float | None,
    health_timeout: float,
) -> list[str]:
    """What is wrong with a router built in code (the config's models check the same)."""
    problems = [] if strategy in STRATEGIES else [f"unknown strategy {strategy!r} (one of {', '.join(STRATEGIES)})"]
    problems.extend(weight_problems(members, weights, strategy))
    if health_interval is not None and min(health_interval, health_timeout) <= 0:
        problems.append("health_check_interval_secs and health_check_timeout_secs must be > 0")
    return problems


async def at_limit(
    router: str, members: Mapping[str, LlmProvider], estimate: Callable[[LlmProvider], int]
) -> set[str]:
    """The members whose client-side rate limiter (`member.rate_limiter`, `zeph_providers.limits`)
    has no capacity for the request now, `estimate(member)` tokens being what that member's own
    limiter will count (its config's `max_tokens` included). A limiter that fails to answer counts
    as having capacity: the check must never fail a call."""
    full: set[str] = set()
    for name, member in list(members.items()):
        limiter = getattr(member, "rate_limiter", None)
        if limiter is None:
            continue
        try:
            if not await limiter.has_capacity(estimate(member)):
                full.add(name)
                log.debug("router %r: %r is at its rate limit; trying it last", router, name)
        except Exception as exc:
            log.debug("router %r: rate limiter of %r failed (%s)", router, name, type(exc).__name__)
    return full


def build_members(
    names: Sequence[str], members: dict[str, LlmProvider], resolve: Callable[[str], LlmProvider]
) -> tuple[bool, list[LlmError]]:
    """Build the members not in `members` yet (added to it): whether any was added, and the build errors."""
    errors: list[LlmError] = []
    changed = False
    for name in names:
        if name in members:
            continue
        try:
            members[name] = resolve(name)
        except LlmError as exc:
            if not exc.provider:
                exc.provider = name
            errors.append(exc)
            continue
        except Exception as exc:  # a custom resolver; the registry already wraps its errors
            errors.append(unexpected(exc, name, ConfigError, "could not build the member:"))
            continue
        changed = True
    return changed, errors


def member_status(
    breakers: dict[str, CircuitBreaker],
    stats: dict[str, tuple[float | None, float, int]],
    built: Iterable[str],
    *,
    in_flight: Mapping[str, int] | None = None,
    weights: Mapping[str, int] | None = None,
    probes: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """`status()`: per member its breaker snapshot, EMA latency (ms) and success, attempts, built,
    calls in flight, weight (None unless `weighted`) and last health probe (None: not probed)."""
    report: dict[str, dict[str, Any]] = {}
    made = set(built)
    for name, breaker in breakers.items():
        entry = breaker.snapshot()
        latency, success, attempts = stats[name]
        entry["ema_latency_ms"] = None if latency is None else round(latency * 1000.0, 3)
        entry["ema_success"] = round(success, 4)
        entry["attempts"] = attempts
        entry["built"] = name in made
        entry["in_flight"] = (in_flight or {}).get(name, 0)
        entry["weight"] = None if weights is None else weights.get(name, 1)
        entry["last_probe"] = (probes or {}).get(name)
        report[name] = entry
    return report


def unexpected(
    exc: Exception, provider: str, kind: type[LlmError] = InferenceError, what: str = "unexpected"
) -> LlmError:
    """A member (or resolver) that broke the protocol with a non-`LlmError`: typed, the cause kept."""
    error = kind(f"{what} {type(exc).__name__}: {exc}", provider=provider)
    error.__cause__ = exc
    return error


def union(capabilities: Iterable[Capabilities]) -> Capabilities:
    """A capability is the router's when any member has it."""
    caps = list(capabilities)
    return Capabilities(**{f.name: any(getattr(c, f.name) for c in caps) for f in fields(Capabilities)})


def needs(messages: Sequence[Message], options: ChatOptions) -> list[str]:
    """The capabilities (field names of `Capabilities`) this request needs from a member."""
    needs: list[str] = []
    if options.tools:
        needs.append("tools")
    if options.response_format is not None:
        needs.append("structured_output")
    if any(isinstance(part, ImagePart) for message in messages for part in message.parts):
        needs.append("vision")
    if any(isinstance(part, DocumentPart) for message in messages for part in message.parts):
        needs.append("documents")
    return needs


def supports(capabilities: Capabilities, needs: Sequence[str]) -> bool:
    return all(getattr(capabilities, need) for need in needs)


def remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


class Answer:
    """Per call: the member stream that answered, whose finalized reply carries the parsed output."""

    def __init__(self) -> None:
        self.stream: ChatStream | None = None

    def finalize(self, response: ChatResponse) -> ChatResponse:
        """The member already parsed its structured output (its own way: Claude's differs); adopt it."""
        if self.stream is not None and self.stream.done:
            response.parsed = self.stream.response.parsed
            response.cached = self.stream.response.cached  # the member's response cache answered
        return response


def log_attempts(
    log_: list[Attempt] | None, stream: ChatStream | None, clock: AttemptClock, outcome: BaseException | None
) -> None:
    """Add one member's tries to the call's attempt log (one made-up try when its stream never ran)."""
    if log_ is None:
        return
    tries = stream.attempts if stream is not None else []
    if not tries:
        # A try of the router's own (`append`: reported to its hooks); a member's tries (`extend`)
        # were reported by the member's own call.
        log_.append(clock.done(outcome))
        return
    if isinstance(outcome, ProviderTimeoutError) and tries[-1].outcome == "cancelled":
        # The router's own wait ran out first and cancelled the member's try: that try timed out.
        tries[-1] = tries[-1].model_copy(update={"outcome": type(outcome).__name__, "error": outcome.message})
    log_.extend(tries)


async def next_chunk(stream: ChatStream, deadline: float | None, member: str) -> StreamChunk:
    """The member's next chunk within the router's deadline; every failure typed and named."""
    left = remaining(deadline)
    if left is not None and left <= 0:
        raise ProviderTimeoutError("the router's deadline has passed", provider=member)
    try:
        async with asyncio.timeout(left):
            return await anext(stream)
    except (StopAsyncIteration, LlmError):
        raise
    except TimeoutError as exc:
        raise ProviderTimeoutError("no reply within the router's deadline", provider=member) from exc
    except Exception as exc:
        raise InferenceError(f"unexpected {type(exc).__name__}: {exc}", provider=member) from exc


async def close_quietly(stream: ChatStream) -> None:
    with contextlib.suppress(Exception):
        await stream.aclose()


class Verdict(enum.Enum):
    """What one member's error means for the request and for that member's breaker."""

    FAIL_AND_FALL_BACK = "fail"  # counts against the member; try the next one
    SKIP = "skip"  # says nothing about the member's health; try the next one
    RAISE = "raise"  # the request itself is at fault; stop here


def verdict_for(error: LlmError, *, fallback_on_client_error: bool) -> Verdict:
    """What one member's error means: fall back and count it, skip it, or raise it."""
    if isinstance(error, UnsupportedCapabilityError | ContextLengthError | BudgetExceededError):
        return Verdict.SKIP
    if isinstance(error, RateLimitError) and error.client_side:
        return Verdict.SKIP  # our own rpm/tpm limiter refused it: nothing was sent
    if isinstance(error, InvalidRequestError):
        return Verdict.SKIP if fallback_on_client_error else Verdict.RAISE
    if isinstance(error, AuthenticationError):
        # A bad key is the member's fault: it counts against its breaker either way.
        return Verdict.FAIL_AND_FALL_BACK if fallback_on_client_error else Verdict.RAISE
    return Verdict.FAIL_AND_FALL_BACK


async def relay(
    name: str,
    member: LlmProvider,
    stream: ChatStream,
    first: StreamChunk | None,
    deadline: float | None,
) -> AsyncIterator[StreamChunk]:
    """The member's chunks, its EndChunk stamped with its name (one is added if it sent none)."""
    chunk = first
    ended = False
    while chunk is not None:
        if isinstance(chunk, EndChunk):
            ended = True
            # A nested router already named its leaf member; keep the most precise name.
            stamp = {"model": chunk.model or member.model, "provider": chunk.provider or name}
            chunk = chunk.model_copy(update=stamp)
        yield chunk
        try:
            chunk = await next_chunk(stream, deadline, name)
        except StopAsyncIteration:
            chunk = None
    if not ended:
        finish = stream.response.finish_reason if stream.done else "stop"
        yield EndChunk(finish_reason=finish, model=member.model, provider=name)


def exhausted(router: str, errors: list[LlmError], deadline: float | None, timeout: float | None) -> LlmError:
    """The error for a request no member answered, carrying every member's error."""
    group = ExceptionGroup("member errors", errors) if errors else None
    error: LlmError
    left = remaining(deadline)
    if left is not None and left <= 0:
        tried = "; ".join(f"{e.provider or '?'}: {type(e).__name__}: {e.message}" for e in errors)
        error = ProviderTimeoutError(
            f"no member answered within the {timeout or 0:g}s deadline" + (f" ({tried})" if tried else ""),
            provider=router,
        )
    elif errors and all(isinstance(e, UnsupportedCapabilityError) for e in errors):
        first = errors[0]
        capability = first.capability if isinstance(first, UnsupportedCapabilityError) else "request"
        error = UnsupportedCapabilityError(capability, provider=router, detail="no member accepted the request")
    else:
        error = AllProvidersFailedError(errors, provider=router)
    error.__cause__ = group
    return error


def check_cycles(config: RouterConfig, registry: Registry) -> None:
    """Config loading already refuses router cycles; this guards configs assembled in code."""
    from zeph_providers.config.loading import router_cycles

    for cycle in router_cycles(list(registry.config.providers)):
        if config.name in cycle:
            raise ConfigError(f"routers form a cycle: {' -> '.join(cycle)}", provider=config.name)
