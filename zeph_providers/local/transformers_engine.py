"""The transformers engine: a loaded model with its chat template, run with `model.generate`.

`TransformersEngine.run()` renders a conversation, generates, and hands text deltas to a
`TokenSink` as each token arrives (a `BaseStreamer` subclass), stopping within one token when the
sink is cancelled or a stop string appears (a `StoppingCriteria`). `run_batch` decodes several
requests together (`transformers_batch`). Everything here runs on the worker thread and blocks.

Rendering goes through `local.tooling.prepare` (prompt, prefill, `Constraint`); the sink hears
`on_prepared` before any text. Under a constraint (`local.grammar`), `generate` gets the grammar's
mask as its FIRST logits processor followed by the request's own processors (repeat penalty,
temperature, top-k, top-p, built here rather than by `generate`, which would put its warpers
before a custom processor and could leave only forbidden tokens); the streamer feeds each token
to the row's `Guide`, and the stopping criteria end the reply once a trigger-less value is complete.
The grammar compiler is built once per engine, its tokenizer lazily at the first constrained request.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from zeph_providers.errors import ContextLengthError
from zeph_providers.local.decoding import IncrementalDecoder, StopMatcher, logits_processors
from zeph_providers.local.engine import GenerationParams, GenerationResult, Prepared, TokenSink, run_one_by_one
from zeph_providers.local.grammar import GrammarCompiler, Guide
from zeph_providers.local.templates import ChatTemplate, eos_token_ids, select_template
from zeph_providers.local.tooling import prepare

if TYPE_CHECKING:
    from zeph_providers.config import LocalConfig
    from zeph_providers.local.loader import LoadedModel
    from zeph_providers.types import Message

__all__ = ["Engine", "TransformersEngine"]


def _streamer_class() -> type:
    """Defined lazily so importing this module does not import transformers."""
    from transformers.generation.streamers import BaseStreamer

    class _Streamer(BaseStreamer):
        """Receives each new token from `generate` on the worker thread and forwards text."""

        def __init__(
            self,
            tokenizer: Any,
            eos_ids: list[int],
            stops: tuple[str, ...],
            sink: TokenSink,
            guide: Guide | None = None,
        ) -> None:
            self.decoder = IncrementalDecoder(tokenizer)
            self.matcher = StopMatcher(stops)
            self.eos_ids = set(eos_ids)
            self.sink = sink
            self.guide = guide
            self.count = 0
            self.saw_eos = False
            self._prompt_skipped = False

        def put(self, value: Any) -> None:
            if not self._prompt_skipped:  # the first call carries the prompt
                self._prompt_skipped = True
                return
            for token_id in value.reshape(-1).tolist():
                self.count += 1
                if token_id in self.eos_ids:
                    self.saw_eos = True
                    continue
                if self.matcher.hit or self.saw_eos or self.done:
                    continue
                guide = self.guide
                constrained = guide is not None and guide.active
                if guide is not None:
                    guide.advance(int(token_id))
                delta = self.decoder.push(int(token_id))
                self._emit(self.matcher.passthrough(delta) if constrained else self.matcher.feed(delta))

        @property
        def done(self) -> bool:
            """The constrained value is complete (a trigger-less constraint ends the reply)."""
            return self.guide is not None and self.guide.done

        def _emit(self, text: str) -> None:
            if text:
                self.sink.on_text(text)

        def end(self) -> None:
            if not self.matcher.hit:
                self._emit(self.matcher.feed(self.decoder.flush()))
                self._emit(self.matcher.flush())

    return _Streamer


def _halt_class() -> type:
    from transformers import StoppingCriteria

    class _Halt(StoppingCriteria):
        """Checked after every token: stop on cancellation or a matched stop string."""

        def __init__(self, streamer: Any, sink: TokenSink) -> None:
            self.streamer = streamer
            self.sink = sink

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            self.sink.on_step()
            stop = self.streamer.matcher.hit or self.streamer.done or self.sink.is_cancelled()
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return _Halt


def _mask_class() -> type:
    from transformers import LogitsProcessor

    class _Mask(LogitsProcessor):
        """The grammar's mask on `generate`'s scores (batch of one), applied before any other processor."""

        def __init__(self, guide: Guide) -> None:
            self.guide = guide

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            self.guide.apply(scores[0])
            return scores

    return _Mask


class TransformersEngine:
    """A loaded model, its template and end tokens; runs one request at a time on the worker thread."""

    def __init__(
        self, loaded: LoadedModel, template: ChatTemplate, *, max_batch_size: int = 8, name: str | None = None
    ) -> None:
        self.loaded = loaded
        self.name = name
        self.max_batch_size = max_batch_size
        """Most requests `run_batch` decodes together (config `max_batch_size`)."""
        self.template = template
        tokenizer = loaded.tokenizer
        self.eos_ids = eos_token_ids(tokenizer, template, getattr(loaded.model, "generation_config", None))
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = pad if isinstance(pad, int) else (self.eos_ids[0] if self.eos_ids else 0)
        self.context = int(getattr(loaded.model.config, "max_position_embeddings", 0) or 0)
        self._streamer_cls = _streamer_class()
        self._halt_cls = _halt_class()
        self._mask_cls: type | None = None
        self._batchable: bool | None = None
        self._count_lock = threading.Lock()
        self._count_tokenizer: Any = None
        vocab = int(getattr(loaded.model.config, "vocab_size", 0) or len(tokenizer))
        self.grammar = GrammarCompiler(tokenizer, vocab_size=vocab, eos_ids=self.eos_ids, provider=name)
        """JSON-schema grammars for this tokenizer (built lazily, cached per schema)."""

    @classmethod
    def load(cls, config: LocalConfig) -> TransformersEngine:
        from zeph_providers.local.loader import load_causal_lm

        loaded = load_causal_lm(config)
        template = select_template(config.chat_template, loaded.tokenizer)
        return cls(loaded, template, max_batch_size=config.max_batch_size, name=config.name)

    @property
    def device(self) -> str:
        return str(self.loaded.device)

    def close(self) -> None:
        """Nothing to stop: the worker drops its reference and garbage collection frees the weights."""

    @property
    def context_window(self) -> int | None:
        """The model's `max_position_embeddings` (None when its config has none)."""
        return self.context or None

    def count_tokens(self, messages: list[Message]) -> int:
        """The prompt's token count, as `run` encodes it (`usage.input_tokens`). Safe off the worker
        thread: it uses its own copy of the tokenizer (a fast tokenizer is not safe to share across
        threads while the worker decodes with it)."""
        with self._count_lock:
            if self._count_tokenizer is None:
                self._count_tokenizer = copy.deepcopy(self.loaded.tokenizer)
            prompt = self.template.render(messages)
            encoded = self._count_tokenizer(prompt, add_special_tokens=self.template.add_special_tokens)
            return len(encoded["input_ids"])

    def prepare(self, messages: list[Message], params: GenerationParams) -> Prepared:
        """The request rendered through the template (`local.tooling.prepare`)."""
        return prepare(self.template, messages, params)

    def encode_prepared(self, prepared: Prepared) -> Any:
        special = prepared.add_special_tokens
        return self.loaded.tokenizer(prepared.prompt, add_special_tokens=special, return_tensors="pt")

    def encode(self, messages: list[Message]) -> Any:
        """The prompt's token ids for a plain chat (no tools, no schema)."""
        return self.encode_prepared(self.prepare(messages, GenerationParams(max_tokens=1, temperature=0.0)))

    def guide(self, prepared: Prepared) -> Guide | None:
        """The row's grammar state for `prepared.constraint` (None without one)."""
        if prepared.constraint is None:
            return None
        matcher = self.grammar.matcher(prepared.constraint)
        return Guide(matcher, prepared.constraint, self.loaded.tokenizer, prefill=prepared.prefill)

    def generation_kwargs(self, params: GenerationParams, max_new: int, guide: Guide | None = None) -> dict[str, Any]:
        """`generate()` settings: the model's own generation config, overridden by this request.

        With a `guide`, the grammar's mask runs first and the request's processors after it, so
        `generate`'s own sampling processors are switched off (the model's defaults too).
        """
        import transformers

        base = getattr(self.loaded.model, "generation_config", None)
        fresh: Any = transformers.GenerationConfig
        config: Any = copy.deepcopy(base) if base is not None else fresh()
        settings: dict[str, Any] = {
            "max_new_tokens": max_new,
            "max_length": None,
            "do_sample": not params.greedy,
            "eos_token_id": self.eos_ids or None,
            "pad_token_id": self.pad_id,
            "num_beams": 1,
            "use_cache": True,
            "repetition_penalty": params.repeat_penalty if params.repeat_penalty != 1.0 else None,
        }
        if guide is not None:
            settings.update(temperature=None, top_p=None, top_k=None, min_p=None, typical_p=None)
            settings["repetition_penalty"] = None
        elif params.greedy:  # the model's sampling defaults must not leak into (or warn about) greedy decoding
            settings.update(temperature=None, top_p=None, top_k=None, min_p=None, typical_p=None)
        else:
            settings["temperature"] = params.temperature
            settings["top_p"] = params.top_p if params.top_p is not None else 1.0
            settings["top_k"] = params.top_k or 0
        config.update(**settings)
        if guide is None:
            return {"generation_config": config}
        from transformers import LogitsProcessorList

        if self._mask_cls is None:
            self._mask_cls = _mask_class()
        processors = LogitsProcessorList([self._mask_cls(guide), *logits_processors(params)])
        return {"generation_config": config, "logits_processor": processors}

    def run(self, messages: list[Message], params: GenerationParams, sink: TokenSink) -> GenerationResult:
        """Generate one reply, streaming text into `sink`; blocks until done or cancelled."""
        import torch

        prepared = self.prepare(messages, params)
        guide = self.guide(prepared)
        notify = getattr(sink, "on_prepared", None)
        if notify is not None:
            notify(prepared)
        encoded = self.encode_prepared(prepared)
        device = self.loaded.device
        input_ids = encoded["input_ids"].to(device)
        attention = encoded.get("attention_mask")
        prompt_tokens = int(input_ids.shape[-1])
        max_new = params.max_tokens
        if self.context:
            room = self.context - prompt_tokens
            if room < 1:
                raise ContextLengthError(
                    f"the prompt has {prompt_tokens} tokens; the model's context window is {self.context}"
                )
            max_new = min(max_new, room)
        streamer = self._streamer_cls(self.loaded.tokenizer, self.eos_ids, params.stop, sink, guide)
        from transformers import StoppingCriteriaList

        criteria = StoppingCriteriaList([self._halt_cls(streamer, sink)])
        kwargs = self.generation_kwargs(params, max_new, guide)
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            self.loaded.model.generate(
                input_ids=input_ids,
                attention_mask=None if attention is None else attention.to(device),
                streamer=streamer,
                stopping_criteria=criteria,
                **kwargs,
            )
        finish: Literal["stop", "length"] = "stop"
        if not (streamer.saw_eos or streamer.matcher.hit or streamer.done) and streamer.count >= max_new:
            finish = "length"
        return GenerationResult(prompt_tokens, streamer.count, finish)

    def run_batch(
        self,
        jobs: Sequence[Any],
        admit: Callable[[int], list[Any]],
        finish: Callable[[Any, GenerationResult | Exception], None],
        *,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        """Generate for several jobs at once (continuous batching, see `transformers_batch`); blocks until all end.

        Each job is a `TokenSink` with `messages` and `params`; `admit(room)` hands over jobs that
        arrived meanwhile; `finish(job, result_or_error)` is called once per job. Models the
        batch loop cannot pad (sliding-window or recurrent caches), or `max_batch_size = 1`, run
        the jobs one after another through `run`, admitting nothing extra.
        """
        from zeph_providers.local import transformers_batch

        if self._batchable is None:
            self._batchable = transformers_batch.batchable(self.loaded.model)
        if not self._batchable or self.max_batch_size <= 1:
            run_one_by_one(self, jobs, finish)
            return
        transformers_batch.run_batch(self, jobs, admit, finish, limit=self.max_batch_size, on_step=on_step)


Engine = TransformersEngine
"""The transformers engine's former name."""
