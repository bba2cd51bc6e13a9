"""The OpenAI API: `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models`.

The request's `model` names a registry provider; replies name it back as their `model` (the
upstream model that answered is in the `x-zeph-model` header, the provider in `x-zeph-provider`:
a router's member). Wire format as OpenAI's: `chat.completion` / `chat.completion.chunk`
objects with `chatcmpl-` ids, `created`, finish reasons (`tool_use` -> `tool_calls`, a refusal
-> `content_filter`, `pause_turn` -> `stop`), tool-call deltas with their `index`, and with
`stream_options.include_usage` a last chunk with empty `choices` and the usage. Thinking, where a
backend streams it, goes out as `reasoning_content` (the field compatible servers use).

Errors are OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the status of
`_errors.error_status`. A stream fails with an HTTP status while nothing has been sent (the first
chunk is awaited before the response starts, so retries and router fallbacks still apply); after
that, as an SSE `data: {"error": ...}` event, which the openai client raises as an `APIError`.

A reply the upstream ended with finish reason "error" is not passed off as complete: a
non-streamed one is a 502 (`BadResponseError`), a stream ends with an error event and `[DONE]`
(as the Anthropic routes do). A client that disconnects before its reply starts (a non-streamed
call, a stream's first chunk) cancels the upstream call (`_sse.until_disconnect`).
"""

from __future__ import annotations

import base64
import json
import logging
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from zeph_providers.errors import BadResponseError, LlmError
from zeph_providers.gateway._context import GatewayContext, KeyInfo
from zeph_providers.gateway._errors import error_code, error_message, error_status
from zeph_providers.gateway._openai_request import ChatRequest, parse_chat, parse_embeddings
from zeph_providers.gateway._sse import ClientDisconnected, EventStreamResponse, sse_event, until_disconnect
from zeph_providers.types import (
    ChatResponse,
    ContentChunk,
    EndChunk,
    FinishReason,
    LogprobsChunk,
    StreamChunk,
    ThinkingChunk,
    TokenLogprob,
    ToolCall,
    ToolCallDeltaChunk,
    ToolUseChunk,
    Usage,
    UsageChunk,
)

__all__ = ["error_body", "error_response", "routes"]

log = logging.getLogger("zeph_providers.gateway")

_FINISH: dict[FinishReason, str] = {
    "stop": "stop",
    "length": "length",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          413: "invalid_request_error", 429: "rate_limit_error", 504: "timeout_error"}  # fmt: skip


