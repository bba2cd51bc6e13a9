"""The local engine seam: what the worker needs from an engine, and what it hands one.

- `InferenceEngine`: the protocol both engines implement (`run`, `run_batch`, `close`, `device`,
  `max_batch_size`; all required). The worker depends on this protocol only.
- `GenerationParams` (one request's resolved sampling settings, plus what it asks of tools and
  structured output), `GenerationResult`, and the `TokenSink` a generation streams into (the
  worker's `Job`).
- `Constraint` and `Prepared`: the engine-independent contract for tools and structured output.
  An engine renders a request with `local.tooling.prepare(template, messages, params)`, which
  returns the prompt text (prefill included), the `Constraint` to decode under (or None) and the
  tool-call syntax the reply is parsed with. The engine reports it with `sink.on_prepared(...)`
  before its first text, then decodes under the constraint (transformers: a grammar-constrained
  sampler per row; llama.cpp: its own JSON-schema grammar). Engines never parse tool calls: the
  provider does, from the text stream and the syntax, so both engines parse alike.
- Engine selection: which engine a config runs on (`select_engine`), decided without importing
  torch, transformers or xllamacpp and without touching files.

The engines live in modules named after them: `transformers_engine` (with its continuous batching
in `transformers_batch`) and `llamacpp`. Decoding helpers are in `decoding`.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from zeph_providers.errors import ConfigError, InvalidRequestError

if TYPE_CHECKING:
    from zeph_providers.config import GenerationConfig, LocalConfig
    from zeph_providers.options import ChatOptions
    from zeph_providers.types import Message, ToolDefinition

__all__ = [
    "JSON_LAYOUT",
    "Constraint",
    "EngineName",
    "Finish",
    "GenerationParams",
    "GenerationResult",
    "InferenceEngine",
    "Prepared",
    "TokenSink",
    "closed_objects",
    "decoding_schema",
    "names_gguf",
    "run_one_by_one",
    "select_engine",
    "xllamacpp_installed",
]

EngineName = Literal["transformers", "llama.cpp"]

_EXTRA_KEYS = {"repeat_penalty", "repetition_penalty"}
_INSTALL_HINT = "pip install xllamacpp (or pip install 'zeph-providers[local]')"


@dataclass(frozen=True)
class Constraint:
    """Constrained decoding for part of a reply: the constrained span is one JSON value matching `schema`.

    - `trigger` None: the whole reply (after the prompt's prefill) is the JSON value; generation
      ends as soon as the value is complete (finish "stop"), or at `max_tokens` ("length").
    - `trigger` a string (e.g. "<tool_call>"): generation is free until the generated text contains
      `trigger`; right after it the JSON value is constrained (whitespace before the value allowed,
      at most one newline's worth); once the value is complete, generation is free again. With
      `rearm`, the trigger then arms again (several tool calls in one reply); without, the rest of
      the reply is free.

    Engines may cache whatever they compile from `schema` (key: `schema_key`).
    """

    schema: dict[str, Any]
    trigger: str | None = None
    rearm: bool = False

    @property
    def schema_key(self) -> str:
        """A stable text key for `schema` (sorted JSON), for compile caches."""
        return json.dumps(self.schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_OPEN_KEYS = ("additionalProperties", "unevaluatedProperties", "patternProperties")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")


def closed_objects(schema: Any) -> Any:
    """`schema` with every object that lists `properties` and says nothing about extra keys closed
    (`additionalProperties: false`), for decoding only.

    Why: JSON Schema (and a pydantic model without `extra="forbid"`) leaves such objects open, and a
    grammar for an open object lets a small model keep inventing keys until `max_tokens` (seen on
    SmolLM2: 1 seed in 10 never finished). Every reply a closed grammar allows is still valid
    against the caller's own schema, which is what the reply is validated against. Objects that
    choose (`additionalProperties` / `patternProperties` given) or list no properties are kept.
    """
    if isinstance(schema, list):
        return [closed_objects(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: closed_objects(sub) for name, sub in value.items()}
        elif key in _SUBSCHEMA_LISTS or key in ("items", "not", "if", "then", "else") or key in _OPEN_KEYS:
            out[key] = closed_objects(value)
        else:
            out[key] = value
    if isinstance(schema.get("properties"), dict) and not any(key in schema for key in _OPEN_KEYS):
        out["additionalProperties"] = False
    return out


JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
"""llguidance's JSON layout options for constrained values: compact, no free whitespace (a model
cannot pad a value with endless whitespace, and fewer tokens are spent)."""


def decoding_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema a constraint decodes under: objects closed (`closed_objects`) and one fixed JSON
    layout (`x-guidance`, read by llguidance, the grammar engine of both local engines).

    Why the layout: with free whitespace a model may spend tokens on spaces and newlines, and tiny
    differences in logits (a cached prompt against a fresh one) flip between equivalent layouts. A
    schema that sets its own `x-guidance` keeps it."""
    closed: dict[str, Any] = closed_objects(schema)
    if "x-guidance" not in closed:
        closed = {"x-guidance": dict(JSON_LAYOUT), **closed}
    return closed


@dataclass(frozen=True)
class Prepared:
    """A request rendered for one engine's template: what to feed the model and how to read its reply."""

    prompt: str
    """The full prompt text, ending with `prefill` (where the model's own tokens begin)."""
    prefill: str = ""
    """Text put at the start of the assistant's reply in the prompt (e.g. "<tool_call>\n" for a forced
    call). It is part of the reply as far as parsing goes, but the engine does not stream it."""
    constraint: Constraint | None = None
    syntax: Any = None
    """The tool-call syntax (`local.tooling.ToolSyntax`) replies are parsed with; None without tools."""
    add_special_tokens: bool = False
    """Whether encoding `prompt` adds the tokenizer's BOS (the template's setting)."""


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
    tools: tuple[ToolDefinition, ...] = ()
    """Tools the model may call (empty with `tool_choice="none"`)."""
    tool_choice: str | None = None
    """"auto" (also None), "required", or the name of the one tool to call."""
    schema: dict[str, Any] | None = None
    """`response_format` as a JSON schema: the reply must be one JSON value matching it."""

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
            tools=() if options.tool_choice == "none" else tuple(options.tools),
            tool_choice=None if options.tool_choice == "none" else options.tool_choice,
            schema=options.json_schema(),
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

    def on_prepared(self, prepared: Prepared) -> None:
        """The rendered request (called once, before the first `on_text`, by engines that render)."""
        ...


@dataclass(frozen=True)
class GenerationResult:
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


Finish = Callable[[Any, "GenerationResult | Exception"], None]
"""Called once per job with its result, or with the exception that failed it alone."""


class InferenceEngine(Protocol):
    """What the worker needs from an engine (`TransformersEngine`, `LlamaCppEngine`); every member is required.

    Everything is called on the worker thread (or the engine's own helper threads) and blocks.
    """

    @property
    def max_batch_size(self) -> int:
        """Most jobs `run_batch` serves at once (1: one after another)."""
        ...

    @property
    def device(self) -> str:
        """Where the model runs ("cpu", "cuda", "mps"...): the worker frees accelerator memory on close."""
        ...

    def run(self, messages: list[Message], params: GenerationParams, sink: TokenSink) -> GenerationResult:
        """Generate one reply, streaming text into `sink`; blocks until done or cancelled."""
        ...

    def run_batch(
        self,
        jobs: Sequence[Any],
        admit: Callable[[int], list[Any]],
        finish: Finish,
        *,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        """Serve `jobs` (each a `TokenSink` with `messages` and `params`) and whatever `admit(room)` hands
        over meanwhile; `finish(job, result_or_error)` once per job. Blocks until all end."""
        ...

    def close(self) -> None:
        """Free the model and any threads it owns. Safe to call twice."""
        ...


def run_one_by_one(engine: InferenceEngine, jobs: Sequence[Any], finish: Finish) -> None:
    """`run_batch` for an engine that serves one job at a time: each job through `run`, in order."""
    for job in jobs:
        try:
            outcome: GenerationResult | Exception = engine.run(job.messages, job.params, job)
        except Exception as exc:
            outcome = exc
        finish(job, outcome)


# ----- engine selection (no imports, no file access) -------------------------------------------


def names_gguf(config: LocalConfig) -> bool:
    """Whether the config's chat model is a GGUF file (`gguf_file`, or a `model_path` ending in .gguf)."""
    if config.gguf_file:
        return True
    path = (config.model_path or "").strip()
    return path.lower().endswith(".gguf")


def xllamacpp_installed() -> bool:
    """Whether `xllamacpp` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("xllamacpp") is not None
    except (ImportError, ValueError):
        return False


def select_engine(config: LocalConfig) -> EngineName:
    """The engine a config runs on: llama.cpp for GGUF sources (when installed), transformers otherwise.

    `engine = "llama.cpp"` on a non-GGUF source, or without `xllamacpp`, is a `ConfigError`.
    `engine = "auto"` picks llama.cpp for a GGUF file and falls back to transformers (which
    de-quantises the file) when `xllamacpp` is not installed.
    """
    gguf = names_gguf(config)
    if config.engine == "transformers":
        return "transformers"
    if config.engine == "llama.cpp":
        if not gguf:
            source = config.model_path or config.repo_id
            raise ConfigError(
                f'engine = "llama.cpp" runs GGUF files only, and {source!r} is not one: set model_path to a .gguf '
                'file (or gguf_file), use engine = "transformers", or serve the model with a llama.cpp server '
                'and a type = "compatible" provider',
                provider=config.name,
            )
        if not xllamacpp_installed():
            raise ConfigError(
                f'engine = "llama.cpp" needs the xllamacpp package: {_INSTALL_HINT}', provider=config.name
            )
        return "llama.cpp"
    if gguf and xllamacpp_installed():
        return "llama.cpp"
    return "transformers"
