"""Continuous batching for the transformers engine: several requests share each forward pass.

Why: on a small CPU a decode step costs about the same for 1 row as for 8 (the weights are read
once per step either way), so running waiting requests together multiplies aggregate throughput
(SmolLM2-135M, 2 cores: ~13 tok/s alone, ~60 tok/s for 8 rows).

How: a hand-written decode loop over one left-padded batch with a shared `DynamicCache`.

- Rows join at any step: the newcomers' prompts are prefilled together in their own pass, then
  their key/value cache is left-padded (or the running batch's is) to a common length and
  concatenated on the batch axis. The 2-D attention mask hides every padding column and each row
  keeps its own `position_ids`, so a row sees exactly what it would see alone (greedy output equals
  the solo answer up to floating-point rounding of differently shaped matmuls).
- Rows leave as soon as they end (eos, stop string, `max_tokens`, cancellation): their cache rows
  are dropped and any leading columns that are padding for every remaining row are trimmed.
- Each row samples with its own settings (temperature, top-p, top-k, repeat penalty, seed: a
  private `torch.Generator`), using transformers' own logits processors in `generate`'s order, and
  streams its own text through its own sink (incremental decoding and stop strings per row).
- Constrained decoding (`local.grammar`): each row has its OWN `Guide` (grammar matcher), or none
  (unconstrained). A constrained row's logits get its grammar's mask first, then its own processors
  and sampling; its tokens advance its matcher, stop strings do not cut the constrained span, and a
  trigger-less row ends (finish "stop") as soon as its value is complete. Rows render through
  `local.tooling.prepare` and hear `on_prepared` (when the job has it) before their first text.
- An error in one row's preparation or sink fails that row only; an error in a forward pass
  propagates to the worker, which fails every row it admitted.

Models whose cache is not plain `DynamicLayer`s (sliding windows, recurrent or hybrid layers) run
their jobs one after another through `TransformersEngine.run` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from zeph_providers.errors import ContextLengthError
from zeph_providers.local.decoding import IncrementalDecoder, StopMatcher, logits_processors
from zeph_providers.local.engine import Finish, GenerationResult, TokenSink

if TYPE_CHECKING:
    from zeph_providers.local.engine import GenerationParams
    from zeph_providers.local.grammar import Guide
    from zeph_providers.local.transformers_engine import TransformersEngine as Engine
    from zeph_providers.types import Message

__all__ = ["BatchJob", "Finish", "batchable", "run_batch"]


class BatchJob(TokenSink, Protocol):
    """A queued request as the batch sees it: what to generate plus its own sink and cancel flag."""

    messages: list[Message]
    params: GenerationParams


def batchable(model: Any) -> bool:
    """True when the model's cache is made of plain `DynamicLayer`s, which this loop can pad and slice."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache(config=model.config)
    except Exception:
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


@dataclass(eq=False)
class _Row:
    """One request inside the batch: its decoding state, sampling state and counters."""

    job: Any
    params: GenerationParams
    prompt_tokens: int
    max_new: int
    ids: list[int]
    """Prompt and generated token ids (the repeat penalty looks at all of them)."""
    decoder: IncrementalDecoder
    matcher: StopMatcher
    processors: list[Any]
    generator: Any
    position: int
    """Position id of the next token fed for this row (its real length so far)."""
    guide: Guide | None = None
    """This row's grammar state (None: unconstrained)."""
    pending: int = -1
    """The last sampled token: not in the cache yet, fed at the next step."""
    count: int = 0
    saw_eos: bool = False
    finished: bool = False
    failure: Exception | None = None