def routes(ctx: GatewayContext) -> list[BaseRoute]:
    async def chat(request: Request) -> Response:
        return await chat_completions(ctx, request)

    async def embeddings_route(request: Request) -> Response:
        return await embeddings(ctx, request)

    async def models(request: Request) -> Response:
        try:
            key = await ctx.authorize(request, None)
        except Exception as exc:
            return error_response(exc)
        return JSONResponse({"object": "list", "data": _model_list(ctx, key)})

    return [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/embeddings", embeddings_route, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]


def _model_list(ctx: GatewayContext, key: KeyInfo) -> list[dict[str, Any]]:
    """The registry's providers as models (a key limited to some providers sees only those)."""
    allowed = key.key.providers if key.key is not None else None
    names = [name for name in ctx.registry.names() if allowed is None or name in allowed]
    return [{"id": name, "object": "model", "created": 0, "owned_by": "zeph-providers"} for name in names]


# ----- errors ------------------------------------------------------------------------------


def error_body(exc: BaseException) -> tuple[int, dict[str, str], dict[str, Any]]:
    status, headers = error_status(exc)
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    if status == 429 and error_code(exc) == "insufficient_quota":
        kind = "insufficient_quota"
    param = getattr(exc, "param", None)
    if param is None and error_code(exc) == "model_not_found":
        param = "model"
    body = {"error": {"message": error_message(exc), "type": kind, "param": param, "code": error_code(exc)}}
    return status, headers, body


def error_response(exc: BaseException) -> JSONResponse:
    """`exc` as OpenAI's error object with its status; unexpected errors are logged, not shown."""
    status, headers, body = error_body(exc)
    _log_error(exc, status)
    return JSONResponse(body, status_code=status, headers=headers)


def _log_error(exc: BaseException, status: int) -> None:
    if isinstance(exc, LlmError) or status < 500:
        log.info("gateway: %d %s: %s", status, type(exc).__name__, error_message(exc))
    else:
        log.error("gateway: unexpected error", exc_info=exc)


# ----- chat --------------------------------------------------------------------------------


async def chat_completions(ctx: GatewayContext, request: Request) -> Response:
    key: KeyInfo | None = None
    try:
        ctx.authenticate(request)  # before reading a body from an unknown client
        body = await ctx.read_json(request)
        model = body.get("model")
        key = await ctx.authorize(request, model if isinstance(model, str) else None)
        call = parse_chat(body, ctx)
        provider = ctx.provider(call.model)
        key.start(call.model, call.messages, call.kwargs.get("max_tokens"))
        if call.stream:
            async with ctx.track():  # counted while the first chunk is awaited, too
                stream = provider.chat_stream(call.messages, **call.kwargs)
                return await _open_stream(ctx, request, key, call, stream)
        async with ctx.track():
            response = await until_disconnect(request.receive, lambda: provider.chat(call.messages, **call.kwargs))
        await key.settle(response.usage.total_tokens, response.cost)
        if response.finish_reason == "error":
            raise BadResponseError("the upstream ended the reply with an error", provider=response.provider)
    except ClientDisconnected:
        if key is not None:
            await key.settle_unfinished()
        return Response(status_code=499)  # nobody reads it: the client is gone
    except Exception as exc:
        if key is not None:
            await key.settle()
        return error_response(exc)
    return JSONResponse(completion(call, response), headers=_reply_headers(response.provider, response.model))


def _reply_headers(provider: str, model: str) -> dict[str, str]:
    return {"x-zeph-provider": provider, "x-zeph-model": model}


def _ids() -> tuple[str, int]:
    return f"chatcmpl-{uuid.uuid4().hex}", int(time.time())


def usage_object(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _tool_call_object(call: ToolCall, fallback_id: str) -> dict[str, Any]:
    return {
        "id": call.id or fallback_id,
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
    }


def _logprobs(tokens: list[TokenLogprob] | tuple[TokenLogprob, ...] | None) -> dict[str, Any] | None:
    if tokens is None:
        return None
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": list(t.bytes) if t.bytes is not None else None,
                "top_logprobs": [
                    {"token": a.token, "logprob": a.logprob, "bytes": list(a.bytes) if a.bytes is not None else None}
                    for a in t.top_logprobs
                ],
            }
            for t in tokens
        ],
        "refusal": None,
    }


def completion(call: ChatRequest, response: ChatResponse) -> dict[str, Any]:
    """A `chat.completion` object for one reply."""
    completion_id, created = _ids()
    message: dict[str, Any] = {"role": "assistant", "content": response.text or None, "refusal": None}
    if response.tool_calls:
        message["tool_calls"] = [_tool_call_object(c, f"call_{i}") for i, c in enumerate(response.tool_calls)]
    if response.thinking:
        message["reasoning_content"] = response.thinking
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": call.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": _logprobs(response.logprobs),
                "finish_reason": _FINISH[response.finish_reason],
            }
        ],
        "usage": usage_object(response.usage),
        "system_fingerprint": None,
    }


async def _open_stream(ctx: GatewayContext, request: Request, key: KeyInfo, call: ChatRequest, stream: Any) -> Response:
    """Wait for the first chunk (errors before it get their HTTP status; a client that leaves
    meanwhile cancels it), then stream the rest."""
    try:
        first: StreamChunk | None = await until_disconnect(request.receive, stream.__anext__)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await stream.aclose()
        raise
    if first is not None:
        key.observe(first)
    completion_id, created = _ids()

    async def close() -> None:
        await stream.aclose()
        await key.settle_stream(stream)  # the usage, or what an unfinished stream produced

    events = _events(call, stream, key, first, completion_id, created)
    return EventStreamResponse(ctx, events, on_close=close, headers={"x-zeph-provider": stream.provider})


