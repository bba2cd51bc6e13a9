"""One llama.cpp request's streamed chunks, and what a batch shares with its helper threads.

Split from `llamacpp.py` (the engine). `Stream` is the callback xllamacpp calls with each chunk
on the calling thread: it forwards text to the `TokenSink`, counts steps from `timings`, cuts
the text at a trigger, keeps an error or a raised exception (xllamacpp swallows them) and
returns True to abort (llama.cpp then cancels the task within one token). `Rows` is one
`run_batch`'s abort flag and the rows now generating (which count the decode steps).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zeph_providers.local.engine import TokenSink
    from zeph_providers.local.llamacpp import LlamaCppEngine

__all__ = ["Rows", "Stream"]


class Rows:
    """What one `run_batch` shares with its helper threads: the abort flag and the rows now generating."""

    def __init__(self, engine: LlamaCppEngine, on_step: Callable[[int], None] | None) -> None:
        self.engine = engine
        self.on_step = on_step
        self.abort = threading.Event()
        """Set when the batch dies: every row stops within one token."""
        self._lock = threading.Lock()
        self._generating: dict[Stream, None] = {}
        """Rows that produced a token and have not returned yet, in the order they started."""

    def token(self, row: Stream) -> None:
        """A row produced a token (called on its helper thread, before its sink's `on_step`)."""
        with self._lock:
            if row not in self._generating:
                self._generating[row] = None
                self.engine.peak_rows = max(self.engine.peak_rows, len(self._generating))
            # llama.cpp decodes every generating slot once per step: the oldest row's tokens count the steps.
            if self.on_step is not None and next(iter(self._generating)) is row:
                self.on_step(len(self._generating))

    def leave(self, row: Stream) -> None:
        with self._lock:
            self._generating.pop(row, None)


class Stream:
    """Receives llama.cpp's streamed chunks on the calling thread; its return value aborts the request."""

    def __init__(self, sink: TokenSink, chat: bool, rows: Rows | None = None, watch: str | None = None) -> None:
        self.sink = sink
        self.chat = chat
        self.rows = rows
        self.watch = watch
        """A trigger: the request stops as soon as the streamed text contains it (text past it is cut)."""
        self.triggered = False
        self.text = ""
        self.steps = 0
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.timings: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.raised: BaseException | None = None
        self.cancelled = False

    def __call__(self, data: Any) -> bool:
        # xllamacpp swallows exceptions raised here (and a BaseException would be lost): keep it
        # and stop the request; `run` re-raises it on the worker thread.
        try:
            return self._handle(data)
        except BaseException as exc:
            self.raised = exc
            return True

    def _handle(self, data: Any) -> bool:
        if not isinstance(data, dict):
            self.error = {"message": f"unexpected reply from llama.cpp: {data!r:.200}"}
            return True
        if "error" in data or ("code" in data and "message" in data and "choices" not in data):
            error = data.get("error", data)
            self.error = error if isinstance(error, dict) else {"message": str(error)}
            return True
        for choice in data.get("choices") or ():
            if self.chat:
                delta = choice.get("delta") or {}
                text = (delta.get("reasoning_content") or "") + (delta.get("content") or "")
            else:
                text = choice.get("text") or ""
            if text and self.watch is not None and not self.triggered:
                text = self._until_trigger(text, self.watch)
            elif self.triggered:
                text = ""
            if text and not self.cancelled:
                self.text += text
                self.sink.on_text(text)
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        timings = data.get("timings")
        if isinstance(timings, dict):  # sent with every chunk (timings_per_token)
            self.timings = timings
            predicted = int(timings.get("predicted_n") or 0)
            while self.steps < predicted:  # one step per generated token, even if its text is held back
                self.steps += 1
                if self.rows is not None:
                    self.rows.token(self)
                self.sink.on_step()
        if self.sink.is_cancelled() or (self.rows is not None and self.rows.abort.is_set()):
            self.cancelled = True
            return True
        return self.triggered

    def _until_trigger(self, text: str, trigger: str) -> str:
        """`text`, cut right after `trigger` if the streamed text now contains it (then stop)."""
        start = max(0, len(self.text) - len(trigger) + 1)
        found = (self.text + text).find(trigger, start)
        if found < 0:
            return text
        self.triggered = True
        return text[: found + len(trigger) - len(self.text)]
