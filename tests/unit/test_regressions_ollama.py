"""Regression tests for the Ollama NDJSON reader (issue 10): an `{"error": ...}` line inside a 200
reply is a typed error, never skipped. The real `OllamaProvider` reads bytes from an
`httpx.MockTransport` (the SDK's `AsyncClient` takes the transport), so nothing depends on timing.

Each reply puts a complete `done` line *after* the error line: a reader that ignored the error would
end the call with a normal, successful reply, so every test here fails if the line is ignored.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from zeph_providers.backends.ollama import OllamaProvider
from zeph_providers.config import OllamaConfig
from zeph_providers.errors import ContextLengthError, LlmError, ProviderUnavailableError
from zeph_providers.types import ContentChunk, Message

HELLO = [Message.user("Say hello.")]
ERROR_TEXT = "model runner has unexpectedly stopped"


def _line(content: str, *, done: bool = False) -> dict[str, Any]:
    line: dict[str, Any] = {
        "model": "m",
        "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    if done:
        line.update(done_reason="stop", prompt_eval_count=3, eval_count=2)
    return line


def _ndjson(*lines: dict[str, Any]) -> list[bytes]:
    """One network chunk per line, as Ollama flushes them."""
    return [json.dumps(line).encode() + b"\n" for line in lines]


def _provider(pieces: list[bytes], chat_paths: list[str]) -> OllamaProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/show":
            return httpx.Response(200, json={"model_info": {}, "capabilities": ["completion", "tools"]})
        chat_paths.append(request.url.path)

        async def body() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

        return httpx.Response(200, headers={"content-type": "application/x-ndjson"}, content=body())

    config = OllamaConfig(name="ollama-reg", model="m", base_url="http://ollama.invalid:11434", max_retries=0)
    return OllamaProvider(config, transport=httpx.MockTransport(handler))


def _error_reply(error: Any = ERROR_TEXT) -> list[bytes]:
    return _ndjson(_line("Hel"), {"error": error}, _line("lo"), _line("", done=True))


async def test_control_the_same_reply_without_the_error_line_succeeds() -> None:
    """The reply the other tests use, minus its error line, is a normal answer (so they test the line)."""
    seen: list[str] = []
    async with _provider(_ndjson(_line("Hel"), _line("lo"), _line("", done=True)), seen) as provider:
        resp = await provider.chat(HELLO)
    assert (resp.text, resp.finish_reason) == ("Hello", "stop")


async def test_streamed_error_line_is_a_typed_error_after_the_text_before_it() -> None:
    seen: list[str] = []
    received: list[str] = []
    async with _provider(_error_reply(), seen) as provider:
        with pytest.raises(LlmError) as info:
            async with provider.chat_stream(HELLO) as stream:
                async for chunk in stream:
                    if isinstance(chunk, ContentChunk):
                        received.append(chunk.text)
    error = info.value
    assert type(error) is ProviderUnavailableError, repr(error)
    assert ERROR_TEXT in str(error)
    assert error.provider == "ollama-reg"
    assert received == ["Hel"], "text before the error line reaches the caller; nothing after it does"
    assert not stream.done
    assert seen == ["/api/chat"]  # after the first chunk: never retried


async def test_error_line_in_a_non_streamed_reply_is_a_typed_error() -> None:
    """`chat()` reads the same NDJSON when the server streams anyway: the error line is not skipped."""
    seen: list[str] = []
    async with _provider(_error_reply(), seen) as provider:
        with pytest.raises(ProviderUnavailableError) as info:
            await provider.chat(HELLO)
    assert ERROR_TEXT in str(info.value)
    assert info.value.provider == "ollama-reg"


async def test_error_line_about_the_context_is_context_length_error() -> None:
    seen: list[str] = []
    error = "input length exceeds the context length"
    async with _provider(_error_reply(error), seen) as provider:
        with pytest.raises(ContextLengthError) as info:
            async with provider.chat_stream(HELLO) as stream:
                async for _ in stream:
                    pass
    assert "context length" in str(info.value)
