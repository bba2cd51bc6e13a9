"""The Anthropic Messages API routes: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

The translation lives in `_anthropic_request` and `_anthropic_wire` (pure functions); this module
is the HTTP side.

Decisions:

- Order of checks: the key is checked first (`ctx.authenticate`, before the body is read, as the
  OpenAI routes do), then the body is read (size limit, JSON), the key is authorised for the
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
  `ChatStream`, which cancels the backend's request or local generation) on every way out. Before
  a response starts (a non-streamed reply, a stream's first chunk) the same watcher
  (`_sse.until_disconnect`) cancels the upstream call. An unfinished stream is charged to the key
  with what it produced (`KeyInfo.settle_stream`).
- `model` in replies is the request's model (the registry's provider name), as the client sent it;
  the `x-zeph-provider` header names the provider that answered (a router's member) and, for a
  non-streamed reply, `x-zeph-model` the upstream model (as the OpenAI routes do).
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
from starlette.routing import BaseRoute, Route

from zeph_providers.errors import BadResponseError, InvalidRequestError, LlmError, UnsupportedCapabilityError
from zeph_providers.gateway._anthropic_request import AnthropicRequest, parse_request
from zeph_providers.gateway._anthropic_wire import (
    MessageBuilder,
    StreamTranslator,
    error_body,
    sse,
)
from zeph_providers.gateway._errors import GatewayError, error_message, error_status
from zeph_providers.gateway._sse import ClientDisconnected, EventStreamResponse, until_disconnect
from zeph_providers.options import ChatKwargs, ChatOptions

if TYPE_CHECKING:
    from starlette.requests import Request

    from zeph_providers.gateway._context import GatewayContext, KeyInfo
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
        kwargs = ChatKwargs(**request.kwargs)
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "thinking": thinking}
        return replace(request, kwargs=kwargs), True
    if thinking["type"] == "disabled":
        return request, False
    if not provider.capabilities.thinking:
        raise UnsupportedCapabilityError(
            "thinking", provider=provider.name, detail="send no `thinking` field, or pick a provider that thinks"
        )
    return request, True


async def _events(
    stream: ChatStream, translator: StreamTranslator, first: StreamChunk | None, key: KeyInfo
) -> AsyncIterator[bytes]:
    try:
        head = translator.start()
        if first is not None:
            key.observe(first)
            head += translator.feed(first)
        yield _write(head)
        if first is not None:
            async for chunk in stream:
                key.observe(chunk)
                events = translator.feed(chunk)
                if events:
                    yield _write(events)
        if translator.finish == "error":
            raise BadResponseError("the upstream ended the reply with an error")
        yield _write(translator.end())
    except Exception as exc:
        yield _error_event(exc)
    finally:
        with anyio.CancelScope(shield=True):  # a disconnect cancels us: close the upstream anyway
            await stream.aclose()
            await key.settle_stream(stream)


def _write(events: list[dict[str, Any]]) -> bytes:
    """The events one chunk produced, as one write (one send per chunk, not per event)."""
    return b"".join(sse(event) for event in events)


async def _first(request: Request, stream: ChatStream) -> StreamChunk | None:
    try:
        return await until_disconnect(request.receive, stream.__anext__)
    except StopAsyncIteration:
        return None
    except BaseException:
        await stream.aclose()
        raise


def routes(ctx: GatewayContext) -> list[BaseRoute]:
    """The Messages API routes over `ctx`."""

    async def _prepare(request: Request, *, count_only: bool) -> tuple[AnthropicRequest, LlmProvider, bool, KeyInfo]:
        ctx.authenticate(request)  # before reading a body from an unknown client
        body = await ctx.read_json(request)
        key = await ctx.authorize(request, _model(body))
        try:
            parsed = parse_request(body, count_only=count_only)
            ctx.check_max_tokens(parsed.kwargs.get("max_tokens"))
            provider = ctx.provider(parsed.model)
            parsed, keep_thinking = _thinking(parsed, provider)
            if not count_only:
                key.start(parsed.model, parsed.messages, parsed.kwargs.get("max_tokens"))
        except BaseException:
            await key.settle()
            raise
        return parsed, provider, keep_thinking, key

    async def messages(request: Request) -> Response:
        try:
            parsed, provider, keep_thinking, key = await _prepare(request, count_only=False)
        except Exception as exc:
            return error_response(exc)
        translator = StreamTranslator(model=parsed.model, keep_thinking=keep_thinking)
        stream: ChatStream | None = None
        try:
            stream = provider.open_stream(parsed.messages, ChatOptions.from_kwargs(parsed.kwargs, stream=parsed.stream))
            if parsed.stream:
                first = await _first(request, stream)  # `_events` settles the key when the stream ends
                events = _events(stream, translator, first, key)
                return EventStreamResponse(
                    ctx, events, on_close=stream.aclose, headers={"x-zeph-provider": stream.provider}
                )
            opened = stream
            async with ctx.track(), contextlib.aclosing(stream):
                message = await until_disconnect(request.receive, lambda: _collect(opened, translator, key))
            await key.settle_stream(stream)
            reply = stream.response
            return JSONResponse(message, headers={"x-zeph-provider": reply.provider, "x-zeph-model": reply.model})
        except ClientDisconnected:
            await key.settle_stream(stream)
            return Response(status_code=499)  # nobody reads it: the client is gone
        except Exception as exc:
            await key.settle_stream(stream)  # idempotent
            return error_response(exc)

    async def count_tokens(request: Request) -> Response:
        try:
            parsed, provider, _, key = await _prepare(request, count_only=True)
            await key.settle()
            counter = getattr(provider, "count_tokens", None)
            if counter is None:
                raise UnsupportedCapabilityError("count_tokens", provider=provider.name)
            tokens = await counter(parsed.messages, tools=parsed.kwargs.get("tools") or ())
            return JSONResponse({"input_tokens": tokens})
        except Exception as exc:
            return error_response(exc)

    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]


async def _collect(stream: ChatStream, translator: StreamTranslator, key: KeyInfo) -> dict[str, Any]:
    builder = MessageBuilder()
    builder.add_all(translator.start())
    async for chunk in stream:
        key.observe(chunk)
        builder.add_all(translator.feed(chunk))
    if translator.finish == "error":
        raise BadResponseError("the upstream ended the reply with an error")
    builder.add_all(translator.end())
    return builder.message