class _Batch:
    """The live batch: rows, the shared cache and the 2-D attention mask (batch, cached length)."""

    def __init__(self, engine: Engine, finish: Finish) -> None:
        import torch

        self.engine = engine
        self.model = engine.loaded.model
        self.device = engine.loaded.device
        self.finish = finish
        self.eos = set(engine.eos_ids)
        self.rows: list[_Row] = []
        self.cache: Any = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)

    # ----- admission -------------------------------------------------------------------------

    def _prepare(self, job: Any) -> _Row | None:
        """Encode one job and build its sampling state; a failure here fails that job alone."""
        import torch

        try:
            params = job.params
            prepared = self.engine.prepare(job.messages, params)
            guide = self.engine.guide(prepared)
            notify = getattr(job, "on_prepared", None)
            if notify is not None:
                notify(prepared)
            ids = [int(i) for i in self.engine.encode_prepared(prepared)["input_ids"][0].tolist()]
            prompt_tokens = len(ids)
            max_new = params.max_tokens
            if self.engine.context:
                room = self.engine.context - prompt_tokens
                if room < 1:
                    raise ContextLengthError(
                        f"the prompt has {prompt_tokens} tokens; the model's context window is {self.engine.context}"
                    )
                max_new = min(max_new, room)
            generator = None
            if params.seed is not None and not params.greedy:
                generator = torch.Generator(device=self.device).manual_seed(params.seed)
            tokenizer = self.engine.loaded.tokenizer
            return _Row(
                job=job,
                params=params,
                prompt_tokens=prompt_tokens,
                max_new=max_new,
                ids=ids,
                decoder=IncrementalDecoder(tokenizer),
                matcher=StopMatcher(params.stop),
                processors=_processors(params),
                generator=generator,
                position=prompt_tokens,
                guide=guide,
            )
        except Exception as exc:
            self.finish(job, exc)
            return None

    def admit(self, jobs: Sequence[Any]) -> None:
        """Prefill the newcomers together and merge them into the running batch."""
        import torch
        from transformers import DynamicCache

        rows = [row for row in (self._prepare(job) for job in jobs) if row is not None]
        if not rows:
            return
        width = max(row.prompt_tokens for row in rows)
        pad = self.engine.pad_id
        input_ids = torch.tensor(
            [[pad] * (width - row.prompt_tokens) + row.ids for row in rows], dtype=torch.long, device=self.device
        )
        mask = torch.tensor(
            [[0] * (width - row.prompt_tokens) + [1] * row.prompt_tokens for row in rows],
            dtype=torch.long,
            device=self.device,
        )
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._merge(rows, out.cache if getattr(out, "cache", None) is not None else cache, mask)
        self._advance(rows, out.logits[:, -1, :])

    def _merge(self, rows: list[_Row], cache: Any, mask: Any) -> None:
        import torch

        if self.cache is None or not self.rows:
            self.rows, self.cache, self.mask = list(rows), cache, mask
            return
        old, new = self.mask.shape[1], mask.shape[1]
        width = max(old, new)

        def left_pad(tensor: Any, extra: int) -> Any:
            if not extra:
                return tensor
            shape = list(tensor.shape)
            shape[-2 if tensor.dim() == 4 else -1] = extra
            zeros = torch.zeros(shape, dtype=tensor.dtype, device=tensor.device)
            return torch.cat([zeros, tensor], dim=-2 if tensor.dim() == 4 else -1)

        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([left_pad(mine.keys, width - old), left_pad(theirs.keys, width - new)], dim=0)
            mine.values = torch.cat([left_pad(mine.values, width - old), left_pad(theirs.values, width - new)], dim=0)
        self.mask = torch.cat([left_pad(self.mask, width - old), left_pad(mask, width - new)], dim=0)
        self.rows.extend(rows)

    # ----- decoding --------------------------------------------------------------------------

    def step(self) -> None:
        """Feed every row's pending token, then sample and emit the next one per row."""
        import torch

        tokens = torch.tensor([[row.pending] for row in self.rows], dtype=torch.long, device=self.device)
        positions = torch.tensor([[row.position] for row in self.rows], dtype=torch.long, device=self.device)
        ones = torch.ones((len(self.rows), 1), dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], dim=-1)
        out = self.model(
            input_ids=tokens,
            attention_mask=self.mask,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
        )
        if getattr(out, "cache", None) is not None:
            self.cache = out.cache
        for row in self.rows:
            row.position += 1
        self._advance(self.rows, out.logits[:, -1, :])

    def _advance(self, rows: list[_Row], logits: Any) -> None:
        """Sample one token per row, stream its text, and mark rows that are now finished."""
        import torch

        greedy = logits.argmax(dim=-1).tolist()
        for index, row in enumerate(rows):
            try:
                guide = row.guide
                if guide is not None and guide.active:
                    scores = logits[index : index + 1].float().clone()
                    guide.apply(scores)
                    token = _sample(row, scores, torch)
                elif row.processors or not row.params.greedy:
                    token = _sample(row, logits[index : index + 1].float(), torch)
                else:
                    token = int(greedy[index])
                self._emit(row, token)
            except Exception as exc:  # this row's sink or sampling failed: fail it alone
                row.failure = exc
                row.finished = True

    def _emit(self, row: _Row, token: int) -> None:
        row.count += 1
        row.ids.append(token)
        row.pending = token
        guide = row.guide
        if token in self.eos:
            row.saw_eos = True
        elif not row.matcher.hit:
            constrained = guide is not None and guide.active
            if guide is not None:
                guide.advance(token)
            delta = row.decoder.push(token)
            text = row.matcher.passthrough(delta) if constrained else row.matcher.feed(delta)
            if text:
                row.job.on_text(text)
        row.job.on_step()
        done = guide is not None and guide.done
        if row.saw_eos or row.matcher.hit or done or row.count >= row.max_new or row.job.is_cancelled():
            row.finished = True

    def retire(self) -> None:
        """Report finished and cancelled rows, then drop them from the cache and mask."""
        import torch

        keep: list[int] = []
        for index, row in enumerate(self.rows):
            if not row.finished and row.job.is_cancelled():
                row.finished = True
            if not row.finished:
                keep.append(index)
                continue
            if row.failure is not None:
                self.finish(row.job, row.failure)
                continue
            try:
                if not row.matcher.hit:
                    for text in (row.matcher.feed(row.decoder.flush()), row.matcher.flush()):
                        if text:
                            row.job.on_text(text)
                reason: Literal["stop", "length"] = "stop"
                done = row.guide is not None and row.guide.done
                if not (row.saw_eos or row.matcher.hit or done) and row.count >= row.max_new:
                    reason = "length"
                self.finish(row.job, GenerationResult(row.prompt_tokens, row.count, reason))
            except Exception as exc:
                self.finish(row.job, exc)
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache = None
            self.mask = self.mask[:0, :0]
            return
        rows = torch.tensor(keep, dtype=torch.long, device=self.device)
        mask = self.mask.index_select(0, rows)
        start = int(mask.any(dim=0).nonzero()[0].item())  # columns that are padding for every row left
        self.mask = mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, rows)[:, :, start:, :]
            layer.values = layer.values.index_select(0, rows)[:, :, start:, :]


