"""OpenAI Chat Completions (type "openai") and any OpenAI-compatible server (type "compatible").

Built on the official `openai` SDK with its own retries switched off (`max_retries=0`): the shared
policy in `zeph_providers.retry` retries instead, within the call's deadline. `chat_stream()` streams
on the wire (`stream=True`, `stream_options.include_usage`) through the SDK's `with_streaming_response`:
the SDK builds, authenticates and sends the request and raises for an HTTP error status, the SSE body
is decoded here and each `data:` line parsed with `json` into a plain dict (no pydantic model per
chunk), with the SDK stream's semantics (`[DONE]`, in-stream `error` objects, timeouts).
`chat()` (options.stream False) makes one non-streamed request through the SDK's
`with_raw_response` (the SDK still builds the request, authenticates and sends it; the one JSON
body is parsed here with `json`, skipping the SDK's pydantic model construction) and converts the
`chat.completion` object into the same chunk vocabulary, in the same order, with the same tool-call
ids, so `chat()` equals `chat_stream().response`.

Wire mapping, in short:

- text deltas -> `ContentChunk` as they arrive; a `refusal` (delta or message field) is text as
  well, and a reply that carried one finishes with "refusal" (as Claude's `stop_reason: refusal`
  does); with `response_format` such a reply raises `RefusalError` (its `refusal` text) instead
  of failing to parse;
- `reasoning_content` / `reasoning` deltas (llama.cpp, vLLM, DeepSeek, ...) -> `ThinkingChunk`.
  OpenAI's own models send no reasoning text on Chat Completions (summaries are a Responses API
  feature): only the count, `completion_tokens_details.reasoning_tokens` -> `reasoning_tokens`;
- `logprobs.content` (and `logprobs.refusal`) entries -> `LogprobsChunk`s, when asked for;
- tool-call fragments, keyed by `index`, stream as `ToolCallDeltaChunk`s (index = the call's
  position, see `_tools`) and are reassembled and emitted as complete `ToolUseChunk`s when the
  choice finishes; a call without an id gets a stable generated one;
- usage -> exactly one `UsageChunk` at the end (zeros when the server sent none);
  `prompt_tokens_details.cached_tokens` -> `cache_read_tokens`, `prompt_tokens` minus those ->
  `input_tokens` (uncached, as `Usage` defines it; `usage.prompt_tokens` is OpenAI's figure);
  `completion_tokens_details.reasoning_tokens` -> `reasoning_tokens` (a part of `output_tokens`);
- a stream that ends without a finish reason raises `BadResponseError` after what it delivered;
  a complete non-streamed body without one is taken as "stop" (its body is whole by definition).

Typed per-call options (`accepted_options`): `reasoning_effort`, `parallel_tool_calls`, `logprobs`,
`top_logprobs`, strict tools, and `dimensions` for embeddings (sent; a vector of another length is a
`BadResponseError`, as a compatible server that ignores it would otherwise go unnoticed). `n` > 1 is
refused (one reply per call; make concurrent calls). See `_openai_request` for the request side.

Layout: model families and capabilities, then the request (its pure conversion in
`_openai_request`; the provider adds the checks that need its config), the stream and the chunk
translator, embeddings, model metadata, and errors. The reply's plain-JSON pieces (usage,
logprobs, a `chat.completion` body -> one chunk, embedding vectors) live in `_openai_reply`; the
stream's state and its SSE body -> parsed `data:` payloads in `_openai_stream`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx2
import openai
from openai import AsyncOpenAI

from zeph_providers.backends._convert import map_finish_reason, report_embedding_usage
from zeph_providers.backends._errors import error_event, status_error
from zeph_providers.backends._models import llamacpp_count, openai_models
from zeph_providers.backends._openai_reply import completion_chunk, embedding_vectors, extra_text, logprobs, usage
from zeph_providers.backends._openai_request import TOOL_CHOICES, build_request, check_options
from zeph_providers.backends._openai_request import convert_messages as convert_messages  # re-exported
from zeph_providers.backends._openai_request import convert_response_format as convert_response_format
from zeph_providers.backends._openai_stream import StreamState, sse_payloads
from zeph_providers.backends._remote import RemoteProvider, httpx2_client
from zeph_providers.backends._wire import loads
from zeph_providers.config import CompatibleConfig, OpenAIConfig
from zeph_providers.errors import (
    BadResponseError,
    InvalidRequestError,
    LlmError,
    ProviderTimeoutError,
    RefusalError,
    UnsupportedCapabilityError,
)
from zeph_providers.models_info import ModelInfo
from zeph_providers.options import Capabilities, ChatOptions
from zeph_providers.structured import answer_tool, answer_tool_chunks, prompted_payload
from zeph_providers.types import (
    ChatResponse,
    ContentChunk,
    EndChunk,
    FinishReason,
    LogprobsChunk,
    Message,
    Role,
    StreamChunk,
    ThinkingChunk,
    ToolDefinition,
    Usage,
    UsageChunk,
)

__all__ = [
    "NO_KEY_PLACEHOLDER",
    "OPENAI_BASE_URL",
    "OpenAIProvider",
    "build",
    "has_vision",
    "is_reasoning_model",
    "openai_capabilities",
]

OPENAI_BASE_URL = "https://api.openai.com/v1"
NO_KEY_PLACEHOLDER = "not-needed"
"""Sent to compatible servers that need no key: the SDK refuses to run without one."""

# ----- model families ---------------------------------------------------------------------


def _family(model: str) -> str:
    name = model.lower().strip()
    if name.startswith("ft:"):
        name = name[3:]
    return name.rsplit("/", 1)[-1]


_REASONING = re.compile(r"^(?:o1|o3|o4)(?:-|$)|^gpt-5")
_VISION = re.compile(
    r"^(?:gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-4-turbo|gpt-4-vision"
    r"|o1(?!-mini|-preview)(?:-|$)|o3(?!-mini)(?:-|$)|o4(?:-|$))"
)


def is_reasoning_model(model: str) -> bool:
    """o1 / o3 / o4 / gpt-5 families: they take `max_completion_tokens` and reason."""
    return bool(_REASONING.search(_family(model)))


def has_vision(model: str) -> bool:
    """OpenAI models known to accept image input."""
    return bool(_VISION.search(_family(model)))


def openai_capabilities(config: OpenAIConfig) -> Capabilities:
    """Honest capabilities: vision and thinking from the model family (openai) or config (compatible)."""
    compatible = isinstance(config, CompatibleConfig)
    vision = config.vision if config.vision is not None else (not compatible and has_vision(config.model))
    return Capabilities(
        streaming=True,
        embeddings=bool(config.embedding_model),
        tools=True,
        vision=vision,
        structured_output=True,
        thinking=compatible or is_reasoning_model(config.model),
        documents=not compatible,  # OpenAI's file input; compatible servers have none
    )


# ----- errors: the body's code (the request's conversion lives in `_openai_request`) ------


def _error_code(exc: openai.APIError) -> str:
    """The body's `code` and `type` (llama.cpp puts the HTTP status in `code`: left out)."""
    parts = [str(v) for v in (exc.code, exc.type) if v and not str(v).isdigit()]
    return " ".join(dict.fromkeys(parts))


