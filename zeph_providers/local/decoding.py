"""Decoding helpers shared by the transformers engine and its batching: incremental detokenising
(never splitting a character) and stop strings (cut at the first one, holding back a possible start).

Inside a constrained span (see `local.grammar.Guide`) text goes through `StopMatcher.passthrough`:
stop strings do not cut a JSON value the grammar is still building."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zeph_providers.local.engine import GenerationParams

__all__ = ["IncrementalDecoder", "StopMatcher", "logits_processors"]


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

    def passthrough(self, delta: str) -> str:
        """Text emitted without looking for stop strings (a constrained span: the grammar decides)."""
        if self.hit:
            return ""
        text, self._pending = self._pending + delta, ""
        return text

    def flush(self) -> str:
        text, self._pending = ("" if self.hit else self._pending), ""
        return text


def logits_processors(params: GenerationParams) -> list[Any]:
    """transformers' logits processors for one request, in `generate`'s order (repeat penalty, temperature,
    top-k, top-p). Used by the batch loop for every row and by `generate` under a grammar, where the
    grammar's mask must come first."""
    from transformers import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    out: list[Any] = []
    if params.repeat_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(params.repeat_penalty))
    if not params.greedy:
        if params.temperature != 1.0:
            out.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k:
            out.append(TopKLogitsWarper(top_k=params.top_k))
        if params.top_p is not None and params.top_p < 1.0:
            out.append(TopPLogitsWarper(top_p=params.top_p))
    return out
