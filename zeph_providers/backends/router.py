"""The router backend: one provider name in front of several members, with fallback and breakers.

```toml
[[llm.providers]]
name = "smart"
type = "router"
providers = ["claude", "gpt", "ollama"]   # other providers in the same file
strategy = "fallback"                      # fallback | round_robin | latency | least_busy | weighted
```

- Order: per the strategy (each described at `_routing.order`). Members at their client-side
  rate limit (`member.rate_limiter.has_capacity()` false) and members whose last health probe
  failed (`health_check_interval_secs`, `_health`) move behind the others: skipped while another
  can answer, still tried when none can.
- Each member has a `CircuitBreaker` (`zeph_providers.breaker`): open members are skipped until
  their cooldown ends, then one probe decides. `status()` shows it all as JSON-ready data.
- Rate limits, timeouts, unavailable servers, bad responses, local inference failures, context
  length (a later member may have a larger window) and unsupported capabilities move on to the
  next member. `InvalidRequestError` / `AuthenticationError` are raised at once unless
  `fallback_on_client_error` is set. A stream moves on only before its first chunk; after that
  the member's error reaches the caller, who already has the partial reply.
- One deadline (`timeout_secs`, or the per-call `timeout`) covers every attempt on every member:
  it is fixed once when the call opens (`ChatOptions.deadline`) and each member's stream gets it,
  capped by the member's own `default_timeout`. A member cut off by its own timeout counts as
  failed and the router falls back: the server may still finish that work (see
  docs/reliability.md, "duplicate work"), so requests that must not run twice need an idempotency
  key of the caller's.
- `resp.attempts` (and `stream.response.attempts`, and `error.attempts` on failure) lists every
  try on every member, retries included, in order.
- Requests go only to members whose capabilities allow them (tools, vision, structured output,
  embeddings). Building the router never builds its members; the first call, `capabilities`
  (the union of the members') or `embed` builds them through the registry.
- `resp.provider` (and `stream.response.provider`) names the member that answered.
- The registry owns the members: `aclose()` on the router closes nothing but itself.
- A router's own response cache (`[llm.providers.response_cache]` on the router) stores the routed
  answer; members keep their own caches (`zeph_providers.cache`, "router").

Layout: this module is the router class (members, breakers, the chat and embedding loops);
what needs no router instance (member statistics, building, ordering and status, error
verdicts, the relay of a member's chunks, the final error, the cycle guard) is in `_routing`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from zeph_providers._inputs import texts_from
from zeph_providers.backends._health import HealthChecker
from zeph_providers.backends._routing import Answer as _Answer
from zeph_providers.backends._routing import MemberStats as _MemberStats
from zeph_providers.backends._routing import (
    Verdict,
    at_limit,
    build_members,
    check_cycles,
    exhausted,
    member_status,
    order,
    relay,
    settings_problems,
    unexpected,
    verdict_for,
)
from zeph_providers.backends._routing import close_quietly as _close
from zeph_providers.backends._routing import log_attempts as _log_attempts
from zeph_providers.backends._routing import needs as _needs
from zeph_providers.backends._routing import next_chunk as _next_chunk
from zeph_providers.backends._routing import remaining as _remaining
from zeph_providers.backends._routing import supports as _supports
from zeph_providers.backends._routing import union as _union
from zeph_providers.base import BaseProvider
from zeph_providers.breaker import Admission, CircuitBreaker, SharedCircuitBreaker
from zeph_providers.config.models import Strategy
from zeph_providers.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    ConfigError,
    LlmError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnsupportedCapabilityError,
)
from zeph_providers.limits import chat_estimate, estimate_tokens
from zeph_providers.models_info import ModelInfo, members_models, smallest_window
from zeph_providers.options import PROVIDER_OPTIONS, Capabilities, ChatOptions
from zeph_providers.protocol import LlmProvider
from zeph_providers.stream import AttemptClock, ChatStream, attempt_log
from zeph_providers.structured import Finalize
from zeph_providers.types import ChatResponse, Message, StreamChunk, ToolDefinition

if TYPE_CHECKING:
    from zeph_providers.config import RouterConfig
    from zeph_providers.registry import Registry
    from zeph_providers.state import StateStore

__all__ = ["RouterProvider", "Strategy", "build"]

log = logging.getLogger("zeph_providers.router")

Resolver = Callable[[str], LlmProvider]
Clock = Callable[[], float]


class RouterProvider(BaseProvider):
    """Routes each call to one member provider, falling back and tripping breakers as members fail."""

    backend = "router"
    accepted_options = frozenset({*PROVIDER_OPTIONS, "strict_tools"})  # passed on: members honour or refuse them

    def __init__(
        self,
        name: str,
        members: Sequence[str],
        resolve: Resolver,
        *,
        strategy: Strategy = "fallback",
        timeout_secs: float = 300.0,
        failure_threshold: int = 3,
        cooldown_secs: float = 30.0,
        fallback_on_client_error: bool = False,
        max_concurrent: int | None = None,
        window_size: int = 50,
        failure_rate: float = 0.5,
        explore_every: int = 20,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        structured_retries: int = 1,
        state: StateStore | None = None,
        weights: Mapping[str, int] | None = None,
        health_check_interval_secs: float | None = None,
        health_check_timeout_secs: float = 5.0,
    ) -> None:
        names = list(dict.fromkeys(members))
        if not names:
            raise ConfigError("a router needs at least one member", provider=name)
        problems = settings_problems(names, strategy, weights, health_check_interval_secs, health_check_timeout_secs)
        if problems:
            raise ConfigError("; ".join(problems), provider=name)
        super().__init__(
            name,
            "router(" + ",".join(names) + ")",
            capabilities=Capabilities(streaming=True),
            max_concurrent=max_concurrent,
            default_timeout=timeout_secs,
            structured_retries=structured_retries,
        )
        self.strategy: Strategy = strategy
        self.fallback_on_client_error = fallback_on_client_error
        self.explore_every = explore_every
        self._member_names = names
        self._resolve = resolve
        self._members: dict[str, LlmProvider] = {}
        # On a shared store (Redis) the breakers' open/half-open state is shared by every replica.
        self._breakers: dict[str, CircuitBreaker] = {
            member: SharedCircuitBreaker(
                state,
                f"{name}:{member}",
                failure_threshold,
                cooldown_secs,
                # The half-open slot outlives a replica that died (or lost Redis) mid-probe by at
                # most one cooldown, not a whole call timeout: then another replica may probe.
                probe_ttl_secs=min(timeout_secs, max(cooldown_secs, 1.0)),
                window_size=window_size,
                failure_rate=failure_rate,
                clock=clock,
                wall_clock=wall_clock,
            )
            if state is not None and state.shared
            else CircuitBreaker(
                failure_threshold,
                cooldown_secs,
                window_size=window_size,
                failure_rate=failure_rate,
                clock=clock,
                wall_clock=wall_clock,
            )
            for member in names
        }
        self._stats = {member: _MemberStats() for member in names}
        self._lock = threading.Lock()  # guards the sequence counter, stats, in-flight counts, capabilities
        self._sequence = 0
        self._in_flight = dict.fromkeys(names, 0)
        self.weights: dict[str, int] | None = (
            {member: (weights or {}).get(member, 1) for member in names} if strategy == "weighted" else None
        )
        self._current: dict[str, int] = {}  # the smooth weighted round robin's running weights
        self.health: HealthChecker | None = None
        """The active health checks (None unless `health_check_interval_secs` is set)."""
        if health_check_interval_secs is not None:
            self.health = HealthChecker(
                name, health_check_interval_secs, health_check_timeout_secs, self._built_members, self._breakers
            )

    # ----- introspection ------------------------------------------------------------

    @property
    def members(self) -> list[str]:
        """The member names, in configured order."""
        return list(self._member_names)

    @property
    def capabilities(self) -> Capabilities:
        """The union of the members' capabilities; reading it builds the members through the registry."""
        self._resolve_members()
        return self._capabilities

    def breaker(self, member: str) -> CircuitBreaker:
        """The circuit breaker guarding one member."""
        return self._breakers[member]

    def status(self) -> dict[str, dict[str, Any]]:
        """Per member: breaker state, failure streak, totals, EMA latency and success, calls in
        flight, weight and last health probe (JSON-ready; see `_routing.member_status`)."""
        with self._lock:
            stats = {name: (s.ema_latency, s.ema_success, s.attempts) for name, s in self._stats.items()}
            in_flight = dict(self._in_flight)
        probes = self.health.snapshot() if self.health is not None else None
        return member_status(
            self._breakers, stats, self._members, in_flight=in_flight, weights=self.weights, probes=probes
        )

    def reset(self) -> None:
        """Close every breaker and forget the learned latencies."""
        for breaker in self._breakers.values():
            breaker.reset()
        with self._lock:
            self._stats = {member: _MemberStats() for member in self._member_names}

    async def aclose(self) -> None:
        """Stop the health checks; the members are the registry's to close."""
        if self.health is not None:
            await self.health.aclose()

    # ----- model metadata (zeph_providers.models_info) --------------------------------

    @property
    def context_window(self) -> int | None:
        """The smallest of the members' windows (a call may fall back to any); None if one is unknown."""
        self._resolve_members()
        return smallest_window(getattr(m, "context_window", None) for m in self._members.values())

    async def fetch_context_window(self) -> int | None:
        self._resolve_members()
        fetch = [getattr(m, "fetch_context_window", None) for m in self._members.values()]
        return smallest_window([await f() if f is not None else None for f in fetch])

    async def list_models(self, *, refresh: bool = False) -> list[ModelInfo]:
        """The union of the members' lists, in member order (each entry names its member)."""
        errors = self._resolve_members()
        if not self._members and errors:
            raise errors[0]
        return await members_models(self._members, provider=self.name, refresh=refresh)

    async def count_tokens(self, messages: Sequence[Message], *, tools: Sequence[ToolDefinition] = ()) -> int:
        detail = "its members tokenise differently; count with the member the call will go to"
        raise UnsupportedCapabilityError("count_tokens", provider=self.name, detail=detail)

    # ----- members ------------------------------------------------------------------

    def _resolve_members(self) -> list[LlmError]:
        """Build the members not built yet (through the registry); returns the build errors."""
        changed, errors = build_members(self._member_names, self._members, self._resolve)
        if changed:
            union = _union(member.capabilities for member in self._members.values())
            with self._lock:
                self._capabilities = union
        return errors

    def _built_members(self) -> dict[str, LlmProvider]:
        """The members, built now if not yet (what the health checks probe)."""
        self._resolve_members()
        return dict(self._members)

    def _order(self, behind: set[str]) -> list[str]:
        """The members in the order this request tries them, per the strategy (`_routing.order`);
        those in `behind` (at their rate limit, or failing their health probe) after the others."""
        with self._lock:
            self._sequence += 1
            ordered = order(
                self._member_names,
                self.strategy,
                self._sequence,
                self._stats,
                self.explore_every,
                in_flight=self._in_flight,
                weights=self.weights,
                current=self._current,
            )
        return sorted(ordered, key=lambda n: n in behind)  # stable

    async def _behind(self, estimate: Callable[[LlmProvider], int]) -> set[str]:
        """Members to try last: failing their last health probe, or at their rate limit."""
        if self.health is not None:
            self.health.ensure_started()
        down = self.health.down() if self.health is not None else set()
        return down | await at_limit(self.name, self._members, estimate)

    def _busy(self, name: str, delta: int) -> None:
        with self._lock:
            self._in_flight[name] += delta

    def _note(self, name: str, *, ok: bool | None, latency: float | None = None) -> None:
        """Fold one attempt into the member's EMAs (ok=None: no verdict on its health)."""
        with self._lock:
            self._stats[name].fold(ok=ok, latency=latency, sequence=self._sequence)

    async def _settle(self, name: str, admission: Admission, error: LlmError) -> Verdict:
        """Record a member's failure in its breaker and EMAs; say whether to try the next member."""
        if not error.provider:
            error.provider = name
        verdict = verdict_for(error, fallback_on_client_error=self.fallback_on_client_error)
        breaker = self._breakers[name]
        counts = isinstance(error, AuthenticationError) or verdict is Verdict.FAIL_AND_FALL_BACK
        await breaker.report(admission, False if counts else None)
        self._note(name, ok=False if counts else None)
        if verdict is not Verdict.RAISE:
            log.info("router %r: member %r failed (%s); trying the next member", self.name, name, type(error).__name__)
        return verdict

    # ----- request checks -----------------------------------------------------------

    def _check_request(self, messages: list[Message], options: ChatOptions) -> None:
        """Refuse at once what no member could serve (builds the members on first use)."""
        build_errors = self._resolve_members()
        if not self._members:
            raise AllProvidersFailedError(build_errors, provider=self.name, message="no member could be built")
        super()._check_request(messages, options)  # against the union of the members' capabilities
        needs = _needs(messages, options)
        if needs and not any(_supports(m.capabilities, needs) for m in self._members.values()):
            raise UnsupportedCapabilityError(
                " + ".join(needs), provider=self.name, detail="no single member supports all of them"
            )

    # ----- chat ---------------------------------------------------------------------

    def open_stream(self, messages: Sequence[Message], options: ChatOptions) -> ChatStream:
        """The routed stream. Its deadline is enforced on the members' streams (each member's
        timeout reported with its name), so the router's own stream arms no timer of its own."""
        options = options.started(self._default_timeout)
        message_list = list(messages)
        self.check_request(message_list, options)
        answer = _Answer()
        routed = _for_members(options)
        source, finalize = self.cached_source(
            message_list,
            options,
            lambda: self._guarded_stream(message_list, routed, self._route(message_list, routed, answer)),
            answer.finalize,
        )
        return ChatStream(
            source,
            provider=self.name,
            model=self.model,
            options=options,
            finalize=finalize,
            timed=False,
            call=self.new_call("chat", options=options, messages=message_list),
        )

    def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        return self._route(messages, options, _Answer())

    timed_stream = False  # the deadline is enforced on the members' streams, as in `open_stream`

    def start_try(self, messages: list[Message], options: ChatOptions) -> tuple[AsyncIterator[StreamChunk], Finalize]:
        """One routed try of a repairing `chat()`: the structured-output repair wraps the whole
        routed call (each re-ask is routed afresh), never a member's."""
        answer = _Answer()
        routed = _for_members(options)
        return self._guarded_stream(messages, routed, self._route(messages, routed, answer)), answer.finalize

    def replay_finalize(self, response: ChatResponse, options: ChatOptions) -> ChatResponse:
        """A reply replayed from the router's cache: parsed the way the member that answered parses
        (`resp.provider`), adopted as a live routed reply adopts it (`_routing.Answer`)."""
        if options.response_format is None:
            return response
        member: Any = None
        try:
            member = self._members.get(response.provider) or self._resolve(response.provider)
        except LlmError:
            member = None
        parse = getattr(member, "finalize", None)
        if parse is None:
            return self.finalize(response, options)
        response.parsed = parse(response.model_copy(deep=True), options).parsed
        return response

    async def _route(
        self, messages: list[Message], options: ChatOptions, answer: _Answer
    ) -> AsyncIterator[StreamChunk]:
        deadline = options.deadline
        log_ = attempt_log()
        errors = self._resolve_members()
        needs = _needs(messages, options)

        def accept(name: str, member: LlmProvider) -> bool:
            if needs and not _supports(member.capabilities, needs):
                errors.append(UnsupportedCapabilityError(" + ".join(needs), provider=name))
                return False
            return True

        behind = await self._behind(
            lambda member: chat_estimate(messages, options.max_tokens, getattr(member, "config", None))
        )
        async for name, member, admission, _remaining_secs in self._candidates(errors, deadline, accept, behind):
            self._busy(name, +1)
            try:
                started = time.perf_counter()
                clock = AttemptClock(name)
                try:
                    stream = member.open_stream(messages, options.within(member.default_timeout))
                except LlmError as exc:
                    _log_attempts(log_, None, clock, exc)
                    errors.append(exc)
                    if await self._settle(name, admission, exc) is Verdict.RAISE:
                        raise
                    continue
                except Exception as exc:  # a plugin member that breaks the protocol
                    error = unexpected(exc, name)
                    _log_attempts(log_, None, clock, error)
                    errors.append(error)
                    await self._settle(name, admission, error)
                    continue
                try:
                    first = await _next_chunk(stream, deadline, name)
                except StopAsyncIteration:
                    first = None  # an empty reply is still a reply
                except LlmError as exc:
                    await _close(stream)
                    _log_attempts(log_, stream, clock, exc)
                    errors.append(exc)
                    if await self._settle(name, admission, exc) is Verdict.RAISE:
                        raise
                    continue
                except BaseException as exc:
                    await _close(stream)
                    _log_attempts(log_, stream, clock, exc)
                    await self._breakers[name].report(admission, None)
                    raise
                # Committed: from here on this member's chunks (and errors) go to the caller.
                latency = time.perf_counter() - started
                outcome: BaseException | None = None
                try:
                    async for chunk in relay(name, member, stream, first, deadline):
                        yield chunk
                except LlmError as exc:
                    outcome = exc
                    if not exc.provider:
                        exc.provider = name
                    await self._breakers[name].report(admission, False)
                    self._note(name, ok=False, latency=latency)
                    raise
                except BaseException as exc:  # closed early or cancelled: no verdict on the member
                    outcome = exc
                    await self._breakers[name].report(admission, None)
                    raise
                finally:
                    await _close(stream)
                    _log_attempts(log_, stream, clock, outcome)
                answer.stream = stream
                await self._breakers[name].report(admission, True)
                self._note(name, ok=True, latency=latency)
                return
            finally:
                self._busy(name, -1)
        raise exhausted(self.name, errors, deadline, options.timeout)

    async def _candidates(
        self,
        errors: list[LlmError],
        deadline: float | None,
        accept: Callable[[str, LlmProvider], bool],
        behind: set[str],
    ) -> AsyncIterator[tuple[str, LlmProvider, Admission, float | None]]:
        """Members to try, in strategy order (`behind` last: at their rate limit, or down by their
        last health probe): built, accepted, let through by their breaker, with time left."""
        for name in self._order(behind):
            member = self._members.get(name)
            if member is None or not accept(name, member):
                continue  # a member that failed to build already has its error in `errors`
            admission, remaining, stop = await self._admit(name, errors, deadline)
            if stop:
                return
            if admission is not None:
                yield name, member, admission, remaining

    async def _admit(
        self, name: str, errors: list[LlmError], deadline: float | None
    ) -> tuple[Admission | None, float | None, bool]:
        """The member's breaker admission (None: circuit open), the time left, and whether to stop
        (no time left)."""
        admission = await self._breakers[name].admit()
        if admission is None:  # circuit open: its error says when the next probe is due
            retry_in = self._breakers[name].retry_in()
            errors.append(ProviderUnavailableError(f"circuit open; next probe in {retry_in:.1f}s", provider=name))
            log.debug("router %r: skipping %r (circuit open)", self.name, name)
            return None, None, False
        remaining = _remaining(deadline)
        if remaining is not None and remaining <= 0:
            await self._breakers[name].report(admission, None)
            return None, remaining, True
        return admission, remaining, False

    # ----- embeddings ---------------------------------------------------------------

    async def embed_batch(self, texts: Sequence[str], *, dimensions: int | None = None) -> list[list[float]]:
        """Embed through the first healthy embedding-capable member, falling back like chat
        (`dimensions` is passed on: a member that cannot honour it refuses)."""
        build_errors = self._resolve_members()
        if not any(m.capabilities.embeddings for m in self._members.values()):
            if build_errors and not self._members:
                raise AllProvidersFailedError(build_errors, provider=self.name, message="no member could be built")
            raise UnsupportedCapabilityError("embeddings", provider=self.name, detail="no member has embeddings")
        text_list = texts_from(texts, provider=self.name)
        if not text_list:
            return []
        return await self.observe_embedding(
            text_list, lambda batch: self._embed_in_slot_routed(batch, build_errors, dimensions)
        )

    async def _embed_in_slot_routed(
        self, texts: list[str], errors: list[LlmError], dimensions: int | None = None
    ) -> list[list[float]]:
        if self._semaphore is None:
            return await self._embed_routed(texts, errors, dimensions)
        async with self._semaphore:
            return await self._embed_routed(texts, errors, dimensions)

    async def _embed_routed(
        self, texts: list[str], errors: list[LlmError], dimensions: int | None = None
    ) -> list[list[float]]:
        deadline = ChatOptions().started(self._default_timeout).deadline
        tokens = estimate_tokens(texts, None)
        behind = await self._behind(lambda _member: tokens)
        embedders = self._candidates(errors, deadline, lambda _name, member: member.capabilities.embeddings, behind)
        async for name, member, admission, remaining in embedders:
            started = time.perf_counter()
            # The member's own timeout caps its embeddings as it caps its chat (`options.within`).
            own = member.default_timeout
            limit = remaining if own is None or (remaining is not None and remaining <= own) else own
            self._busy(name, +1)
            try:
                async with asyncio.timeout(limit):
                    if dimensions is None:
                        vectors = await member.embed_batch(texts)
                    else:
                        vectors = await member.embed_batch(texts, dimensions=dimensions)
            except LlmError as exc:
                errors.append(exc)
                if await self._settle(name, admission, exc) is Verdict.RAISE:
                    raise
                continue
            except Exception as exc:
                error: LlmError
                if isinstance(exc, TimeoutError):
                    where = "the router's deadline" if limit is remaining else f"the member's {own:g}s timeout"
                    error = ProviderTimeoutError(f"no embedding within {where}", provider=name)
                    error.__cause__ = exc
                else:
                    error = unexpected(exc, name)
                errors.append(error)
                await self._settle(name, admission, error)
                continue
            except BaseException:
                await self._breakers[name].report(admission, None)
                raise
            finally:
                self._busy(name, -1)
            await self._breakers[name].report(admission, True)
            self._note(name, ok=True, latency=time.perf_counter() - started)
            return vectors
        raise exhausted(self.name, errors, deadline, self._default_timeout)


def _for_members(options: ChatOptions) -> ChatOptions:
    """The options a routed call passes to its members: `response_cache=True` is the router's own
    (members without a cache would refuse it); False (bypass) reaches them too."""
    return options.with_changes(response_cache=None) if options.response_cache else options


def build(config: RouterConfig, registry: Registry) -> RouterProvider:
    """Build a router from its config; members are resolved through `registry.get` on first use."""
    check_cycles(config, registry)
    return RouterProvider(
        config.name,
        config.providers,
        registry.get,
        strategy=config.strategy,
        timeout_secs=config.timeout_secs,
        failure_threshold=config.failure_threshold,
        cooldown_secs=config.cooldown_secs,
        window_size=config.failure_window,
        failure_rate=config.failure_rate,
        fallback_on_client_error=config.fallback_on_client_error,
        max_concurrent=config.max_concurrent,
        structured_retries=config.structured_retries,
        state=getattr(registry, "state", None),
        weights=config.weights,
        health_check_interval_secs=config.health_check_interval_secs,
        health_check_timeout_secs=config.health_check_timeout_secs,
    )
