"""Tools and structured output on the llama.cpp engine: the GGUF's own template, grammars, and phases.

Decisions (measured on xllamacpp 2026.10, llama.cpp built with llguidance as its grammar backend):

- Rendering: llama.cpp's chat endpoint with `tools` ignored them for a template without tool
  support (SmolLM2's ChatML), so requests with a schema or tools are rendered here, by
  `tooling.prepare()` over the GGUF's own Jinja template (`tokenizer.chat_template`, read from the
  file header at load by `read_gguf_template`; ChatML when the file has none), and sent to the
  completion endpoint. Plain requests keep llama.cpp's chat endpoint and its own rendering.
- The header is read by a small reader of ours, not `gguf.GGUFReader`: the latter parses every
  tensor and field of the file (5.4 s for SmolLM2's 98 MB on this machine); ours stops after the
  key/value section (the tokens array is the bulk of it).
- Grammar: `xllamacpp.json_schema_to_grammar(schema)` gives the grammar llama.cpp itself would use
  for `json_schema` (here an llguidance `%json` grammar). llama.cpp SILENTLY drops an llguidance
  grammar it cannot compile (an unknown type, a dangling `$ref`, a bad `pattern`: the reply came
  back unconstrained, no error), so the grammar is validated first with the `llguidance` package
  and a failure is an `InvalidRequestError`. The validated grammar is sent as `grammar` (what is
  validated is what runs) and cached per schema. `response_format` is ignored by llama.cpp's
  completion endpoint; `json_schema` and `grammar` are honoured. Once the value is complete, the
  grammar lets only end-of-generation tokens through, so the reply ends there (finish "stop").
- Trigger constraints (tool_choice "auto": free text until e.g. "<tool_call>", then one JSON
  value, then free again) run as phases over llama.cpp's prompt cache (`cache_prompt`): a free
  phase that watches the streamed text for the trigger and aborts the request as soon as it
  appears (llama.cpp's OpenAI-style chunks do not say WHICH stop string ended a request, so the
  trigger is not a stop string), then a constrained phase on prompt + text so far, then free again
  (watching again when `rearm`). A token that runs past the trigger is cut at the trigger's end.
  The constraint is armed from the start when the prefill ends with the trigger. The trigger is
  sent as `preserved_tokens` (llama.cpp streams a special token's text only when preserved; not
  proven here: SmolLM2 has no tool-call tokens). `max_tokens` is
  one budget across phases; token counts are summed; prompt tokens are the first phase's.
  llama.cpp's native lazy grammars (`grammar_lazy`, `grammar_triggers`) were not used: the
  trigger text must then be matched by the grammar itself, and free text after the value (rearm)
  does not fit a JSON-schema grammar.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import mmap
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zeph_providers.errors import ConfigError, InvalidRequestError
from zeph_providers.local.engine import Constraint, GenerationParams, GenerationResult, Prepared
from zeph_providers.local.templates import ChatTemplate, select_template

if TYPE_CHECKING:
    from zeph_providers.types import Message

__all__ = [
    "GgufTemplate",
    "Phase",
    "gguf_chat_template",
    "grammar_for",
    "prepare_request",
    "read_gguf_template",
    "rendering_templates",
    "run_phases",
]


# ----- the GGUF's own chat template ------------------------------------------------------------


@dataclass(frozen=True)
class GgufTemplate:
    """What a GGUF header says about chat rendering."""

    source: str | None
    bos_token: str = ""
    eos_token: str = ""
    add_bos_token: bool = False


log = logging.getLogger("zeph_providers.local")

_SCALARS: dict[int, str] = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_WANTED = {
    "tokenizer.chat_template",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.add_bos_token",
}


def read_gguf_template(path: str | Path) -> GgufTemplate:
    """The chat template and bos/eos token texts from a GGUF file's key/value header (v2/v3, little-endian)."""
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version, _tensors, count = struct.unpack_from("<IQQ", buf, 4)
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is not supported")
        pos = 24
        found: dict[str, Any] = {}
        tokens: list[str] | None = None

        def string(at: int) -> tuple[str, int]:
            (length,) = struct.unpack_from("<Q", buf, at)
            return bytes(buf[at + 8 : at + 8 + length]).decode("utf-8", "replace"), at + 8 + length

        def skip(kind: int, at: int) -> int:
            if kind == _STRING:
                (length,) = struct.unpack_from("<Q", buf, at)
                return at + 8 + int(length)
            if kind == _ARRAY:
                item, n = struct.unpack_from("<IQ", buf, at)
                at += 12
                if item in _SCALARS:
                    return at + int(n) * struct.calcsize("<" + _SCALARS[item])
                for _ in range(n):
                    at = skip(item, at)
                return at
            return at + struct.calcsize("<" + _SCALARS[kind])

        for _ in range(count):
            key, pos = string(pos)
            (kind,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if key == "tokenizer.ggml.tokens" and kind == _ARRAY:
                _item, n = struct.unpack_from("<IQ", buf, pos)
                pos += 12
                tokens = []
                for _ in range(n):
                    text, pos = string(pos)
                    tokens.append(text)
            elif key in _WANTED and kind == _STRING:
                found[key], pos = string(pos)
            elif key in _WANTED and kind in _SCALARS:
                (found[key],) = struct.unpack_from("<" + _SCALARS[kind], buf, pos)
                pos = skip(kind, pos)
            else:
                pos = skip(kind, pos)

    def token(key: str) -> str:
        index = found.get(key)
        if tokens is None or not isinstance(index, int) or not 0 <= index < len(tokens):
            return ""
        return tokens[index]

    source = found.get("tokenizer.chat_template")
    return GgufTemplate(
        source if isinstance(source, str) and source else None,
        bos_token=token("tokenizer.ggml.bos_token_id"),
        eos_token=token("tokenizer.ggml.eos_token_id"),
        add_bos_token=bool(found.get("tokenizer.ggml.add_bos_token", False)),
    )


def gguf_chat_template(header: GgufTemplate) -> ChatTemplate:
    """The template requests that need rendering use: the GGUF's own Jinja, else ChatML."""
    if header.source is None:
        return select_template("chatml", None)
    return ChatTemplate.from_jinja(header.source, bos_token=header.bos_token, eos_token=header.eos_token)


def rendering_templates(
    path: str | Path, explicit: ChatTemplate | None, *, provider: str | None = None, lenient: bool = False
) -> tuple[ChatTemplate | None, str]:
    """(the GGUF's own template when no explicit one is configured, the BOS text llama.cpp adds itself).

    `lenient` (at load): an unreadable header is logged and gives (None, ""), so plain chat still
    loads; otherwise it is a `ConfigError`.
    """
    try:
        header = read_gguf_template(path)
    except (OSError, ValueError, struct.error) as exc:
        if lenient:  # plain chat does not need it: fail the requests that do, when they come
            log.warning("cannot read the GGUF header of %s (%s): tools and response_format will fail", path, exc)
            return None, ""
        raise ConfigError(
            f"cannot read the chat template from the GGUF header of {str(path)!r} (needed for tools and "
            f"response_format; set chat_template to a built-in one): {exc}",
            provider=provider,
        ) from exc
    own = gguf_chat_template(header) if explicit is None else None
    return own, header.bos_token if header.add_bos_token else ""


# ----- grammars --------------------------------------------------------------------------------

_GRAMMARS: dict[str, str] = {}
_GRAMMARS_LOCK = threading.Lock()
_GRAMMARS_MAX = 256


def grammar_for(constraint: Constraint, *, provider: str | None = None) -> str:
    """llama.cpp's grammar for the constraint's schema, validated (cached per schema)."""
    key = constraint.schema_key
    with _GRAMMARS_LOCK:
        cached = _GRAMMARS.get(key)
    if cached is not None:
        return cached
    import xllamacpp

    try:
        grammar = str(xllamacpp.json_schema_to_grammar(key))
    except Exception as exc:
        raise InvalidRequestError(f"llama.cpp cannot use the JSON schema: {exc}", provider=provider) from exc
    if grammar.startswith("%llguidance"):  # llama.cpp would drop a broken one silently: check it here
        try:
            import llguidance
        except ImportError as exc:
            raise InvalidRequestError(
                "structured output on the llama.cpp engine needs the llguidance package to check the "
                "schema (pip install llguidance)",
                provider=provider,
            ) from exc
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
        if failed:
            raise InvalidRequestError(
                f"llama.cpp cannot use the JSON schema: {'; '.join(messages) or 'invalid grammar'}",
                provider=provider,
            )
    with _GRAMMARS_LOCK:
        if len(_GRAMMARS) >= _GRAMMARS_MAX:
            _GRAMMARS.pop(next(iter(_GRAMMARS)))
        _GRAMMARS[key] = grammar
    return grammar


# ----- requests ----------------------------------------------------------------------------------


def prepare_request(
    template: ChatTemplate,
    messages: Sequence[Message],
    params: GenerationParams,
    sampling: dict[str, Any],
    *,
    strip_bos: str = "",
) -> tuple[Prepared, dict[str, Any]]:
    """The rendered request (`tooling.prepare`) and the completion body its phases share.

    `sampling` is the engine's sampling fields; the body gets the template's end tokens as stop
    strings after the caller's, and no `prompt`/`max_tokens` (set per phase). `strip_bos`: a BOS
    text llama.cpp adds itself for this model, removed from the start of a rendered prompt.
    """
    from zeph_providers.local.tooling import prepare

    prepared = prepare(template, messages, params)
    if strip_bos and not prepared.add_special_tokens and prepared.prompt.startswith(strip_bos):
        prepared = dataclasses.replace(prepared, prompt=prepared.prompt[len(strip_bos) :])
    base = {key: value for key, value in sampling.items() if key not in ("max_tokens", "stop")}
    stops = list(sampling.get("stop", []))
    stops += [token for token in template.end_tokens if token not in stops]
    if stops:
        base["stop"] = stops
    base.update(stream=True, stream_options={"include_usage": True}, timings_per_token=True, cache_prompt=True)
    return prepared, base


# ----- phases ----------------------------------------------------------------------------------


@dataclass
class Phase:
    """The outcome of one llama.cpp request within a reply."""

    text: str
    finish: str | None
    prompt_tokens: int
    completion_tokens: int
    triggered: bool = False
    cancelled: bool = False


Call = Callable[[dict[str, Any], "str | None"], Phase]
"""Run one completion request (body, trigger to watch for) and report it; raises on errors."""


def _complete_json(text: str) -> bool:
    try:
        json.JSONDecoder().raw_decode(text.lstrip())
    except ValueError:
        return False
    return True


def run_phases(
    prepared: Prepared,
    params: GenerationParams,
    base: dict[str, Any],
    call: Call,
    *,
    cancelled: Callable[[], bool],
    provider: str | None = None,
) -> GenerationResult:
    """Generate one prepared reply: one request, or free/constrained phases for a trigger constraint.

    `base` is the request body without `prompt`, `max_tokens` and `grammar`.
    """
    constraint = prepared.constraint
    grammar = grammar_for(constraint, provider=provider) if constraint is not None else None
    trigger = constraint.trigger if constraint is not None else None
    budget = params.max_tokens
    used = 0
    prompt_tokens: int | None = None
    generated = ""
    finish: Literal["stop", "length"] = "stop"
    armed = trigger is None and grammar is not None  # no trigger: the whole reply is constrained
    watch = trigger
    if trigger is not None and trigger.strip() and prepared.prefill.rstrip().endswith(trigger.rstrip()):
        armed = True
    if trigger is not None:  # a trigger that is a special token is streamed as text only if preserved
        base = dict(base, preserved_tokens=[trigger])
    while True:
        if used >= budget:
            finish = "length"
            break
        body = dict(base, prompt=prepared.prompt + generated, max_tokens=budget - used)
        if armed:
            body["grammar"] = grammar
        phase = call(body, None if armed else watch)
        if prompt_tokens is None:
            prompt_tokens = phase.prompt_tokens
        used += phase.completion_tokens
        generated += phase.text
        if phase.cancelled or cancelled():
            break
        if phase.finish == "length":
            finish = "length"
            break
        if phase.triggered:
            armed = True
            continue
        if not armed or trigger is None:  # free text ended, or the whole (constrained) reply did
            break
        if not _complete_json(phase.text):  # a stop string cut the value short: the reply ends
            break
        armed = False  # the value is complete: free again, watching for the next call if rearmed
        watch = trigger if constraint is not None and constraint.rearm else None
    return GenerationResult(prompt_tokens or 0, used, finish)
