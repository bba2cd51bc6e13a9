"""Regression tests for wire-parsing bugs (issue 10): the real OpenAI provider reads SSE bytes
delivered in chosen network chunks through a `httpx2.MockTransport`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx2

from zeph_providers.backends.openai import OpenAIProvider
from zeph_providers.config import CompatibleConfig
from zeph_providers.types import ContentChunk, Message, ToolUseChunk

HELLO = [Message.user("Say hello.")]


def _event(text: str, *, eol: str, finish: str | None = None) -> str:
    payload = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    return f"data: {json.dumps(payload)}{eol}{eol}"


def _provider(pieces: list[bytes]) -> OpenAIProvider:
    def handler(request: httpx2.Request) -> httpx2.Response:
        async def body() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return OpenAIProvider(
        CompatibleConfig(name="local", model="m", base_url="http://127.0.0.1:9/v1"),
        transport=httpx2.MockTransport(handler),
    )


async def _text(pieces: list[bytes]) -> str:
    async with _provider(pieces) as provider:
        stream = provider.chat_stream(HELLO)
        return "".join([c.text async for c in stream if isinstance(c, ContentChunk)])


async def test_crlf_split_across_network_chunks() -> None:
    wire = (_event("Hel", eol="\r\n") + _event("lo", eol="\r\n", finish="stop") + "data: [DONE]\r\n\r\n").encode()
    # cut right after every CR so each LF arrives in the next network chunk
    pieces: list[bytes] = []
    start = 0
    for i, byte in enumerate(wire):
        if byte == ord("\r"):
            pieces.append(wire[start : i + 1])
            start = i + 1
    pieces.append(wire[start:])
    assert await _text(pieces) == "Hello"


async def test_network_chunk_without_line_break_is_kept() -> None:
    wire = (_event("Hel", eol="\n") + _event("lo", eol="\n", finish="stop") + "data: [DONE]\n\n").encode()
    pieces = [wire[i : i + 7] for i in range(0, len(wire), 7)]
    assert any(b"\n" not in p for p in pieces)
    assert await _text(pieces) == "Hello"


async def test_cr_ending_a_chunk_inside_a_multiline_event() -> None:
    """A CR closing one network chunk and its LF opening the next are one line break, not two:
    a spurious blank line would cut this two-line `data:` event in half."""
    whole = _event("Hello", eol="", finish="stop")[len("data: ") :]
    cut = whole.index('"choices"')
    first = f"data: {whole[:cut]}\r".encode()
    rest = f"\ndata: {whole[cut:]}\r\n\r\ndata: [DONE]\r\n\r\n".encode()
    assert await _text([first, rest]) == "Hello"


def _delta_event(delta: dict[str, object], finish: str | None = None) -> str:
    payload = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(payload)}\n\n"


async def test_indexless_tool_call_fragment_with_new_id_opens_a_new_call() -> None:
    def call(call_id: str, name: str) -> dict[str, object]:
        fn = {"name": name, "arguments": "{}"}
        return {"tool_calls": [{"id": call_id, "type": "function", "function": fn}]}

    wire = _delta_event(call("call_a", "first")) + _delta_event(call("call_b", "second"))
    wire += _delta_event({}, finish="tool_calls") + "data: [DONE]\n\n"
    async with _provider([wire.encode()]) as provider:
        stream = provider.chat_stream(HELLO)
        calls = [c.tool_call async for c in stream if isinstance(c, ToolUseChunk)]
    assert [(c.id, c.name) for c in calls] == [("call_a", "first"), ("call_b", "second")]