# ----- the provider -----------------------------------------------------------------------


class OpenAIProvider(RemoteProvider[OpenAIConfig]):
    """Chat Completions over the official SDK; also serves `type = "compatible"` servers."""

    backend = "openai"
    default_base_url = OPENAI_BASE_URL
    accepted_options = frozenset(
        {"reasoning_effort", "parallel_tool_calls", "logprobs", "top_logprobs", "strict_tools"}
    )
    embedding_dimensions = True

    def __init__(self, config: OpenAIConfig, *, transport: Any = None) -> None:
        super().__init__(config, capabilities=openai_capabilities(config))
        self.openai_config = config
        self.compatible = isinstance(config, CompatibleConfig)
        self.structured_mode = config.structured_output or "native"
        """How `response_format` is asked for: native, tool or prompted (`zeph_providers.structured`)."""
        api_key = self.api_key
        if config.use_max_completion_tokens is not None:
            self._max_completion_tokens = config.use_max_completion_tokens
        else:
            self._max_completion_tokens = not self.compatible and is_reasoning_model(config.model)
        self._http = httpx2_client(config, transport=transport, on_response=self.observe_response)
        self._client = AsyncOpenAI(
            api_key=api_key or NO_KEY_PLACEHOLDER,
            organization=config.organization,
            base_url=self.base_url,
            max_retries=0,
            timeout=httpx2.Timeout(config.timeout_secs, connect=config.connect_timeout_secs),
            http_client=self._http,
        )
        self._on_close(self._client.close)
        self._on_close(self._http.aclose)
        # The SDK fills these from OPENAI_* environment variables; never send them anywhere
        # the config did not ask for (a compatible server is a third party).
        self._client.admin_api_key = None
        self._client.webhook_secret = None
        if self.compatible:
            self._client.organization = config.organization
            self._client.project = None

    # ----- request ----------------------------------------------------------------------

    def _check_request(self, messages: list[Message], options: ChatOptions) -> None:
        super()._check_request(messages, options)
        if options.top_k is not None and not self.compatible:
            raise UnsupportedCapabilityError(
                "top_k",
                provider=self.name,
                detail='the OpenAI API has no top_k; use type = "compatible" for servers that accept it',
            )
        for message in messages:
            if message.role != Role.USER and message.images:
                raise UnsupportedCapabilityError(
                    f"images in {message.role.value} messages",
                    provider=self.name,
                    detail="the Chat Completions API takes images in user messages only",
                )
        choice = options.tool_choice
        if choice is not None and choice not in TOOL_CHOICES and choice not in {t.name for t in options.tools}:
            raise InvalidRequestError(
                f"tool_choice {choice!r} is neither auto/none/required nor the name of a given tool",
                provider=self.name,
            )
        if choice in ("required", "any") and not options.tools:
            raise InvalidRequestError("tool_choice 'required' needs tools", provider=self.name)
        check_options(options, provider=self.name)

    # ----- structured output: the mode's hooks (`zeph_providers.structured`) -------------

    def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        source = super()._stream(messages, options)
        tool = answer_tool(options) if self.structured_mode == "tool" else None
        return source if tool is None else answer_tool_chunks(source, tool)

    def _structured_payload(self, response: ChatResponse, options: ChatOptions) -> Any:
        if self.structured_mode == "prompted":
            return prompted_payload(response.text, options, provider=self.name)
        return response.text

    def build_request(self, messages: Sequence[Message], options: ChatOptions) -> dict[str, Any]:
        """The keyword arguments for `chat.completions.create` (without `stream`/`timeout`); see `_openai_request`."""
        return build_request(self.openai_config, messages, options, max_completion_tokens=self._max_completion_tokens)

    # ----- streaming --------------------------------------------------------------------

    async def _attempt(
        self, messages: list[Message], options: ChatOptions, deadline: float
    ) -> AsyncIterator[StreamChunk]:
        params = self.build_request(messages, options)
        if not options.stream:
            # Everything is fetched and converted before the first chunk, so the retry loop can
            # still retry any failure of this one request.
            for item in await self._complete(params, deadline):
                yield item
            return
        state = StreamState(self.name, model=self.model)
        request = self._client.chat.completions.with_streaming_response.create(
            **params, stream=True, timeout=self._timeout(deadline)
        )
        async with request as raw:  # HTTP error statuses raise APIStatusError here, as before
            async for data in sse_payloads(raw.http_response, state, self.name):
                try:
                    out = self._on_chunk(data, state)
                except LlmError:
                    raise
                except (AttributeError, TypeError, ValueError, KeyError) as exc:
                    raise BadResponseError(
                        f"malformed stream chunk ({type(exc).__name__}: {exc})", provider=self.name
                    ) from exc
                for item in out:
                    yield item
        if state.finish is None and state.done and state.usage is not None:
            # A compatible server that sent its final usage chunk and [DONE] but names no reason:
            # complete, as `chat()` takes the same reply.
            state.finish = "stop"
        if state.finish is None:
            if not state.events:
                raise BadResponseError(
                    "the server sent no stream events (is this an OpenAI-compatible streaming endpoint?)",
                    provider=self.name,
                )
            raise BadResponseError("the stream ended before the reply finished (no finish_reason)", provider=self.name)
        for item in self._end(state):
            yield item

    def _end(self, state: StreamState) -> list[StreamChunk]:
        out = self._complete_calls(state)  # calls a server finished without emitting at the finish chunk
        finish: FinishReason = "refusal" if state.refused else map_finish_reason(state.finish)
        return [*out, UsageChunk(usage=state.usage or Usage()), EndChunk(finish_reason=finish, model=state.model)]

    # ----- one non-streamed request: replayed as one chunk ------------------------------

    async def _complete(self, params: dict[str, Any], deadline: float) -> list[StreamChunk]:
        """`chat()`'s request: one `chat.completion` body, replayed through the chunk translator."""
        params = {key: value for key, value in params.items() if key != "stream_options"}  # stream-only
        raw = await self._client.chat.completions.with_raw_response.create(**params, timeout=self._timeout(deadline))
        chunk = completion_chunk(loads(raw.http_response.content, provider=self.name), self.name)
        state = StreamState(self.name, model=self.model)
        try:
            out = self._on_chunk(chunk, state)
        except LlmError:
            raise
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            raise BadResponseError(f"malformed response ({type(exc).__name__}: {exc})", provider=self.name) from exc
        return out + self._end(state)

    # ----- the chunk translator ---------------------------------------------------------

    def _on_chunk(self, chunk: Any, state: StreamState) -> list[StreamChunk]:
        """One parsed `chat.completion.chunk` (a plain dict) -> our chunks."""
        if not isinstance(chunk, dict):
            raise BadResponseError("malformed stream chunk (not a JSON object)", provider=self.name)
        out: list[StreamChunk] = []
        state.events += 1
        chunk_id = chunk.get("id")
        if chunk_id and not state.response_id:
            state.calls.id_seed = (str(chunk_id),)
        model = chunk.get("model")
        if model:
            state.model = str(model)
        raw_usage = chunk.get("usage")
        if raw_usage is not None:
            state.usage = usage(raw_usage, self.name)  # cumulative where a server repeats it: keep the last
        for choice in chunk.get("choices") or ():
            if (choice.get("index") or 0) != 0:
                continue  # we never ask for n > 1
            delta = choice.get("delta")
            if delta is not None:
                thinking = extra_text(delta, "reasoning_content", "reasoning")
                if thinking:
                    out.append(ThinkingChunk(text=thinking))
                content = delta.get("content")
                if content:
                    out.append(ContentChunk(text=str(content)))
                refusal = delta.get("refusal")
                if refusal:
                    state.refused = True
                    out.append(ContentChunk(text=str(refusal)))
                for call in delta.get("tool_calls") or ():
                    function = call.get("function") or {}
                    fragment = function.get("arguments")
                    out.extend(state.calls.add(call.get("index"), call.get("id"), function.get("name"), fragment))
                legacy = delta.get("function_call")
                if legacy is not None:  # the deprecated single-function shape
                    out.extend(state.calls.add(0, None, legacy.get("name"), legacy.get("arguments")))
            tokens = logprobs(choice.get("logprobs"), self.name)
            if tokens:
                out.append(LogprobsChunk(tokens=tokens))
            finish = choice.get("finish_reason")
            if finish:
                state.finish = str(finish)
                out.extend(self._complete_calls(state))
        return out

    @staticmethod
    def _complete_calls(state: StreamState) -> list[StreamChunk]:
        return list(state.calls.finish())  # each call's closing delta (when due) and its ToolUseChunk

    # ----- structured output ------------------------------------------------------------

    def _finalize(self, response: ChatResponse, options: ChatOptions) -> ChatResponse:
        if options.response_format is not None and response.finish_reason == "refusal":
            raise RefusalError(response.text, provider=self.name)
        return super()._finalize(response, options)

    # ----- embeddings -------------------------------------------------------------------

    async def embed_texts_dimensions(self, texts: list[str], dimensions: int) -> list[list[float]]:
        return await self._embed_batch(texts, lambda batch, deadline: self._embed_request(batch, deadline, dimensions))

    async def _embed_attempt(self, texts: list[str], deadline: float) -> list[list[float]]:
        return await self._embed_request(texts, deadline, self.openai_config.embedding_dimensions)

    async def _embed_request(self, texts: list[str], deadline: float, dimensions: int | None) -> list[list[float]]:
        model = self.openai_config.embedding_model
        if not model:
            raise UnsupportedCapabilityError("embeddings", provider=self.name, detail="set embedding_model")
        sized: dict[str, Any] = {} if dimensions is None else {"dimensions": dimensions}
        try:
            response = await self._client.embeddings.create(
                input=texts, model=model, encoding_format="float", timeout=self._timeout(deadline), **sized
            )
        except ValueError as exc:  # the SDK's own post-parsing ("No embedding data received")
            raise BadResponseError(f"malformed embeddings response ({exc})", provider=self.name) from exc
        vectors = embedding_vectors(response.data, len(texts), dimensions, self.name)
        usage = getattr(response, "usage", None)
        report_embedding_usage(getattr(usage, "prompt_tokens", None), provider=self.name)
        return vectors

    # ----- model metadata (wire shapes in `_models`; see `zeph_providers.models_info`) ----

    async def fetch_context_window(self) -> int | None:
        """A compatible server's own figure from `/v1/models` (the entry named like the model, or the
        only one listed); OpenAI's list has none, so the table answers."""
        if self.compatible and self._fetched_window is None:
            models = await self.list_models()
            named = [m for m in models if m.id == self.model] or (models if len(models) == 1 else [])
            if named:
                self._fetched_window = named[0].context_window
        return self.context_window

    async def _list_models(self, deadline: float) -> list[ModelInfo]:
        raw = await self._client.models.with_raw_response.list(timeout=self._timeout(deadline))
        return openai_models(loads(raw.http_response.content, provider=self.name), self.name)

    async def count_tokens(self, messages: Sequence[Message], *, tools: Sequence[ToolDefinition] = ()) -> int:
        """Compatible servers: llama.cpp's `/apply-template` + `/tokenize` (see `_models.llamacpp_count`)."""
        if not self.compatible:
            detail = "the Chat Completions API has no token-counting endpoint (tiktoken, not a dependency, estimates)"
            raise UnsupportedCapabilityError("count_tokens", provider=self.name, detail=detail)
        body = self.build_request(messages, ChatOptions.from_kwargs({"tools": list(tools)}))
        request: dict[str, Any] = {k: body[k] for k in ("messages", "tools") if k in body}
        return await self.api_call(lambda deadline: llamacpp_count(self, request, self._timeout(deadline)))

    # ----- errors -----------------------------------------------------------------------

    def _map_error(self, exc: BaseException) -> LlmError:
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc)
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeoutError("request timed out", provider=self.name)
        if isinstance(exc, openai.APIResponseValidationError):
            return BadResponseError(f"malformed response: {exc.message}", provider=self.name)
        if isinstance(exc, openai.APIError) and not isinstance(exc, openai.APIConnectionError):
            return error_event(exc.body if exc.body is not None else exc.message, provider=self.name)
        return super()._map_error(exc)

    def _status_error(self, exc: openai.APIStatusError) -> LlmError:
        body = exc.body
        message = exc.message
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            message = body["message"]
        elif isinstance(body, str) and body.strip():
            message = body.strip()
        return status_error(
            exc.status_code, message, provider=self.name, code=_error_code(exc), headers=exc.response.headers
        )


build = OpenAIProvider.build
