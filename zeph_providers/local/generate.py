"""One generation on the worker thread: sampling settings, incremental decoding, stop strings.

`Engine` holds a loaded model with its chat template; `Engine.run()` renders a conversation,
generates with `model.generate`, and hands text deltas to a `TokenSink` as each token arrives (a
`BaseStreamer` subclass), stopping within one token when the sink is cancelled or a stop string
appears (a `StoppingCriteria`). Everything here runs on the worker thread and blocks.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from zeph_providers.errors import ContextLengthError, InvalidRequestError
from zeph_providers.local.templates import ChatTemplate, eos_token_ids, select_template

if TYPE_CHECKING:
    from zeph_providers.config import CandleConfig, GenerationConfig
    from zeph_providers.local.loader import LoadedModel
    from zeph_providers.protocol import ChatOptions
    from zeph_providers.types import Message

__all__ = ["Engine", "GenerationParams", "GenerationResult", "IncrementalDecoder", "StopMatcher", "TokenSink"]

_EXTRA_KEYS = {"repeat_penalty", "repetition_penalty"}


@dataclass(frozen=True)
class GenerationParams:
    """Resolved sampling settings for one request (config defaults, then per-call overrides)."""

    max_tokens: int
    temperature: float
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def resolve(cls, defaults: GenerationConfig, options: ChatOptions) -> GenerationParams:
        """Merge per-call `ChatOptions` over the configured defaults, refusing values it cannot honour."""
        unknown = set(options.extra) - _EXTRA_KEYS
        if unknown:
            raise InvalidRequestError(
                f"unknown extra option(s) {sorted(unknown)} for the local backend; it accepts: repeat_penalty"
            )
        penalty = options.extra.get("repeat_penalty", options.extra.get("repetition_penalty", defaults.repeat_penalty))
        params = cls(
            max_tokens=options.max_tokens if options.max_tokens is not None else defaults.max_tokens,
            temperature=options.temperature if options.temperature is not None else defaults.temperature,
            top_p=options.top_p if options.top_p is not None else defaults.top_p,
            top_k=options.top_k if options.top_k is not None else defaults.top_k,
            repeat_penalty=float(penalty),
            seed=options.seed if options.seed is not None else defaults.seed,
            stop=tuple(s for s in (options.stop or tuple(defaults.stop)) if s),
        )
        params.validate()
        return params

    def validate(self) -> None:
        if self.max_tokens < 1:
            raise InvalidRequestError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not (0 <= self.temperature <= 100) or math.isnan(self.temperature):
            raise InvalidRequestError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 0:
            raise InvalidRequestError(f"top_k must be >= 0, got {self.top_k}")
        if not self.repeat_penalty > 0:
            raise InvalidRequestError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")


class TokenSink(Protocol):
    """Where a generation reports to: text deltas out, cancellation in."""

    def on_text(self, text: str) -> None: ...

    def on_step(self) -> None: ...

    def is_cancelled(self) -> bool: ...


@dataclass(frozen=True)
class GenerationResult:
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


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


def _streamer_class() -> type:
    """Defined lazily so importing this module does not import transformers."""
    from transformers.generation.streamers import BaseStreamer

    class _Streamer(BaseStreamer):
        """Receives each new token from `generate` on the worker thread and forwards text."""

        def __init__(self, tokenizer: Any, eos_ids: list[int], stops: tuple[str, ...], sink: TokenSink) -> None:
            self.decoder = IncrementalDecoder(tokenizer)
            self.matcher = StopMatcher(stops)
            self.eos_ids = set(eos_ids)
            self.sink = sink
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
                if self.matcher.hit or self.saw_eos:
                    continue
                self._emit(self.matcher.feed(self.decoder.push(int(token_id))))

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
            stop = self.streamer.matcher.hit or self.sink.is_cancelled()
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return _Halt


class InferenceEngine(Protocol):
    """What the worker needs from an engine (transformers `Engine`, `LlamaCppEngine`).

    An engine may also offer `run_batch(jobs, admit, finish, *, on_step=None)`; the worker
    looks it up with `getattr` and runs one job at a time without it.
    """

    max_batch_size: int
    loaded: Any
    """What was loaded; the worker reads `loaded.device` to free accelerator memory on close."""

    def run(self, messages: list[Message], params: GenerationParams, sink: TokenSink) -> GenerationResult: ...


class Engine:
    """A loaded model, its template and end tokens; runs one request at a time on the worker thread."""

    def __init__(self, loaded: LoadedModel, template: ChatTemplate, *, max_batch_size: int = 8) -> None:
        self.loaded = loaded
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
        self._batchable: bool | None = None

    @classmethod
    def load(cls, config: CandleConfig) -> Engine:
        from zeph_providers.local.loader import load_causal_lm

        loaded = load_causal_lm(config)
        template = select_template(config.chat_template, loaded.tokenizer)
        return cls(loaded, template, max_batch_size=config.max_batch_size)

    def encode(self, messages: list[Message]) -> Any:
        prompt = self.template.render(messages)
        special = self.template.add_special_tokens
        return self.loaded.tokenizer(prompt, add_special_tokens=special, return_tensors="pt")

    def generation_kwargs(self, params: GenerationParams, max_new: int) -> dict[str, Any]:
        """`generate()` settings: the model's own generation config, overridden by this request."""
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
        if params.greedy:  # the model's sampling defaults must not leak into (or warn about) greedy decoding
            settings.update(temperature=None, top_p=None, top_k=None, min_p=None, typical_p=None)
        else:
            settings["temperature"] = params.temperature
            settings["top_p"] = params.top_p if params.top_p is not None else 1.0
            settings["top_k"] = params.top_k or 0
        config.update(**settings)
        return {"generation_config": config}

    def run(self, messages: list[Message], params: GenerationParams, sink: TokenSink) -> GenerationResult:
        """Generate one reply, streaming text into `sink`; blocks until done or cancelled."""
        import torch

        encoded = self.encode(messages)
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
        streamer = self._streamer_cls(self.loaded.tokenizer, self.eos_ids, params.stop, sink)
        from transformers import StoppingCriteriaList

        criteria = StoppingCriteriaList([self._halt_cls(streamer, sink)])
        kwargs = self.generation_kwargs(params, max_new)
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
        if not (streamer.saw_eos or streamer.matcher.hit) and streamer.count >= max_new:
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
        """Generate for several jobs at once (continuous batching, see `local.batch`); blocks until all end.

        Each job is a `TokenSink` with `messages` and `params`; `admit(room)` hands over jobs that
        arrived meanwhile; `finish(job, result_or_error)` is called once per job. Models the
        batch loop cannot pad (sliding-window or recurrent caches), or `max_batch_size = 1`, run
        the jobs one after another through `run`, admitting nothing extra.
        """
        from zeph_providers.local import batch

        if self._batchable is None:
            self._batchable = batch.batchable(self.loaded.model)
        if not self._batchable or self.max_batch_size <= 1:
            for job in jobs:
                try:
                    outcome: GenerationResult | Exception = self.run(job.messages, job.params, job)
                except Exception as exc:
                    outcome = exc
                finish(job, outcome)
            return
        batch.run_batch(self, jobs, admit, finish, limit=self.max_batch_size, on_step=on_step)
