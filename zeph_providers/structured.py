"""Structured output shared by every backend: parsing, the three request modes, and the repair loop.

Parsing (`parse_structured`): a reply's structured payload (its text, or a value a backend already
decoded) -> `json.loads` -> the pydantic class's `model_validate` (a dict schema is not validated
here: the server enforced it, or the repair loop catches the JSON that does not parse). Failure is
a `StructuredOutputError` (a `BadResponseError`) carrying the validator's message and the raw text.

Modes (`structured_output` in a provider's config; each backend accepts the ones it can do):

- "native": the API's own JSON-schema response format (OpenAI `json_schema`, Ollama `format`).
- "tool": a forced function tool whose parameters are the schema (Claude's only mode). The call is
  never shown to the caller: `answer_tool_chunks` turns it into the reply text (`json.dumps` of
  its arguments, once, when the call is complete, so a stream and `chat()` carry the same text;
  the tool's argument deltas are dropped). A schema that is not an object travels as
  `{"value": <schema>}` and is unwrapped.
- "prompted": for compatible servers without `json_schema`: nothing structured is sent; the
  schema and instructions go into the system prompt (`prompted_messages`) and the value is the
  first complete JSON value in the reply (`extract_json`, code fences stripped).

Repair (`Repair`): `chat()` with `response_format` re-asks up to `structured_retries` times (per
call, else the provider's config, default 1) when a reply fails to parse or validate: the next try
sends the original messages, the bad reply as an assistant turn, and a user turn that quotes the
validation error and asks for only JSON matching the schema. Decisions:

- One call, several tries: the hooks see one call whose `after_attempt` fires once per try; the
  failed try's `Attempt.outcome` is "StructuredOutputError" with the validator's message. The one
  deadline of the call (`options.deadline`) covers every try.
- Each try is buffered (assembled, validated) before anything reaches the caller, so `chat()`
  returns only the reply that validated. `resp.usage` counts every try's tokens (each was paid for,
  and the cost tracker prices the call from it); the text is the last try's.
- Only the latest bad reply is sent back (the context does not grow with each retry).
- After the last try: `StructuredOutputError` naming the provider, the tries and the last error.
- A router repairs the whole routed call once (`BaseProvider.start_try`); members never repair
  inside a routed call, since the router opens their streams, not their `chat()`.
- Streams cannot take back text already delivered, so `chat_stream()` never re-asks: a stream
  whose reply does not validate raises `StructuredOutputError` when it ends (`stream.response`
  stays unset, like `chat()` returning nothing), and a per-call `structured_retries` above 0 on
  `chat_stream()` is refused (`InvalidRequestError`) rather than ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from zeph_providers.errors import StructuredOutputError
from zeph_providers.options import ChatOptions
from zeph_providers.stream import AttemptClock, ResponseAssembler, attempt_log, attempt_log_scope
from zeph_providers.types import (
    Attempt,
    ChatResponse,
    ContentChunk,
    EndChunk,
    Message,
    Role,
    StreamChunk,
    TextPart,
    ToolCallDeltaChunk,
    ToolUseChunk,
    Usage,
    UsageChunk,
)

__all__ = [
    "MAX_ERROR_CHARS",
    "Finalize",
    "Repair",
    "TryFactory",
    "AnswerTool",
    "answer_tool",
    "answer_tool_chunks",
    "extract_json",
    "parse_reply",
    "parse_structured",
    "prompt_instructions",
    "prompted_messages",
    "prompted_payload",
    "repair_messages",
]

MAX_ERROR_CHARS = 2000
"""How much of a validation error is quoted back to the model (and kept on the error)."""
_MAX_STARTS = 256
"""`extract_json` tries at most this many `{` / `[` positions (bounds hostile input)."""

Finalize = Callable[[ChatResponse], ChatResponse]
TryFactory = Callable[[list[Message]], tuple[AsyncIterator[StreamChunk], Finalize]]
"""One try of a call for these messages: its chunk source and the finalize that validates it."""


# ----- parsing -----------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\r?\n(.*?)```", re.DOTALL)


def _loads(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except (ValueError, RecursionError):
        return False, None


def extract_json(text: str) -> Any:
    """The JSON value in a model's reply: the whole text, else a fenced block, else the first value.

    In order: the stripped text when it is JSON as a whole; else the first fenced block
    (```json ... ``` or plain ```) whose content is JSON; else the first complete object or array
    that starts at a `{` or `[` (prose before and after it is ignored). Raises `ValueError` when
    there is none.
    """
    stripped = text.strip()
    if stripped:
        ok, value = _loads(stripped)
        if ok:
            return value
    for match in _FENCE.finditer(text):
        ok, value = _loads(match.group(1).strip())
        if ok:
            return value
    decoder = json.JSONDecoder()
    starts = 0
    for index, char in enumerate(text):
        if char not in "{[":
            continue
        starts += 1
        if starts > _MAX_STARTS:
            break
        try:
            value, _end = decoder.raw_decode(text, index)
        except (ValueError, RecursionError):
            continue
        return value
    raise ValueError("no JSON value found in the reply")


def _clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


CUT_NOTE = 'the reply was cut at max_tokens (finish_reason "length")'


def parse_structured(
    payload: Any,
    options: ChatOptions,
    *,
    provider: str,
    cut: bool = False,
    finish_reason: str | None = None,
    raw_text: str | None = None,
) -> Any:
    """The structured value of a reply's payload (text is JSON-decoded), validated by a pydantic class.

    Raises `StructuredOutputError` with the decoder's or validator's message, the reply's
    `raw_text` and `finish_reason`; a reply cut at `max_tokens` (`finish_reason="length"`, or the
    older `cut=True`) says so, since then the fix is a larger limit, not a better prompt.
    """
    if cut and finish_reason is None:
        finish_reason = "length"
    fmt = options.response_format
    raw = payload if isinstance(payload, str) else _dumps(payload)
    try:
        data = json.loads(payload) if isinstance(payload, str) else payload
        parsed = fmt.model_validate(data) if isinstance(fmt, type) else data
    except Exception as exc:
        detail = _clip(f"{type(exc).__name__}: {exc}")
        raise _error(detail, raw, provider=provider, finish_reason=finish_reason, raw_text=raw_text) from exc
    return parsed


def _error(
    detail: str, raw: str, *, provider: str, finish_reason: str | None, raw_text: str | None
) -> StructuredOutputError:
    if finish_reason == "length":
        message = f"{CUT_NOTE} before it matched the requested response_format (raise max_tokens): {detail}"
    else:
        message = f"the reply does not match the requested response_format: {detail}"
    return StructuredOutputError(
        message,
        provider=provider,
        validation_error=detail,
        raw=_clip(raw, 10_000),
        raw_text=None if raw_text is None else _clip(raw_text, 10_000),
        finish_reason=finish_reason,
    )


def parse_reply(payload: Callable[[], Any], response: ChatResponse, options: ChatOptions, *, provider: str) -> Any:
    """`parse_structured` for a whole reply: the payload (`payload()`, which may itself raise
    `StructuredOutputError`, e.g. "prompted" mode's `prompted_payload`) with the reply's text and
    finish reason attached to any error."""
    finish_reason = response.finish_reason
    try:
        raw = payload()
    except StructuredOutputError as exc:
        if exc.finish_reason is not None:
            raise
        raise _error(
            exc.validation_error or exc.message,
            exc.raw,
            provider=provider,
            finish_reason=finish_reason,
            raw_text=response.text,
        ) from exc
    return parse_structured(raw, options, provider=provider, finish_reason=finish_reason, raw_text=response.text)


def prompted_payload(text: str, options: ChatOptions, *, provider: str) -> Any:
    """ "prompted" mode's payload: the JSON value in the reply text (`extract_json`)."""
    try:
        return extract_json(text)
    except ValueError as exc:
        raise StructuredOutputError(
            f"the reply does not match the requested response_format: {exc}",
            provider=provider,
            validation_error=str(exc),
            raw=_clip(text, 10_000),
        ) from exc


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


# ----- prompted mode -----------------------------------------------------------------------


def prompt_instructions(schema: dict[str, Any]) -> str:
    """The system-prompt text of "prompted" mode."""
    return (
        "Answer with a single JSON value that matches this JSON schema, and nothing else: "
        "no prose, no explanation, no code fences.\n"
        f"JSON schema:\n{json.dumps(schema, indent=None, sort_keys=True)}"
    )


def prompted_messages(messages: Sequence[Message], schema: dict[str, Any]) -> list[Message]:
    """`messages` with the schema instructions appended to the first system message (or one added)."""
    instructions = prompt_instructions(schema)
    out = list(messages)
    for index, message in enumerate(out):
        if message.role == Role.SYSTEM:
            text = message.text
            out[index] = Message.system(f"{text}\n\n{instructions}" if text else instructions)
            return out
    return [Message.system(instructions), *out]


# ----- tool mode ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerTool:
    """The synthetic tool of "tool" mode: its name, and whether the schema travels wrapped."""

    name: str
    parameters: dict[str, Any]
    description: str
    wrapped: bool
    """The schema is not an object: it travels as `{"value": <schema>}`."""


_TOOL_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]")


def answer_tool(options: ChatOptions) -> AnswerTool | None:
    """The answer tool for `options.response_format` (None without one); its name avoids the caller's tools."""
    schema = options.json_schema()
    if schema is None:
        return None
    name = _TOOL_NAME_BAD.sub("_", options.schema_name())[:64] or "response"
    taken = {tool.name for tool in options.tools}
    while name in taken:
        name = (name + "_answer")[-64:]
    kind = schema.get("type", "object" if "properties" in schema else None)
    wrapped = kind != "object"
    parameters = {"type": "object", "properties": {"value": schema}, "required": ["value"]} if wrapped else dict(schema)
    description = str(schema.get("description") or "Give the final answer in exactly this structure.")
    return AnswerTool(name=name, parameters=parameters, description=description, wrapped=wrapped)


async def answer_tool_chunks(source: AsyncIterator[StreamChunk], tool: AnswerTool) -> AsyncIterator[StreamChunk]:
    """`source` with the answer tool's call turned into reply text (see the module doc).

    Its argument deltas are dropped; its complete call becomes one `ContentChunk` with the JSON of
    its arguments (unwrapped); a "tool_use" finish becomes "stop" when no other call was made.
    """
    other_calls = False
    answer_indexes: set[int] = set()  # the delta `index` of the answer tool's call (named in its first delta)
    try:
        async for chunk in source:
            if isinstance(chunk, ToolCallDeltaChunk):
                if chunk.name == tool.name:
                    answer_indexes.add(chunk.index)
                if chunk.index not in answer_indexes:
                    yield chunk
                continue
            if isinstance(chunk, ToolUseChunk):
                call = chunk.tool_call
                if call.name != tool.name:
                    other_calls = True
                    yield chunk
                    continue
                arguments: Any = dict(call.arguments)
                if tool.wrapped:
                    arguments = arguments.get("value")
                yield ContentChunk(text=json.dumps(arguments))
                continue
            if isinstance(chunk, EndChunk) and chunk.finish_reason == "tool_use" and not other_calls:
                yield chunk.model_copy(update={"finish_reason": "stop"})
                continue
            yield chunk
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


# ----- repair ------------------------------------------------------------------------------


def repair_messages(
    messages: Sequence[Message], bad_reply: str, error: StructuredOutputError, options: ChatOptions
) -> list[Message]:
    """The next try's messages: the originals, the bad reply, and the validation error fed back."""
    schema = options.json_schema() or {}
    feedback = (
        "Your previous reply did not match the required JSON schema.\n"
        f"Error: {_clip(error.validation_error or error.message)}\n"
        "Reply again with only a JSON value that matches this schema, and nothing else:\n"
        f"{json.dumps(schema, sort_keys=True)}"
    )
    return [*messages, Message.assistant(bad_reply), Message(role=Role.USER, parts=(TextPart(text=feedback),))]


class _TryLog(list[Attempt]):
    """One try's attempt log: remembers which entries were the call's own (`append`) and which a
    nested call already reported (`extend`), to replay them into the call's log the same way."""

    def __init__(self) -> None:
        super().__init__()
        self.foreign: set[int] = set()

    def extend(self, attempts: Any) -> None:
        for attempt in attempts:
            self.foreign.add(len(self))
            super().append(attempt)

    def replay(self, target: list[Attempt] | None) -> None:
        if target is None:
            return
        for index, attempt in enumerate(self):
            if index in self.foreign:
                target.extend([attempt])
            else:
                target.append(attempt)


class Repair:
    """The chunk source and finalize of a repairing `chat()` call (see the module doc)."""

    def __init__(
        self,
        *,
        provider: str,
        model: str,
        messages: list[Message],
        options: ChatOptions,
        retries: int,
        start: TryFactory,
    ) -> None:
        self.provider = provider
        self.model = model
        self.messages = messages
        self.options = options
        self.retries = retries
        self.start = start
        self.tries = 0
        self._finalize: Finalize | None = None

    def finalize(self, response: ChatResponse) -> ChatResponse:
        """The last try's finalize, applied to the call's assembled reply (its value already validated)."""
        return response if self._finalize is None else self._finalize(response)

    async def chunks(self) -> AsyncIterator[StreamChunk]:
        log = attempt_log()
        messages = self.messages
        spent = Usage()
        last: StructuredOutputError | None = None
        for number in range(1 + self.retries):
            self.tries = number + 1
            buffered, finalize, error = await self._one_try(messages, log)
            if error is None:
                self._finalize = finalize
                if spent != Usage():
                    yield UsageChunk(usage=spent)
                for chunk in buffered:
                    yield chunk
                return
            last = error
            assembler = ResponseAssembler(provider=self.provider, model=self.model)
            for chunk in buffered:
                assembler.add(chunk)
                if isinstance(chunk, UsageChunk):
                    spent = spent + chunk.usage
            messages = repair_messages(self.messages, assembler.response().text, error, self.options)
        assert last is not None
        tries = self.tries
        cut = f" ({CUT_NOTE}: raise max_tokens)" if last.cut else ""
        raise StructuredOutputError(
            f"no reply matched the requested response_format after {tries} "
            f"{'try' if tries == 1 else 'tries'}; the last one{cut} failed with: "
            f"{last.validation_error or last.message}",
            provider=self.provider,
            validation_error=last.validation_error,
            raw=last.raw,
            raw_text=last.raw_text,
            finish_reason=last.finish_reason,
        ) from last

    async def _one_try(
        self, messages: list[Message], log: list[Attempt] | None
    ) -> tuple[list[StreamChunk], Finalize, StructuredOutputError | None]:
        """Run one try to its end, buffered; its attempts go to `log` (the failed one marked)."""
        source, finalize = self.start(messages)
        tries = _TryLog()
        clock = AttemptClock(self.provider)
        buffered: list[StreamChunk] = []
        outcome: BaseException | None = None
        error: StructuredOutputError | None = None
        try:
            with attempt_log_scope(tries):
                try:
                    async for chunk in source:
                        clock.first_chunk()
                        buffered.append(chunk)
                finally:
                    aclose = getattr(source, "aclose", None)
                    if aclose is not None:
                        await aclose()
            assembler = ResponseAssembler(provider=self.provider, model=self.model)
            for chunk in buffered:
                assembler.add(chunk)
            finalize(assembler.response())
        except StructuredOutputError as exc:
            error = exc
            outcome = exc
        except BaseException as exc:
            outcome = exc
            if not tries:
                tries.append(clock.done(exc))
            tries.replay(log)
            raise
        if not tries:
            tries.append(clock.done(outcome))
        elif error is not None:
            index = len(tries) - 1
            tries[index] = tries[index].model_copy(update={"outcome": type(error).__name__, "error": error.message})
        tries.replay(log)
        return buffered, finalize, error