_processors = logits_processors
"""transformers' logits processors for one row, in `generate`'s order (now in `decoding`)."""


def _sample(row: _Row, scores: Any, torch: Any) -> int:
    if row.processors:
        ids = torch.tensor([row.ids], dtype=torch.long, device=scores.device)
        for processor in row.processors:
            scores = processor(ids, scores)
    if row.params.greedy:
        return int(scores.argmax(dim=-1).item())
    probs = torch.nn.functional.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, num_samples=1, generator=row.generator).item())


def run_batch(
    engine: Engine,
    jobs: Sequence[Any],
    admit: Callable[[int], list[Any]],
    finish: Finish,
    *,
    limit: int,
    on_step: Callable[[int], None] | None = None,
) -> None:
    """Generate for `jobs` together, taking more from `admit(room)` between steps, until all are done.

    `finish(job, outcome)` is called exactly once per job that reaches the batch. An exception
    from a forward pass propagates: the caller fails every job it handed over that has no outcome
    yet. `on_step(rows)` reports the live batch size before each decode step (tests, stats).
    """
    import torch

    batch = _Batch(engine, finish)
    waiting = list(jobs)
    with torch.inference_mode():
        while True:
            if waiting:
                batch.admit(waiting)
                waiting = []
            batch.retire()
            room = limit - len(batch.rows)
            if room > 0:
                waiting = admit(room)
                if waiting:
                    continue  # prefill the newcomers before the next step
            if not batch.rows:
                return
            if on_step is not None:
                on_step(len(batch.rows))
            batch.step()
