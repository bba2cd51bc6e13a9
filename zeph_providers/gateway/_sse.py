"""A server-sent-events response that closes the upstream stream, whatever ends it.

Starlette's `StreamingResponse` under ASGI 2.4 notices a gone client only when a write fails, and
leaves closing the body iterator to the garbage collector. Here one task writes the events and a
second waits for `http.disconnect`; whichever ends first cancels the other, and `on_close` (the
`ChatStream.aclose()`: the HTTP request to an upstream is closed, the local worker stops
generating) is awaited in every case, before the response returns. The whole response runs inside
`ctx.track()`, so graceful shutdown waits for it.

`until_disconnect(receive, work)` is the same watcher for the work before a response starts (a
non-streamed reply, a stream's first chunk): uvicorn does not cancel a handler whose client left,
so without it the upstream call would run to its end for nobody. A gone client cancels the work
(which closes its upstream stream) and raises `ClientDisconnected`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from zeph_providers.gateway._context import GatewayContext

__all__ = ["ClientDisconnected", "EventStreamResponse", "sse_event", "until_disconnect"]

log = logging.getLogger("zeph_providers.gateway")

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client went away before its response started; the work for it was cancelled."""


async def until_disconnect(receive: Receive, work: Callable[[], Awaitable[T]]) -> T:
    """`await work()`, cancelled (and `ClientDisconnected` raised) if the client disconnects first.
    Call it once the request body has been read: the watcher consumes `receive()` messages."""
    results: list[T] = []
    errors: list[BaseException] = []
    gone = False
    async with anyio.create_task_group() as group:

        async def run() -> None:
            try:
                results.append(await work())
            except Exception as exc:  # re-raised below as itself, not inside an ExceptionGroup
                errors.append(exc)
            group.cancel_scope.cancel()

        async def watch() -> None:
            nonlocal gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    group.cancel_scope.cancel()
                    return

        group.start_soon(run)
        group.start_soon(watch)
    if errors:
        raise errors[0]
    if results:
        return results[0]
    if gone:
        log.info("gateway: the client disconnected before its reply; the upstream call was cancelled")
    raise ClientDisconnected("the client disconnected")


def sse_event(data: str, *, event: str | None = None) -> bytes:
    """One SSE event (`event:` line optional; `data` must be one line, as JSON is)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


class EventStreamResponse(Response):
    """`text/event-stream` from `events`; `on_close` runs once the response ends, however."""

    media_type = "text/event-stream"

    def __init__(
        self,
        ctx: GatewayContext,
        events: AsyncIterator[bytes],
        *,
        on_close: Callable[[], Awaitable[None]],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            content=None,
            status_code=200,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})},
            media_type=self.media_type,
        )
        # a stream has no length: drop the `content-length: 0` Response adds for an empty body
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._ctx = ctx
        self._events = events
        self._on_close = on_close
        self.disconnected = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self._ctx.track():
            try:
                async with anyio.create_task_group() as group:

                    async def write() -> None:
                        try:
                            await send(
                                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
                            )
                            async for event in self._events:
                                await send({"type": "http.response.body", "body": event, "more_body": True})
                            await send({"type": "http.response.body", "body": b"", "more_body": False})
                        except OSError:  # the client went away mid-write
                            self.disconnected = True
                        group.cancel_scope.cancel()

                    async def watch() -> None:
                        while True:
                            message = await receive()
                            if message["type"] == "http.disconnect":
                                self.disconnected = True
                                group.cancel_scope.cancel()
                                return

                    group.start_soon(write)
                    group.start_soon(watch)
            finally:
                with anyio.CancelScope(shield=True):
                    aclose = getattr(self._events, "aclose", None)
                    try:
                        if aclose is not None:
                            await aclose()
                    finally:
                        await self._on_close()
                if self.disconnected:
                    log.info("gateway: the client disconnected mid-stream; the upstream stream was closed")
