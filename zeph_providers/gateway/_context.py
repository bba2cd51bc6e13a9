"""`GatewayContext`: what every API module shares (auth, limits, bodies, in-flight tracking).

The API modules (`_openai`, `_anthropic`) code against this surface only:

    ctx.authenticate(request)                     # 401 / 403 before reading a body
    body = await ctx.read_json(request)           # 413 / 400
    key = await ctx.authorize(request, model)     # 401 / 403 / 429 as GatewayError subclasses
    provider = ctx.provider(model)                # ProviderNotFoundError -> 404
    async with ctx.track(): ...                   # graceful shutdown waits for this
    key.start(provider_name, messages, max_tokens)  # input estimate; budget hold (may raise 429)
    key.observe(chunk)                            # what a stream produced, for an unfinished one
    await key.settle(tokens, cost)                # after the reply: the key's tokens and spend
    await key.settle_stream(stream)               # a stream's usage, or what it produced so far
    EventStreamResponse(ctx, events, on_close=...)  # (_sse) a stream that closes its upstream

Decisions:
- Keys are checked before the provider exists: an unknown key learns nothing about the config.
- Without configured keys only loopback clients are served (unless `allow_remote`); the peer
  address is the socket's (`request.client`), never a forwarded header a client could forge.
  `serve` runs uvicorn with `proxy_headers=False` (so `request.client` is the socket's), and a
  request carrying `X-Forwarded-For`, `Forwarded` or `X-Real-IP` is never loopback here: behind
  a proxy (even one on this host, or an app mounting `create_app` behind its own server), every
  client looks local, so configure keys.
- A key's rpm/tpm go through `zeph_providers.limits.RateLimiter(wait=False)`: the request is
  counted when authorised, its tokens settled when the reply's usage is known (tokens are unknown
  before), so a key over its tpm is refused from the next request on. Its budget is spent from
  `resp.cost` (unpriced calls cost nothing here, as in `zeph_providers.pricing`).
- Budget race: a budgeted key holds a worst-case cost while a request is in flight (its input
  estimate + `max_tokens`, else the gateway's cap, at the provider's configured `pricing`; 0 when
  it has none), taken under the lock together with the check `spent + pending >= budget`, and
  replaced by the real cost when the request settles. So concurrent requests cannot all pass a
  budget that one of them may use up.
- An unfinished stream (the client left, or the upstream failed after output) is settled with
  what it produced: the usage if the upstream reported it, else the input estimate plus the
  streamed output's characters / 4 (`limits.estimate_tokens`), charged to the tpm; that estimate
  is priced only through the provider's configured `pricing` (a library-priced or routed
  provider's unfinished stream counts toward tpm only).
- Nothing here logs a key: a key is only hashed, and log lines name the key by its `name`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zeph_providers.errors import RateLimitError
from zeph_providers.gateway._errors import (
    BadRequest,
    BodyTooLarge,
    Forbidden,
    GatewayError,
    KeyOverLimit,
    Unauthorized,
    error_status,
)
from zeph_providers.gateway._settings import GatewayKey, GatewaySettings

if TYPE_CHECKING:
    from starlette.requests import Request

    from zeph_providers.limits import RateLimiter, Reservation
    from zeph_providers.protocol import LlmProvider
    from zeph_providers.registry import Registry
    from zeph_providers.stream import ChatStream
    from zeph_providers.types import StreamChunk, Usage

__all__ = ["GatewayContext", "GatewayError", "KeyInfo", "error_status"]

log = logging.getLogger("zeph_providers.gateway")

ANONYMOUS = "anonymous"
"""The name requests get when no keys are configured (loopback clients)."""


@dataclass
class KeyInfo:
    """One authorised request: which key made it and the capacity it holds."""

    name: str
    key: GatewayKey | None = None
    reservation: Reservation | None = field(default=None, repr=False)
    _ctx: GatewayContext | None = field(default=None, repr=False)
    _settled: bool = field(default=False, repr=False)

    provider: str | None = field(default=None, repr=False)
    input_tokens: int = field(default=0, repr=False)
    output_chars: int = field(default=0, repr=False)
    usage: Usage | None = field(default=None, repr=False)
    _reserved: float = field(default=0.0, repr=False)
    _tool_deltas: bool = field(default=False, repr=False)

    def start(self, provider: str, messages: Sequence[Any], max_tokens: int | None) -> None:
        """The request is parsed: note its provider and input estimate and, for a budgeted key,
        hold its worst-case cost against the budget (`KeyOverLimit` when spent + pending reaches it)."""
        from zeph_providers.limits import estimate_tokens
        from zeph_providers.types import Usage

        self.provider = provider
        self.input_tokens = estimate_tokens([str(getattr(m, "text", "")) for m in messages], None)
        ctx, key = self._ctx, self.key
        if ctx is None or key is None or key.budget_usd is None:
            return
        output = max_tokens or ctx.settings.max_tokens
        worst = ctx.price(provider, Usage(input_tokens=self.input_tokens, output_tokens=output))
        self._reserved = ctx.reserve(key, worst or 0.0)

    def observe(self, chunk: StreamChunk) -> None:
        """Count what a stream produced (text, thinking, tool arguments) and its usage, if sent."""
        from zeph_providers.types import ContentChunk, ThinkingChunk, ToolCallDeltaChunk, ToolUseChunk, UsageChunk

        if isinstance(chunk, ContentChunk | ThinkingChunk):
            self.output_chars += len(chunk.text)
        elif isinstance(chunk, ToolCallDeltaChunk):
            self._tool_deltas = True
            self.output_chars += len(chunk.arguments) + len(chunk.name or "")
        elif isinstance(chunk, ToolUseChunk) and not self._tool_deltas:
            call = chunk.tool_call
            self.output_chars += len(call.name) + len(json.dumps(call.arguments, ensure_ascii=False))
        elif isinstance(chunk, UsageChunk):
            self.usage = chunk.usage

    async def settle_stream(self, stream: ChatStream | None) -> None:
        """Settle from a stream: its reply's usage and cost when it finished, else what it produced."""
        if stream is not None and stream.done:
            response = stream.response
            await self.settle(response.usage.total_tokens or None, response.cost)
        else:
            await self.settle_unfinished()

    async def settle_unfinished(self) -> None:
        """Settle a reply that did not finish: its usage if reported, else the input estimate plus
        the output produced (characters / 4); priced through the provider's `pricing` if it has one.
        A request that produced nothing is charged nothing (the upstream failed before output)."""
        from zeph_providers.limits import CHARS_PER_TOKEN
        from zeph_providers.types import Usage

        usage = self.usage if self.usage is not None and self.usage.total_tokens else None
        if usage is None and self.output_chars:
            output = math.ceil(self.output_chars / CHARS_PER_TOKEN)
            usage = Usage(input_tokens=self.input_tokens, output_tokens=output)
        if usage is None:
            await self.settle()
            return
        cost = self._ctx.price(self.provider, usage) if self._ctx is not None and self.provider else None
        await self.settle(usage.total_tokens, cost)

    async def settle(self, tokens: int | None = None, cost: float | None = None) -> None:
        """Record what the request used: its tokens (the key's tpm) and its cost (its budget), and
        release its budget hold. Idempotent; call it in a `finally` with what is known (None when
        nothing is)."""
        if self._settled:
            return
        self._settled = True
        if self._ctx is not None and (cost or self._reserved):
            self._ctx.spend(self.name, cost or 0.0, release=self._reserved)
        if self.reservation is not None:
            try:
                await self.reservation.settle(tokens)
            except Exception:  # a limiter failure must not turn a served reply into an error
                log.warning("gateway key %r: settling its rate limit failed", self.name, exc_info=True)


