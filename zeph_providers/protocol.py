"""The provider protocol: what every backend offers, whatever it is built on.

`BaseProvider` (zeph_providers.base) implements it for the built-in backends; a plugin may too,
or implement these members directly. The request contract lives in `zeph_providers.options`
(`ChatKwargs`, `ChatOptions`, `Capabilities`), streams in `zeph_providers.stream`
(`ChatStream`, `ResponseAssembler`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, Unpack, runtime_checkable

from zeph_providers._compat import moved_names
from zeph_providers.options import ChatKwargs
from zeph_providers.types import ChatResponse, Message, MessageInput

if TYPE_CHECKING:
    from zeph_providers.base import BaseProvider
    from zeph_providers.options import Capabilities, ChatOptions, ResponseFormat
    from zeph_providers.stream import ChatStream, ResponseAssembler

__all__ = [
    "BaseProvider",
    "Capabilities",
    "ChatKwargs",
    "ChatOptions",
    "ChatStream",
    "LlmProvider",
    "ResponseAssembler",
    "ResponseFormat",
]


@runtime_checkable
class LlmProvider(Protocol):
    """What every backend offers. Use `zeph_providers.base.BaseProvider` to implement one.

    `open_stream(messages, options)` is the call every other one reduces to: `chat()` and
    `chat_stream()` build `ChatOptions` from their keywords and open a stream; a router opens its
    members' streams with its own options (and its deadline) directly. `default_timeout` is what a
    call without `timeout` gets.

    `chat()` / `chat_stream()` take a `MessageInput` (a str, a `Message`, an OpenAI-style dict, or
    a list of messages and dicts); an implementation not built on `BaseProvider` turns it into
    `list[Message]` with `zeph_providers.messages_from(messages, provider=self.name)`, which raises
    the typed `InvalidRequestError` for anything else. `open_stream` takes messages already made.
    """

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def default_timeout(self) -> float | None: ...

    async def chat(self, messages: MessageInput, **kwargs: Unpack[ChatKwargs]) -> ChatResponse: ...

    def chat_stream(self, messages: MessageInput, **kwargs: Unpack[ChatKwargs]) -> ChatStream: ...

    def open_stream(self, messages: Sequence[Message], options: ChatOptions) -> ChatStream: ...

    async def embed(self, text: str, *, dimensions: int | None = None) -> list[float]: ...

    async def embed_batch(self, texts: Sequence[str], *, dimensions: int | None = None) -> list[list[float]]: ...

    async def aclose(self) -> None: ...


_MOVED = {
    "Capabilities": "zeph_providers.options",
    "ChatOptions": "zeph_providers.options",
    "ResponseFormat": "zeph_providers.options",
    "BaseProvider": "zeph_providers.base",
    "ChatStream": "zeph_providers.stream",
    "ResponseAssembler": "zeph_providers.stream",
}


__getattr__ = moved_names(__name__, _MOVED)
