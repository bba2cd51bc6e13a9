"""Ollama's `/api/chat` reply -> our chunks: the message-object translator and the finish reason.

Split from `ollama.py` (the provider: capabilities, request, transport, errors). `chat_chunks`
takes the `/api/chat` message objects (plain dicts, from a stream's NDJSON lines or a
non-streamed body alike) and checks each the way the SDK's model would; a part of another shape
is `BadResponseError`. A forced tool's reply (see `_ollama_request`) is held, not streamed as
text, and parsed into the call at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from zeph_providers.backends._convert import map_finish_reason
from zeph_providers.backends._ollama_request import parse_forced_call
from zeph_providers.backends._tools import ToolCallAccumulator
from zeph_providers.errors import BadResponseError
from zeph_providers.types import (
    ContentChunk,
    EndChunk,
    FinishReason,
    StreamChunk,
    ThinkingChunk,
    ToolDefinition,
    Usage,
    UsageChunk,
)

__all__ = ["chat_chunks", "finish_reason"]


def _shape_error(what: str, provider: str) -> BadResponseError:
    return BadResponseError(f"the server sent a message of an unexpected shape ({what})", provider=provider)


async def chat_chunks(
    parts: AsyncIterator[dict[str, Any]], forced: list[ToolDefinition] | None, provider: str
) -> AsyncIterator[StreamChunk]:
    """`/api/chat` message objects (plain dicts, checked as the SDK's model would) -> chunks.

    Each complete call Ollama sends becomes one `ToolCallDeltaChunk` (its whole arguments as
    JSON text) and its `ToolUseChunk`. With a `forced` tool the text is the call's JSON object
    (constrained by `format`): held, not streamed as text, and parsed into the call at the end.
    """
    calls_seen = ToolCallAccumulator(provider=provider)
    index = 0
    forced_text: list[str] = []
    async for part in parts:
        message = part.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _shape_error("`message` is not a message object with a `role`", provider)
        thinking = message.get("thinking")
        content = message.get("content")
        if not isinstance(thinking, str | None) or not isinstance(content, str | None):
            raise _shape_error("`message.content` / `message.thinking` is not text", provider)
        if thinking:
            yield ThinkingChunk(text=thinking)
        if content and forced is not None:
            forced_text.append(content)
        elif content:
            yield ContentChunk(text=content)
        calls = message.get("tool_calls")
        if not isinstance(calls, list | None):
            raise _shape_error("`message.tool_calls` is not a list", provider)
        for call in calls or ():
            function = call.get("function") if isinstance(call, dict) else None
            name = function.get("name") if isinstance(function, dict) else None
            raw_arguments = function.get("arguments") if isinstance(function, dict) else None
            if not isinstance(name, str) or not isinstance(raw_arguments, dict):
                raise _shape_error("a tool call without a function name and an arguments object", provider)
            for chunk in [*calls_seen.add(index, None, name, raw_arguments), *calls_seen.finish(index)]:
                yield chunk
            index += 1
        done = part.get("done")
        if not isinstance(done, bool | None):
            raise _shape_error("`done` is not a boolean", provider)
        if done:
            prompt_tokens = part.get("prompt_eval_count")
            output_tokens = part.get("eval_count")
            reason = part.get("done_reason")
            model = part.get("model")
            if not all(
                isinstance(v, int | None) and not isinstance(v, bool) and (v or 0) >= 0
                for v in (prompt_tokens, output_tokens)
            ):
                raise _shape_error("a token count is not a non-negative integer", provider)
            if not isinstance(reason, str | None) or not isinstance(model, str | None):
                raise _shape_error("`done_reason` / `model` is not text", provider)
            # No billing cache: `prompt_eval_count` is all input (`Usage`: uncached input).
            if forced is not None and index == 0:
                name, arguments = parse_forced_call("".join(forced_text), forced, reason, provider=provider)
                for chunk in [*calls_seen.add(index, None, name, arguments), *calls_seen.finish(index)]:
                    yield chunk
                index += 1
            elif forced_text:  # the server sent its own tool calls after all: the text is just text
                yield ContentChunk(text="".join(forced_text))
            yield UsageChunk(usage=Usage(input_tokens=prompt_tokens or 0, output_tokens=output_tokens or 0))
            yield EndChunk(finish_reason=finish_reason(reason, index > 0), model=model or "")
            return
    raise BadResponseError("the stream ended before Ollama sent its final (done) message", provider=provider)


def finish_reason(reason: str | None, has_tool_calls: bool) -> FinishReason:
    finish = map_finish_reason(reason or "stop")
    if has_tool_calls and finish == "stop":
        return "tool_use"
    return finish