async def _events(
    call: ChatRequest,
    stream: AsyncIterator[StreamChunk],
    key: KeyInfo,
    first: StreamChunk | None,
    completion_id: str,
    created: int,
) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": call.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": extra.pop("logprobs", None), "finish_reason": finish}],
        }
        if call.include_usage:
            body["usage"] = None
        return sse_event(json.dumps(body, ensure_ascii=False))

    yield chunk({"role": "assistant", "content": ""})
    usage = Usage()
    streamed: set[int] = set()  # tool-call indices sent as deltas
    ids: dict[int, str] = {}
    finished = 0  # complete tool calls seen
    finish: str = "stop"

    async def chunks() -> AsyncIterator[StreamChunk]:
        if first is not None:
            yield first
        async for item in stream:
            key.observe(item)
            yield item

    try:
        async for item in chunks():
            if isinstance(item, ContentChunk):
                if item.text:
                    yield chunk({"content": item.text})
            elif isinstance(item, ThinkingChunk):
                if item.text:
                    yield chunk({"reasoning_content": item.text})
            elif isinstance(item, ToolCallDeltaChunk):
                delta: dict[str, Any] = {"index": item.index, "function": {"arguments": item.arguments}}
                if item.index not in streamed:
                    streamed.add(item.index)
                    ids[item.index] = item.id or f"call_{uuid.uuid4().hex[:24]}"
                    delta.update(id=ids[item.index], type="function")
                    delta["function"]["name"] = item.name
                yield chunk({"tool_calls": [delta]})
            elif isinstance(item, ToolUseChunk):
                index = finished
                finished += 1
                if index not in streamed:  # a backend that sends whole calls only
                    streamed.add(index)
                    yield chunk(
                        {"tool_calls": [{"index": index, **_tool_call_object(item.tool_call, f"call_{index}")}]}
                    )
            elif isinstance(item, LogprobsChunk):
                yield chunk({}, logprobs=_logprobs(item.tokens))
            elif isinstance(item, UsageChunk):
                usage = item.usage
            elif isinstance(item, EndChunk):
                if item.finish_reason == "error":
                    raise BadResponseError("the upstream ended the reply with an error", provider=item.provider)
                finish = _FINISH[item.finish_reason]
    except Exception as exc:
        _, _, body = error_body(exc)
        _log_error(exc, error_status(exc)[0])
        yield sse_event(json.dumps(body, ensure_ascii=False))
        yield sse_event("[DONE]")
        return
    yield chunk({}, finish)
    if call.include_usage:
        yield sse_event(
            json.dumps(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": call.model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": usage_object(usage),
                }
            )
        )
    yield sse_event("[DONE]")


# ----- embeddings --------------------------------------------------------------------------


async def embeddings(ctx: GatewayContext, request: Request) -> Response:
    key: KeyInfo | None = None
    try:
        ctx.authenticate(request)
        body = await ctx.read_json(request)
        model = body.get("model")
        key = await ctx.authorize(request, model if isinstance(model, str) else None)
        name, texts, dimensions, encoding = parse_embeddings(body)
        provider = ctx.provider(name)
        async with ctx.track():
            vectors = await provider.embed_batch(texts, dimensions=dimensions)
        tokens = sum(len(text.split()) for text in texts)  # an estimate: embed_batch reports no usage here
        await key.settle(tokens, None)
    except Exception as exc:
        if key is not None:
            await key.settle()
        return error_response(exc)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(vector, encoding)} for i, vector in enumerate(vectors)
    ]
    return JSONResponse(
        {"object": "list", "data": data, "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    )


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":  # what the openai client asks for by default: little-endian float32
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector
