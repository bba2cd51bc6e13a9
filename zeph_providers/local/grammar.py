"""Grammar-constrained decoding for the transformers engine (llguidance), one matcher per row.

- `GrammarCompiler`: bound to one tokenizer, built once per engine. Its llguidance tokenizer is
  made lazily, at the first constrained request, on the worker thread (~0.5 s for SmolLM2's 49K
  vocabulary). Compiled grammars are kept in a bounded LRU keyed by `Constraint.schema_key` (and
  whether the constraint has a trigger); a hit deep-copies a pristine matcher (~15 us). `compiles`
  and `hits` count misses and hits (tests, stats).
- `RowMatcher`: one row's grammar state: `apply(scores)` sets every token the grammar forbids to
  -inf on that row's logits (before the row's own processors and sampling), `consume(token)`,
  `is_complete()` (the value may end here), `is_stopped()` (nothing but eos may follow), `reset()`.
- `Guide`: the `Constraint` semantics on top of a matcher, shared by the solo (`generate`) and
  batched paths. Without a trigger the row is constrained from its first token and is `done` once
  the value is complete (the engine ends it with finish "stop"; eos is allowed only where the
  grammar accepts). With a trigger the row is free until the generated text (seeded with the
  prompt's prefill, decoded with special tokens, so a trigger spanning tokens is found) contains
  it; then it is constrained until the value is complete, then free again (re-armed with `rearm`).
  Text a triggering token carries after the trigger is fed to the grammar. While a row is
  constrained, stop strings do not cut it: the grammar decides.

JSON is compact (separators "," and ":", no free whitespace) so a model cannot pad a value with
endless whitespace; after a trigger, up to one newline's worth of whitespace may precede the value.
Objects are strict: where a schema does not say `additionalProperties` (pydantic's schemas never
do), it is taken as false, as OpenAI's strict mode and xgrammar's default do. Otherwise the grammar
lets a model add keys of unbounded text after the declared ones (seen on the tiny model: it never
closed the object).
A schema llguidance rejects is an `InvalidRequestError` naming the problem.

Why llguidance (measured on SmolLM2-135M's tokenizer, vocabulary 49152, 2 shared CPU cores, one
script loading the tokenizer through the project's loader and walking a 41-token JSON reply through
each library; December 2026):

| | llguidance 1.9.1 | xgrammar 0.2.9 |
|---|---|---|
| import | 9-17 ms | 112 ms (pulls triton + torch) |
| tokenizer/grammar init | 490-580 ms | 280 ms |
| schema compile, cold (5 fields, nested, enum, list) | 2-4 ms | 13 ms |
| compile, cached | 0.015 ms (deep copy) / 1-1.4 ms (new matcher) | 0.15 ms |
| mask per token, median / p90 / max | 26-50 / 175-330 / 1600-2700 us | 3 / 36 / 150 us |

A decode step on this machine costs ~75 ms (13 tok/s), so either library's mask is well under 1%
of a step; llguidance is light (no torch/triton dependency of its own), compiles faster, rejects
bad schemas with readable messages, and was the expected choice, so it is the one used. Its torch
helper `apply_token_bitmask_inplace` is decorated with `torch.compile` (slow first call on CPU),
so masks are applied here with plain tensor ops.

In the engine (`python bench/bench_constrained.py`, SmolLM2, transformers engine, machine at load
3-5): llguidance tokenizer init 1.2-2.2 s at first use, schema compile cold 2.7-11 ms, cached
0.02-0.04 ms. Validity over 50 prompts at temperature 0.8: constrained 50/50; raw `model.generate`
with the schema in the prompt and no constraint 0/50 (0/50 even after trimming to the outermost
braces). Decode speed, same prompt and token count: the first version applied the mask with ~6
torch ops per token and ran at 0.70-0.75x of unconstrained (each op on a 49K row wakes the OpenMP
pool; on a loaded 2-core machine that cost ~35 ms a token); writing the mask through a numpy view
gave 1.13x (noise: 10 prompts, 3 runs, machine shared), i.e. no measurable cost.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from zeph_providers.errors import InferenceError, InvalidRequestError
from zeph_providers.local.engine import JSON_LAYOUT, Constraint, closed_objects

__all__ = ["GrammarCompiler", "Guide", "RowMatcher", "strict_schema"]

_LEADING_SPACE = r"/[ \t]{1,4}|[ \t]{0,4}(\r?\n)[ \t]{0,4}/"
_COMPACT = JSON_LAYOUT


strict_schema = closed_objects
"""The former name of `local.tooling.closed_objects` (objects closed unless the schema chooses)."""


class GrammarCompiler:
    """A tokenizer-bound JSON-schema compiler with a bounded LRU of compiled grammars."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        vocab_size: int,
        eos_ids: Sequence[int],
        provider: str | None = None,
        cache_size: int = 64,
    ) -> None:
        self._hf_tokenizer = tokenizer
        self.vocab_size = vocab_size
        """Width of the model's logits rows (masks cover it; tokens past the tokenizer are forbidden)."""
        self.eos_ids = [int(i) for i in eos_ids]
        self.provider = provider
        self.cache_size = cache_size
        self._ll_tokenizer: Any = None
        self._cache: OrderedDict[tuple[str, bool], Any] = OrderedDict()
        self.compiles = 0
        """Cache misses: grammars built from a schema."""
        self.hits = 0

    @property
    def ll_tokenizer(self) -> Any:
        """The llguidance tokenizer, built at first use (expensive: about half a second)."""
        if self._ll_tokenizer is None:
            from copy import copy

            import llguidance

            backend = copy(self._hf_tokenizer.backend_tokenizer)
            backend.no_padding()
            backend.no_truncation()
            eos: Any = self.eos_ids or None
            self._ll_tokenizer = llguidance.LLTokenizer(backend.to_str(), n_vocab=self.vocab_size, eos_token=eos)
        return self._ll_tokenizer

    def _grammar(self, constraint: Constraint) -> str:
        import llguidance

        try:
            schema = strict_schema(constraint.schema)
            if constraint.trigger is None:
                return str(llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_COMPACT))  # type: ignore[arg-type]
            guidance = dict(schema.get("x-guidance") or {})
            schema["x-guidance"] = {**_COMPACT, **guidance}
            lark = f"start: SPACE? value\nSPACE: {_LEADING_SPACE}\nvalue: %json {json.dumps(schema)}\n"
            return str(llguidance.LLMatcher.grammar_from_lark(lark))
        except (ValueError, TypeError) as exc:
            raise InvalidRequestError(f"the JSON schema cannot be compiled: {exc}", provider=self.provider) from exc

    def matcher(self, constraint: Constraint) -> RowMatcher:
        """A fresh matcher for `constraint` (compiled once per schema, then copied)."""
        import llguidance

        key = (constraint.schema_key, constraint.trigger is not None)
        pristine = self._cache.get(key)
        if pristine is not None:
            self._cache.move_to_end(key)
            self.hits += 1
        else:
            grammar = self._grammar(constraint)
            pristine = llguidance.LLMatcher(self.ll_tokenizer, grammar, log_level=0)
            if pristine.is_error():
                raise InvalidRequestError(
                    f"the JSON schema cannot be used for constrained decoding: {pristine.get_error()}",
                    provider=self.provider,
                )
            self.compiles += 1
            self._cache[key] = pristine
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return RowMatcher(pristine.deep_copy(), self.vocab_size, provider=self.provider)


class RowMatcher:
    """One row's grammar state (an llguidance matcher and its mask buffer)."""

    def __init__(self, matcher: Any, vocab_size: int, *, provider: str | None = None) -> None:
        import numpy as np

        self._matcher = matcher
        self.vocab_size = vocab_size
        self.provider = provider
        self._words = (vocab_size + 31) // 32
        self._bitmask = np.full((self._words,), -1, dtype=np.int32)

    def allowed(self) -> Any:
        """A numpy bool array (vocab_size,): the tokens the grammar allows next."""
        import numpy as np

        self._check()
        self._matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._words * 4)
        self._check()
        bits = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")
        return bits[: self.vocab_size].astype(bool)

    def apply(self, scores: Any) -> Any:
        """Forbidden tokens to -inf on `scores` ((vocab,) or (1, vocab)), in place; returns `scores`.

        On CPU the mask is written through a numpy view: single-threaded, no torch op (each torch op
        on a 49K row wakes the OpenMP pool, which cost ~35 ms a token on a loaded 2-core machine).
        """
        import numpy as np
        import torch

        allowed = self.allowed()
        width = scores.shape[-1]
        if scores.device.type == "cpu" and scores.is_contiguous() and scores.dtype in (torch.float32, torch.float64):
            row = scores.numpy().reshape(-1)
            row[self.vocab_size :] = -np.inf
            row[: self.vocab_size][~allowed[:width]] = -np.inf
            return scores
        forbid = torch.from_numpy(~allowed).to(scores.device)
        if width > self.vocab_size:
            scores[..., self.vocab_size :] = float("-inf")
        scores[..., : self.vocab_size].masked_fill_(forbid[:width], float("-inf"))
        return scores

    def consume(self, token_id: int) -> None:
        """Advance past `token_id`; a token the grammar forbids is an `InferenceError`."""
        if not self._matcher.consume_token(int(token_id)):
            self._check()

    def consume_tokens(self, token_ids: Sequence[int]) -> bool:
        """Advance past several tokens; False (matcher left in error) when they do not fit."""
        return bool(self._matcher.consume_tokens([int(t) for t in token_ids]))

    def is_complete(self) -> bool:
        """The value may end here (the grammar accepts)."""
        return bool(self._matcher.is_accepting())

    def is_stopped(self) -> bool:
        """Nothing but eos may follow."""
        return bool(self._matcher.is_stopped())

    def is_error(self) -> bool:
        return bool(self._matcher.is_error())

    def reset(self) -> None:
        self._matcher.reset()

    def _check(self) -> None:
        if self._matcher.is_error():
            raise InferenceError(f"constrained decoding failed: {self._matcher.get_error()}", provider=self.provider)


