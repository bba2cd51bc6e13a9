"""Call hooks: one small event API that logging, metrics, cost tracking and user code subscribe to.

Every call made through a `BaseProvider` (chat, stream, embeddings; routers and their members
included) goes through three events, fired from the shared seam (`BaseProvider`, `ChatStream`),
never from a backend:

- `before_request(call)`: the request is about to be sent (a stream's first read; an embedding
  call's start). A hook may refuse the call by raising an `LlmError` (the budget check does);
  nothing is sent then.
- `after_attempt(call, attempt)`: one try ended (a retry, or the single try), with its `Attempt`.
- `after_call(call)`: the call ended: `call.response` (chat) or `call.error` is set, and
  `call.attempts` is complete. Fired for every call whose `before_request` fired.

```python
class Printer(Hook):
    def after_call(self, call: Call) -> None:
        print(call.provider, call.duration, call.error)

zeph_providers.hooks.add_hook(Printer())         # every provider in the process
registry.hooks.add(Printer())                    # the providers of one registry
provider.hooks.add(Printer())                    # one provider
```

A hook that raises anything but an `LlmError` from `before_request` (or anything from the other
two events) is logged and ignored: a broken subscriber never breaks a call. A router's member
calls are calls of their own, with `call.parent` naming the router's call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal

from zeph_providers.errors import LlmError

if TYPE_CHECKING:
    from zeph_providers.options import ChatOptions
    from zeph_providers.types import Attempt, ChatResponse, Message, Usage

__all__ = ["Call", "Hook", "Hooks", "add_hook", "current_call", "global_hooks", "remove_hook", "report_usage"]

log = logging.getLogger("zeph_providers.hooks")

Operation = Literal["chat", "embeddings"]


class Hook:
    """A subscriber: override any of the three methods (each does nothing by default)."""

    def before_request(self, call: Call) -> None:
        """The request is about to be sent; raise an `LlmError` to refuse it."""

    def after_attempt(self, call: Call, attempt: Attempt) -> None:
        """One try of the call ended."""

    def after_call(self, call: Call) -> None:
        """The call ended (`call.response` or `call.error` set)."""


class Hooks:
    """An ordered set of hooks, with an optional parent set whose hooks run after these."""

    def __init__(self, parent: Hooks | None = None) -> None:
        self._items: tuple[Hook, ...] = ()
        self._lock = threading.Lock()
        self.parent = parent

    def add(self, hook: Hook) -> Hook:
        with self._lock:
            if hook not in self._items:
                self._items = (*self._items, hook)
        return hook

    def remove(self, hook: Hook) -> None:
        with self._lock:
            self._items = tuple(h for h in self._items if h is not hook)

    def clear(self) -> None:
        with self._lock:
            self._items = ()

    def __iter__(self) -> Iterator[Hook]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def subscribers(self) -> tuple[Hook, ...]:
        """These hooks, then the parent's (then its parent's ...)."""
        found = self._items
        parent = self.parent
        while parent is not None:
            found = found + parent._items
            parent = parent.parent
        return found


_GLOBAL = Hooks()


def global_hooks() -> Hooks:
    """The process-wide hooks, which every provider's hooks end with."""
    return _GLOBAL


def add_hook(hook: Hook) -> Hook:
    """Subscribe `hook` to every call in the process."""
    return _GLOBAL.add(hook)


def remove_hook(hook: Hook) -> None:
    _GLOBAL.remove(hook)


_current: ContextVar[Call | None] = ContextVar("zeph_providers_current_call", default=None)


def report_usage(usage: Usage) -> None:
    """Add `usage` to the current call's `usage` (for backends: an embeddings reply's token counts,
    which the cost tracker prices). No-op outside a reported call."""
    call = _current.get()
    if call is not None:
        call.usage = usage if call.usage is None else call.usage + usage


def current_call() -> Call | None:
    """The call whose stream (or embedding) is being served in this task, if any."""
    return _current.get()


class Call:
    """One call as the hooks see it. Subscribers keep their own state in `data` (key it by module)."""

    def __init__(
        self,
        subscribers: tuple[Hook, ...],
        *,
        operation: Operation,
        provider: str,
        backend: str,
        model: str,
        options: ChatOptions | None = None,
        messages: list[Message] | None = None,
        texts: list[str] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.subscribers = subscribers
        self.operation: Operation = operation
        self.provider = provider
        """The configured provider name (`registry.get(name)`)."""
        self.backend = backend
        """The backend type (`openai`, `claude`, `ollama`, `local`, `mock`, `router`, ...)."""
        self.model = model
        """The requested model."""
        self.options = options
        self.messages = messages
        self.texts = texts
        self.attributes: dict[str, Any] = dict(attributes or {})
        """Backend facts for subscribers (e.g. `server.address`)."""
        self.parent: Call | None = None
        self.children: int = 0
        """Nested calls made on this call's behalf (a router's members)."""
        self.started = 0.0
        self.start_time_ns = 0
        self.duration: float | None = None
        self.time_to_first_chunk: float | None = None
        self.response: ChatResponse | None = None
        self.error: BaseException | None = None
        self.attempts: list[Attempt] = []
        self.own_attempts: list[Attempt] = []
        """The tries this call made itself (a router's member tries are its members' calls')."""
        self.cost: float | None = None
        self.usage: Usage | None = None
        """Token counts of a call that has no chat reply (embeddings), as its backend reported them
        (`report_usage`); a chat call's are `response.usage`."""
        self.data: dict[str, Any] = {}
        self.ended = False

    @property
    def streaming(self) -> bool:
        return bool(self.options is not None and self.options.stream)

    @property
    def ok(self) -> bool:
        return self.ended and self.error is None

    # ----- firing (the seam calls these) --------------------------------------------

    def begin(self) -> None:
        self.parent = _current.get()
        if self.parent is not None:
            self.parent.children += 1
        self.started = time.perf_counter()
        self.start_time_ns = time.time_ns()
        for hook in self.subscribers:
            try:
                hook.before_request(self)
            except LlmError as exc:  # refused: the call ends here, before anything is sent
                self.end(error=exc, attempts=[])
                raise
            except Exception:
                log.exception("hook %r failed in before_request", hook)

    def attempt(self, attempt: Attempt) -> None:
        self.own_attempts.append(attempt)
        for hook in self.subscribers:
            try:
                hook.after_attempt(self, attempt)
            except Exception:
                log.exception("hook %r failed in after_attempt", hook)

    def end(
        self,
        *,
        response: ChatResponse | None = None,
        error: BaseException | None = None,
        attempts: list[Attempt] | None = None,
    ) -> None:
        if self.ended:
            return
        self.ended = True
        self.duration = time.perf_counter() - self.started
        self.response = response
        self.error = error
        if attempts is not None:
            self.attempts = list(attempts)
        for hook in self.subscribers:
            try:
                hook.after_call(self)
            except Exception:
                log.exception("hook %r failed in after_call", hook)

    def enter(self) -> Any:
        """Make this the current call (its nested calls see it as `parent`); returns the reset token."""
        return _current.set(self)

    @staticmethod
    def leave(token: Any) -> None:
        _current.reset(token)

    def __repr__(self) -> str:
        return f"<Call {self.operation} provider={self.provider!r} model={self.model!r}>"
