"""The blocking twin of the async API, for scripts that do not use asyncio.

```python
from zeph_providers import BlockingRegistry, Message

with BlockingRegistry.from_toml("configs/example.toml") as registry:
    provider = registry.get("local")
    print(provider.chat([Message.user("Hi")]).text)
    with provider.chat_stream([Message.user("Tell me a story")]) as stream:
        for chunk in stream:
            ...
    stream.response                      # the assembled ChatResponse
```

One private event loop runs in a daemon thread per `BlockingRegistry`; every call is handed to it
with `asyncio.run_coroutine_threadsafe` and waited for. The async providers therefore keep a single
loop for their whole life (clients, semaphores and worker queues stay bound to it), and the blocking
API may be called from any number of threads at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from zeph_providers._inputs import messages_from
from zeph_providers.errors import LlmError
from zeph_providers.options import Capabilities, ChatKwargs
from zeph_providers.protocol import LlmProvider
from zeph_providers.registry import Registry
from zeph_providers.stream import ChatStream
from zeph_providers.types import ChatResponse, Message, MessageInput, StreamChunk

if TYPE_CHECKING:
    from zeph_providers.tools import Tool, ToolRun

__all__ = ["BlockingChatStream", "BlockingProvider", "BlockingRegistry"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="zeph-providers-loop", daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self.loop.is_closed()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for it; Ctrl-C or a timeout cancels it."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a blocking zeph_providers call was made from inside its own event loop")
        if not self.alive:
            coro.close()
            raise LlmError("the blocking registry is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise
        except BaseException:
            # KeyboardInterrupt in the waiting thread: do not leave the call running.
            if not future.done():
                future.cancel()
            raise

    def stop(self) -> None:
        if self.thread.is_alive() and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=10)


def _stop_loop(loop_thread: _LoopThread) -> None:
    loop_thread.stop()


class BlockingRegistry:
    """A `Registry` driven from ordinary (non-async) code; see the module docstring.

    Mirrors the async registry: `from_toml`, `from_dict`, `from_default`, `discover`, `get`,
    `names`, `default`, `embedder`; `close()` (or leaving a `with` block) closes every provider
    and stops the loop thread.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._loop = _LoopThread()
        self._wrappers: dict[str, BlockingProvider] = {}
        self._guard = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _stop_loop, self._loop)

    # ----- construction -------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], *, providers: Sequence[LlmProvider] = ()) -> BlockingRegistry:
        return cls(Registry.from_toml(path, providers=providers))

    @classmethod
    def from_toml_string(
        cls, text: str, *, source: str | None = None, providers: Sequence[LlmProvider] = ()
    ) -> BlockingRegistry:
        return cls(Registry.from_toml_string(text, source=source, providers=providers))

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: str | None = None, providers: Sequence[LlmProvider] = ()
    ) -> BlockingRegistry:
        return cls(Registry.from_dict(data, source=source, providers=providers))

    @classmethod
    def from_default(cls) -> BlockingRegistry:
        return cls(Registry.from_default())

    @classmethod
    def discover(cls, path: str | os.PathLike[str] | None = None) -> BlockingRegistry:
        return cls(Registry.discover(path))

    # ----- lookup -------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """The underlying async registry."""
        return self._registry

    @property
    def config(self) -> Any:
        return self._registry.config

    def names(self) -> list[str]:
        return self._registry.names()

    def __contains__(self, name: object) -> bool:
        return name in self._registry

    def add(self, provider: LlmProvider, *, close: bool = True) -> BlockingProvider:
        """`Registry.add`: a provider built in Python joins the registry; returns its blocking twin."""
        self._registry.add(provider, close=close)
        return self.get(provider.name)

    def get(self, name: str) -> BlockingProvider:
        """The provider called `name`, built on first use (on the registry's loop thread)."""
        if self._closed:
            raise LlmError("the blocking registry is closed", provider=name)
        wrapper = self._wrappers.get(name)
        if wrapper is not None:
            return wrapper
        provider = self._loop.run(self._build(name))
        with self._guard:
            wrapper = self._wrappers.get(name)
            if wrapper is None or wrapper.async_provider is not provider:
                wrapper = BlockingProvider(provider, self._loop, owner=self)
                self._wrappers[name] = wrapper
        return wrapper

    async def _build(self, name: str) -> LlmProvider:
        return self._registry.get(name)

    def default(self) -> BlockingProvider:
        return self.get(self._loop.run(self._name_of(self._registry.default)))

    def embedder(self) -> BlockingProvider:
        return self.get(self._loop.run(self._name_of(self._registry.embedder)))

    @staticmethod
    async def _name_of(pick: Any) -> str:
        provider: LlmProvider = pick()
        return provider.name

    # ----- lifetime -----------------------------------------------------------------

    def close(self) -> None:
        """Close every built provider, then stop the loop thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._loop.alive:
                self._loop.run(self._registry.aclose())
        finally:
            self._finalizer()

    def __enter__(self) -> BlockingRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<Blocking" + repr(self._registry).lstrip("<")


class BlockingProvider:
    """One provider with blocking methods; every call runs on its registry's loop thread.

    It holds its `BlockingRegistry` strongly (`owner`): the registry's finalizer stops the loop
    thread, so without this `BlockingRegistry.from_toml(path).get("local").chat(...)` lost its
    registry to the garbage collector while the call was still running ("the blocking registry
    is closed"). A provider, and a stream it opened, keep the registry and its loop alive.
    """

    def __init__(self, provider: LlmProvider, loop: _LoopThread, *, owner: BlockingRegistry | None = None) -> None:
        self._provider = provider
        self._loop = loop
        self._owner = owner

    @property
    def async_provider(self) -> LlmProvider:
        """The underlying async provider."""
        return self._provider

    @property
    def name(self) -> str:
        return self._provider.name

    @property
    def model(self) -> str:
        return self._provider.model

    @property
    def capabilities(self) -> Capabilities:
        return self._provider.capabilities

    def chat(self, messages: MessageInput, **options: Unpack[ChatKwargs]) -> ChatResponse:
        """One complete reply (the async `chat()`, waited for)."""
        return self._loop.run(self._provider.chat(messages_from(messages, provider=self.name), **options))

    def chat_stream(self, messages: MessageInput, **options: Unpack[ChatKwargs]) -> BlockingChatStream:
        """A streamed reply: iterate it (ideally in a `with` block); `.response` once exhausted."""
        message_list = messages_from(messages, provider=self.name)
        return BlockingChatStream(self._provider, message_list, options, self._loop, owner=self)

    def run_tools(
        self,
        messages: MessageInput,
        *,
        tools: Sequence[Callable[..., Any] | Tool],
        max_turns: int = 8,
        **options: Any,
    ) -> ToolRun:
        """`zeph_providers.tools.run_tools` on this provider, waited for (async tools run on the
        loop thread, sync ones in worker threads)."""
        from zeph_providers.tools import run_tools

        return self._loop.run(run_tools(self._provider, messages, tools=tools, max_turns=max_turns, **options))

    def embed(self, text: str, *, dimensions: int | None = None) -> list[float]:
        if dimensions is None:
            return self._loop.run(self._provider.embed(text))
        return self._loop.run(self._provider.embed(text, dimensions=dimensions))

    def embed_batch(self, texts: Sequence[str], *, dimensions: int | None = None) -> list[list[float]]:
        if dimensions is None:
            return self._loop.run(self._provider.embed_batch(list(texts)))
        return self._loop.run(self._provider.embed_batch(list(texts), dimensions=dimensions))

    def list_models(self, *, refresh: bool = False) -> list[Any]:
        """The async `list_models()` (`models_info.ModelInfo`s), waited for."""
        return self._loop.run(self._metadata("list_models", refresh=refresh))

    @property
    def context_window(self) -> int | None:
        window = getattr(self._provider, "context_window", None)
        return window if isinstance(window, int) else None

    def fetch_context_window(self) -> int | None:
        return self._loop.run(self._metadata("fetch_context_window"))  # type: ignore[no-any-return]

    def count_tokens(self, messages: MessageInput, **kwargs: Any) -> int:
        listed = messages_from(messages, provider=self.name)
        return self._loop.run(self._metadata("count_tokens", listed, **kwargs))  # type: ignore[no-any-return]

    async def _metadata(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self._provider, name, None)
        if method is None:
            from zeph_providers.errors import UnsupportedCapabilityError

            raise UnsupportedCapabilityError(name, provider=self._provider.name)
        return await method(*args, **kwargs)

    def status(self) -> Any:
        """The provider's own `status()` (routers report circuit-breaker state), if it has one."""
        status = getattr(self._provider, "status", None)
        if status is None:
            return None
        return self._loop.run(self._call(status))

    @staticmethod
    async def _call(function: Any) -> Any:
        value = function()
        if asyncio.iscoroutine(value):
            value = await value
        return value

    def __repr__(self) -> str:
        return "<Blocking" + repr(self._provider).lstrip("<")


class BlockingChatStream:
    """Iterator of stream chunks backed by an async `ChatStream` on the loop thread.

    Nothing is sent until the first `next()`. Closing it before the end (`close()`, leaving the
    `with` block, or `break` followed by garbage collection) cancels the async stream, which stops
    the request (the local backend stops generating).
    """

    def __init__(
        self,
        provider: LlmProvider,
        messages: list[Message],
        options: ChatKwargs,
        loop: _LoopThread,
        *,
        owner: BlockingProvider | None = None,
    ) -> None:
        self._loop = loop
        self._owner = owner  # keeps the registry (and so the loop thread) alive while the stream is
        self._closed = False
        # Built on the loop thread so that argument errors surface here, before iteration.
        self._stream: ChatStream = loop.run(self._open(provider, messages, options))

    @staticmethod
    async def _open(provider: LlmProvider, messages: list[Message], options: ChatKwargs) -> ChatStream:
        return provider.chat_stream(messages, **options)

    @property
    def response(self) -> ChatResponse:
        """The assembled response; raises until the stream has been read to the end."""
        return self._stream.response

    @property
    def done(self) -> bool:
        return self._stream.done

    def __iter__(self) -> Iterator[StreamChunk]:
        return self

    def __next__(self) -> StreamChunk:
        if self._closed:
            raise StopIteration
        try:
            chunk = self._loop.run(self._next())
        except BaseException:
            self.close()
            raise
        if chunk is None:
            self._closed = True
            raise StopIteration
        return chunk

    async def _next(self) -> StreamChunk | None:
        # A sentinel rather than StopAsyncIteration, which must not cross a Task/Future boundary.
        try:
            return await anext(self._stream)
        except StopAsyncIteration:
            return None

    def collect(self) -> ChatResponse:
        """Read the rest of the stream and return the assembled response."""
        for _ in self:
            pass
        return self.response

    def close(self) -> None:
        """Stop the stream early (cancels the request). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._loop.alive and threading.current_thread() is not self._loop.thread:
            # Already failed, or the loop is stopping: nothing is left to cancel.
            with contextlib.suppress(Exception):
                self._loop.run(self._stream.aclose())

    def __enter__(self) -> BlockingChatStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            stream = getattr(self, "_stream", None)
            loop = getattr(self, "_loop", None)
            if stream is not None and loop is not None and loop.alive:
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(stream.aclose(), loop.loop)