class Guide:
    """A row's `Constraint`: when to mask, what the grammar has seen, and when the value is done."""

    def __init__(self, matcher: RowMatcher, constraint: Constraint, tokenizer: Any, *, prefill: str = "") -> None:
        self.matcher = matcher
        self.constraint = constraint
        self._tokenizer = tokenizer
        self.active = constraint.trigger is None
        """Whether the next token is constrained."""
        self.done = False
        """Trigger-less constraint: the value is complete (the row ends with finish "stop")."""
        self._spent = False
        self._watch = ""
        if constraint.trigger is not None and prefill:
            self._watch_text(prefill)

    def apply(self, scores: Any) -> Any:
        """Mask `scores` for the next token when the row is constrained."""
        return self.matcher.apply(scores) if self.active else scores

    def advance(self, token_id: int) -> None:
        """Account for one generated (non-eos) token."""
        if self.done:
            return
        if self.active:
            self.matcher.consume(token_id)
            self._after_value()
            return
        if self.constraint.trigger is None or self._spent:
            return
        self._watch_text(str(self._tokenizer.decode([int(token_id)], skip_special_tokens=False)))

    def _watch_text(self, text: str) -> None:
        trigger = self.constraint.trigger
        assert trigger is not None
        self._watch += text
        at = self._watch.find(trigger)
        if at < 0:
            keep = len(trigger) - 1
            self._watch = self._watch[-keep:] if keep else ""
            return
        rest = self._watch[at + len(trigger) :]
        self._watch = ""
        self.matcher.reset()
        self.active = True
        if rest:
            ids = self._tokenizer(rest, add_special_tokens=False)["input_ids"]
            if not self.matcher.consume_tokens(ids):  # the trigger's token carried text the grammar refuses
                self.matcher.reset()
                self.active = False
                return
            self._after_value()

    def _after_value(self) -> None:
        if not self.matcher.is_stopped():
            return
        if self.constraint.trigger is None:
            self.done = True
            return
        self.active = False
        self._spent = not self.constraint.rearm
