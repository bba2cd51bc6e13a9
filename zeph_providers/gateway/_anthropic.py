"""The Anthropic Messages API routes: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

The translation lives in `_anthropic_wire` (pure functions); this module is the HTTP side.

Decisions:

- Order of checks: the body is read (size limit, JSON), then the key is checked for the
  `model` it names, and only then is the rest validated, so an unauthorised client learns nothing
  about the request's problems.
- A stream's first chunk is fetched before the response starts: an error there (unknown option,
  upstream 429, timeout) is an ordinary JSON error with its own status and `Retry-After`. After the
  first event is sent the status is 200, so a later error is an `event: error` SSE in the API's
  error shape, and the stream ends there (no `message_stop`).
- The non-streamed reply is the same events folded (`MessageBuilder`), so it equals what the SDK
  assembles from the stream (`get_final_message()`), ids aside.
- A client that disconnects mid-stream closes the upstream stream at once: the response watches
  `http.disconnect` while it streams, and closes the event generator (which closes our
  `ChatStream`, which cancels the backend's request or local generation) on every way out.
- `model` in replies is the request's model (the registry's provider name), as the client sent it.
- `count_tokens` asks the provider (`count_tokens()`); a backend that cannot count answers 400
  (`UnsupportedCapabilityError`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zeph_providers.errors import BadResponseError, InvalidRequestError, LlmError, UnsupportedCapabilityError
from zeph_providers.gateway._anthropic_wire import (
    AnthropicRequest,
    MessageBuilder,
    StreamTranslator,
    error_body,
    parse_request,
    sse,
)
from zeph_providers.gateway._errors import GatewayError, error_message, error_status
from zeph_providers.options import ChatOptions

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import Message as AsgiMessage
    from starlette.types import Receive, Scope, Send

    from zeph_providers.gateway._context import GatewayContext
    from zeph_providers.protocol import LlmProvider
    from zeph_providers.stream import ChatStream
    from zeph_providers.types import StreamChunk

__all__ = ["routes"]

log = logging.getLogger("zeph_providers.gateway")


def error_response(exc: BaseException) -> JSONResponse:
    status, headers = error_status(exc)
    if not isinstance(exc, LlmError | GatewayError):
        log.error("anthropic route failed", exc_info=exc)  # the client gets a generic line
    return JSONResponse(error_body(status, error_message(exc)), status_code=status, headers=headers)


def _error_event(exc: BaseException) -> bytes:
    status, _ = error_status(exc)
    return sse(error_body(status, error_message(exc)))


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("model: a string naming a provider is required")
    return model


def _thinking(request: AnthropicRequest, provider: LlmProvider) -> tuple[AnthropicRequest, bool]:
    """The request's `thinking` applied to `provider` (see `_anthropic_wire`); returns whether the
    reply keeps its thinking blocks."""
    thinking = request.thinking
    if thinking is None:
        return request, True
    if getattr(provider, "backend", None) == "claude":
        kwargs = dict(request.kwargs)
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "thinking": thinking}
        return replace(request, kwargs=kwargs), True  # type: ignore[arg-type]
    if thinking["type"] == "disabled":
        return request, False
    if not provider.capabilities.thinking:
        raise UnsupportedCapabilityError(
            "thinking", provider=provider.name, detail="send no `thinking` field, or pick a provider that thinks"
        )
    return request, True


class _EventStream:
    """An SSE response that closes its event generator on every way out, a client disconnect
    included (watched on `receive` while the events stream)."""

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        try:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    while True:
                        message: AsgiMessage = await receive()
                        if message["type"] == "http.disconnect":
                            group.cancel_scope.cancel()
                            return

                group.start_soon(watch)
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                try:
                    async for event in self._events:
                        await send({"type": "http.response.body", "body": event, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except OSError:
                    pass  # the client went away while we were writing
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._events.aclose()  # type: ignore[attr-defined]


async def _events(
    ctx: GatewayContext, stream: ChatStream, translator: StreamTranslator, first: StreamChunk | None
) -> AsyncIterator[bytes]:
    async with ctx.track():
        try:
            for event in translator.start():
                yield sse(event)
            if first is not None:
                for event in translator.feed(first):
                    yield sse(event)
                async for chunk in stream:
                    for event in translator.feed(chunk):
                        yield sse(event)
            if translator.finish == "error":
                raise BadResponseError("the upstream ended the reply with an error")
            for event in translator.end():
                yield sse(event)
        except Exception as exc:  # noqa: BLE001 - reported to the client in the API's error shape
            yield _error_event(exc)
        finally:
            with anyio.CancelScope(shield=True):  # a disconnect cancels us: close the upstream anyway
                await stream.aclose()


async def _first(stream: ChatStream) -> StreamChunk | None:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None
    except BaseException:
        await stream.aclose()
        raise


def routes(ctx: GatewayContext) -> list[Route]:
    """The Messages API routes over `ctx`."""

    async def _prepare(request: Request, *, count_only: bool) -> tuple[AnthropicRequest, LlmProvider, bool]:
        body = await ctx.read_json(request)
        await ctx.authorize(request, _model(body))
        parsed = parse_request(body, count_only=count_only)
        _check_max_tokens(ctx, parsed)
        provider = ctx.provider(parsed.model)
        parsed, keep_thinking = _thinking(parsed, provider)
        return parsed, provider, keep_thinking

    async def messages(request: Request) -> Response:
        try:
            parsed, provider, keep_thinking = await _prepare(request, count_only=False)
            options = ChatOptions.from_kwargs(parsed.kwargs, stream=parsed.stream)
            stream = provider.open_stream(parsed.messages, options)
            translator = StreamTranslator(model=parsed.model, keep_thinking=keep_thinking)
            if parsed.stream:
                first = await _first(stream)
                return _EventStream(_events(ctx, stream, translator, first))  # type: ignore[return-value]
            return JSONResponse(await _collect(ctx, stream, translator))
        except Exception as exc:  # noqa: BLE001 - every error answers in the API's shape
            return error_response(exc)

    async def count_tokens(request: Request) -> Response:
        try:
            parsed, provider, _ = await _prepare(request, count_only=True)
            counter = getattr(provider, "count_tokens", None)
            if counter is None:
                raise UnsupportedCapabilityError("count_tokens", provider=provider.name)
            tokens = await counter(parsed.messages, tools=parsed.kwargs.get("tools") or ())
            return JSONResponse({"input_tokens": tokens})
        except Exception as exc:  # noqa: BLE001
            return error_response(exc)

    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]


def _check_max_tokens(ctx: GatewayContext, parsed: AnthropicRequest) -> None:
    cap = getattr(ctx.settings, "max_tokens", None)
    asked = parsed.kwargs.get("max_tokens")
    if cap is not None and asked is not None and asked > cap:
        raise InvalidRequestError(f"max_tokens: {asked} is over this gateway's limit of {cap}")


async def _collect(ctx: GatewayContext, stream: ChatStream, translator: StreamTranslator) -> dict[str, Any]:
    builder = MessageBuilder()
    async with ctx.track(), contextlib.aclosing(stream):
        builder.add_all(translator.start())
        async for chunk in stream:
            builder.add_all(translator.feed(chunk))
        if translator.finish == "error":
            raise BadResponseError("the upstream ended the reply with an error")
        builder.add_all(translator.end())
    return builder.message
