"""Decoding helpers shared by the transformers engine and its batching: incremental detokenising
(never splitting a character) and stop strings (cut at the first one, holding back a possible start)."""

from __future__ import annotations

from typing import Any

__all__ = ["IncrementalDecoder", "StopMatcher"]


class IncrementalDecoder:
    """Token ids in, text deltas out; never splits a multi-byte character (waits for the rest)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    def push(self, token_id: int) -> str:
        # Decode a small window that starts one step back, so tokenizers that drop a leading
        # space at a boundary (sentencepiece) still produce the right delta.
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        now = self._decode(self._ids[self._prefix :])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return now[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is left at the end (an incomplete character decodes to U+FFFD)."""
        if self._read >= len(self._ids):
            return ""
        before = self._decode(self._ids[self._prefix : self._read])
        now = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return now[len(before) :]


class StopMatcher:
    """Cuts the text at the first stop string, holding back any tail that may begin one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = stops
        self._pending = ""
        self.hit = False

    def feed(self, delta: str) -> str:
        """Text that is safe to emit now."""
        if self.hit:
            return ""
        if not self._stops:
            return delta
        buffer = self._pending + delta
        cut = min((i for i in (buffer.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            self._pending = ""
            return buffer[:cut]
        hold = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), hold, -1):
                if buffer.endswith(stop[:size]):
                    hold = size
                    break
        self._pending = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold]

    def flush(self) -> str:
        text, self._pending = ("" if self.hit else self._pending), ""
        return text