class GatewayContext:
    """Shared by the routes of one app: the registry, the settings, the keys' limits and spend."""

    def __init__(self, registry: Registry, settings: GatewaySettings) -> None:
        self.registry = registry
        self.settings = settings
        self._limiters: dict[str, RateLimiter] = {}
        self._spent: dict[str, float] = {}
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle: asyncio.Event | None = None
        self.shutting_down = False

    # ----- access --------------------------------------------------------------------

    async def authorize(self, request: Request, provider: str | None) -> KeyInfo:
        """Check the request's key (Authorization: Bearer, or x-api-key) for `provider`
        (None: no provider, e.g. /v1/models); raises `Unauthorized`, `Forbidden` or `KeyOverLimit`."""
        key = self.authenticate(request)
        if key is None:
            return KeyInfo(name=ANONYMOUS, _ctx=self)
        if provider is not None and key.providers is not None and provider not in key.providers:
            raise Forbidden(f"key {key.name!r} may not use model {provider!r}", param="model")
        if key.budget_usd is not None:
            with self._lock:
                self._check_budget(key)
        reservation = None
        if key.rpm is not None or key.tpm is not None:
            try:
                # one token, not 0: a take of 0 tokens skips the tpm bucket, and a key whose
                # settled usage overdrew it would never be refused
                reservation = await self._limiter(key).acquire(1)
            except RateLimitError as exc:
                _, headers = error_status(exc)
                raise KeyOverLimit(
                    f"key {key.name!r} is over its rate limit; retry after {headers.get('Retry-After', '1')} s",
                    headers=headers,
                ) from None
        return KeyInfo(name=key.name, key=key, reservation=reservation, _ctx=self)

    def authenticate(self, request: Request) -> GatewayKey | None:
        """The request's key (None: no keys configured and the client may come in), checked
        before the body is read; `authorize` repeats it and adds the provider and limit checks."""
        if not self.settings.keys:
            if not self.settings.allow_remote and not _is_loopback(request):
                raise Forbidden(
                    "this gateway has no keys configured and serves loopback clients only;"
                    " add [[llm.gateway.keys]] to its config to serve other hosts"
                )
            return None
        presented = _presented_key(request)
        if not presented:
            raise Unauthorized("missing API key: send `Authorization: Bearer KEY` (or `x-api-key: KEY`)")
        key = self.settings.match(presented)
        if key is None:
            raise Unauthorized("invalid API key")
        return key

    def _limiter(self, key: GatewayKey) -> RateLimiter:
        with self._lock:
            limiter = self._limiters.get(key.name)
            if limiter is None:
                from zeph_providers.limits import RateLimiter
                from zeph_providers.state import MemoryStore

                limiter = RateLimiter(
                    f"gateway-key:{key.name}", rpm=key.rpm, tpm=key.tpm, store=MemoryStore(), wait=False
                )
                self._limiters[key.name] = limiter
            return limiter

    def _check_budget(self, key: GatewayKey) -> None:
        """Refuse when what the key spent plus what its in-flight requests hold reaches its budget
        (call with the lock held)."""
        assert key.budget_usd is not None
        spent = self._spent.get(key.name, 0.0)
        pending = self._pending.get(key.name, 0.0)
        if spent + pending >= key.budget_usd:
            held = f", ${pending:.4f} held by requests in flight" if pending else ""
            raise KeyOverLimit(
                f"key {key.name!r} has spent its budget (${spent:.4f} of ${key.budget_usd:.4f}{held})",
                code="insufficient_quota",
            )

    def reserve(self, key: GatewayKey, amount: float) -> float:
        """Check the key's budget and hold `amount` against it, atomically; the amount held."""
        with self._lock:
            self._check_budget(key)
            self._pending[key.name] = self._pending.get(key.name, 0.0) + amount
        return amount

    def spend(self, key: str, cost: float, *, release: float = 0.0) -> None:
        """Add `cost` to the key's spend, releasing `release` it held while in flight."""
        with self._lock:
            self._spent[key] = self._spent.get(key, 0.0) + cost
            if release:
                self._pending[key] = max(0.0, self._pending.get(key, 0.0) - release)

    def pending(self, key: str) -> float:
        """USD the key's in-flight requests hold against its budget."""
        with self._lock:
            return self._pending.get(key, 0.0)

    def price(self, provider: str, usage: Usage) -> float | None:
        """`usage` at `provider`'s configured `pricing` (None: it has none)."""
        from zeph_providers.pricing import price

        entry = self.registry.config.provider(provider)
        pricing = getattr(entry, "pricing", None)
        return None if pricing is None else price(usage, pricing)

    def spent(self, key: str) -> float:
        """USD the key has spent since the gateway started."""
        with self._lock:
            return self._spent.get(key, 0.0)

    def provider(self, name: str) -> LlmProvider:
        """The registry's provider `name` (ProviderNotFoundError -> 404)."""
        return self.registry.get(name)

    def check_max_tokens(self, value: Any, *, param: str = "max_tokens") -> int | None:
        """A request's max_tokens, validated: a positive integer no larger than the cap (else 400)."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"`{param}` must be a positive integer", param=param)
        if value > self.settings.max_tokens:
            raise BadRequest(
                f"`{param}` = {value} is over this gateway's limit of {self.settings.max_tokens}",
                param=param,
                code="max_tokens_too_large",
            )
        return value

    # ----- bodies --------------------------------------------------------------------

    async def read_json(self, request: Request) -> dict[str, Any]:
        """The request's JSON object, refusing bodies over `max_body_bytes` (413) and malformed
        JSON or a non-object (400)."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"the request body is over this gateway's limit of {limit} bytes")
        body = bytearray()
        async for piece in request.stream():
            body.extend(piece)
            if len(body) > limit:
                raise BodyTooLarge(f"the request body is over this gateway's limit of {limit} bytes")
        try:
            value = json.loads(bytes(body))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise BadRequest("the request body is nested too deeply") from None
        if not isinstance(value, dict):
            raise BadRequest("the request body must be a JSON object")
        return value

    # ----- in-flight tracking ----------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextlib.asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        """Count a request (a whole stream, for streams) as in flight while the block runs."""
        self._in_flight += 1
        if self._idle is not None:
            self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for in-flight requests to finish; whether they all did."""
        self.shutting_down = True
        if self._in_flight == 0:
            return True
        self._idle = asyncio.Event()
        if self._in_flight == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


_FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def _is_loopback(request: Request) -> bool:
    """Whether the socket's peer is loopback and no proxy forwarded the request (see the module)."""
    if any(name in request.headers for name in _FORWARDING_HEADERS):
        return False
    client = request.client
    if client is None:
        return False
    try:
        return ipaddress.ip_address(client.host).is_loopback
    except ValueError:
        return False
