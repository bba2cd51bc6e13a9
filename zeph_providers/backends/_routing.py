"""The router's parts that need no router: member statistics, request needs, stream helpers.

`router.py` holds the routing itself; this module the pieces it is made of, so each reads alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

from zeph_providers.errors import InferenceError, LlmError, ProviderTimeoutError
from zeph_providers.options import Capabilities, ChatOptions
from zeph_providers.stream import AttemptClock, ChatStream
from zeph_providers.types import Attempt, ChatResponse, ImagePart, Message, StreamChunk

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
