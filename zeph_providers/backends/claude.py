"""Anthropic Claude through the official `anthropic` SDK (the Messages API).

`chat_stream()` streams on the wire (`messages.create(stream=True)` through the SDK's
`with_streaming_response`: the SSE events are parsed here with `json`). `chat()` (options.stream False)
makes one non-streamed request through the SDK's `with_raw_response` (request building, auth and
transport stay the SDK's; the `message` JSON is parsed here) and replays that message object as the
equivalent event sequence through the same translator, so `stream.response == await chat(...)`.
A stream is read to its end after `message_stop` (a few trailing events at most), so the
keep-alive connection goes back to the pool instead of being closed half-read.

Decisions worth knowing:

- The SDK's own retries are off (`max_retries=0`); the shared `retry.py` policy retries instead.
- anthropic 2.x dropped `temperature`/`top_p`/`top_k` from `messages.create`; they travel in
  `extra_body`, together with anything passed as `extra={...}`. Claude has no `seed`: it is not sent.
- Structured output uses a forced tool: `response_format` becomes one extra tool (named from the
  schema) whose `input_schema` is the schema, and `tool_choice` forces it. That synthetic call is
  NOT surfaced as a tool call (an agent loop would try to run it): its JSON arguments are streamed
  as the reply text (`ContentChunk`s, fragment by fragment), `resp.parsed` holds the validated
  object and the finish reason is "stop". A schema that is not an object is wrapped in
  `{"value": ...}` on the wire and unwrapped on the way back. When the caller also passes tools,
  the model must call one of them or the answer tool (`tool_choice` "any" unless given); if it
  calls one of the caller's tools, the reply carries those calls and `parsed` stays `None`.
  With extended thinking the API refuses a forced tool, so the answer tool is offered with "any".
- Tool calls: each `tool_use` block's `input_json_delta` fragments stream as `ToolCallDeltaChunk`s
  (index = the call's position among the reply's calls, not the content block index; see
  `_tools`), and the complete `ToolUseChunk` comes at its `content_block_stop`. The synthetic
  structured-output call sends no deltas and takes no position.
- Thinking: `thinking_delta` -> `ThinkingChunk(text)`, `signature_delta` ->
  `ThinkingChunk(text="", signature=...)`, each with `block` = the content block index, so the
  assembler rebuilds every block (`ChatResponse.thinking_blocks`, several per reply, each signed);
  a `redacted_thinking` block -> one `RedactedThinkingChunk(data)`. `to_message()` sends them all
  back in order. Thinking parts in history are sent back as `thinking` blocks only when they carry
  a signature (the API rejects unsigned ones).
- Stop reasons: `pause_turn` and `refusal` are finish reasons of their own (not "error");
  `stop_sequence` (which one matched) -> `EndChunk.stop_sequence` / `ChatResponse.stop_sequence`.
- Usage: `cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens` ->
  `Usage.cache_write_5m_tokens` / `cache_write_1h_tokens` (the TTL breakdown of `cache_write_tokens`).
- Documents (`DocumentPart`): `capabilities.documents` is True; see `_claude_request`.
- Claude has no embeddings API: `capabilities.embeddings` is False, so `embed()` raises
  `UnsupportedCapabilityError`.

Layout: capabilities, then the request (its pure conversion in `_claude_request`, so this module
stays one screenful per concern), the stream (its event -> chunk translator and the non-streamed
`message` -> events replay in `_claude_reply`), and the provider with its error mapping and model
metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anthropic
import httpx2

from zeph_providers.backends._claude_reply import ErrorBody, StreamTranslator, message_events
from zeph_providers.backends._claude_reply import map_stop_reason as map_stop_reason  # re-exported
from zeph_providers.backends._claude_request import (
    DEFAULT_MAX_TOKENS,
    _split_trailing_json,
    _trailing_json,
    build_request,
    convert_messages,
    convert_tool_choice,
    convert_tools,
    structured_tool,
)
from zeph_providers.backends._convert import get_field as get
from zeph_providers.backends._convert import iter_sse
from zeph_providers.backends._errors import error_event, status_error
from zeph_providers.backends._models import (
    COUNT_TOKENS_FIELDS,
    anthropic_model,
    anthropic_models,
    anthropic_token_count,
)
from zeph_providers.backends._remote import RemoteProvider, httpx2_client
from zeph_providers.backends._wire import drain, loads
from zeph_providers.config import ClaudeConfig
from zeph_providers.errors import (
    BadResponseError,
    ConfigError,
    InvalidRequestError,
    LlmError,
)
from zeph_providers.models_info import ModelInfo
from zeph_providers.options import Capabilities, ChatOptions
from zeph_providers.structured import prompted_payload
from zeph_providers.types import (
    ChatResponse,
    Message,
    StreamChunk,
    ToolDefinition,
)

__all__ = [
    "CLAUDE_CAPABILITIES",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_TOKENS",
    "ClaudeProvider",
    "build",
    "convert_messages",
    "convert_tool_choice",
    "convert_tools",
    "map_stop_reason",
]

DEFAULT_BASE_URL = "https://api.anthropic.com"

CLAUDE_CAPABILITIES = Capabilities(
    streaming=True,
    embeddings=False,
    tools=True,
    vision=True,
    structured_output=True,
    thinking=True,
    documents=True,
)

# ----- the stream: its translator lives in `_claude_reply` (re-exported here) ------------------


def _stream_error(data: str, response: httpx2.Response) -> anthropic.APIStatusError:
    """An `event: error` inside the stream -> the `APIStatusError` the SDK raised for it."""
    body: Any = data
    try:
        body = json.loads(data)
        message = f"{body}"
    except (ValueError, RecursionError):
        message = data or f"Error code: {response.status_code}"
    return anthropic.APIStatusError(message, response=response, body=body)


# ----- the provider ---------------------------------------------------------------------------


class ClaudeProvider(RemoteProvider[ClaudeConfig]):
    """Claude through `anthropic.AsyncAnthropic`; pass `transport=` (an httpx2 transport) in tests."""

    backend = "claude"
    default_base_url = DEFAULT_BASE_URL

    def __init__(self, config: ClaudeConfig, *, transport: Any = None) -> None:
        super().__init__(config, capabilities=CLAUDE_CAPABILITIES)
        self.claude_config = config
        if self.api_key is None:
            raise ConfigError("no API key for Claude", provider=config.name)
        self._client = anthropic.AsyncAnthropic(
            api_key=self.api_key,
            base_url=self.base_url,
            max_retries=0,
            http_client=httpx2_client(config, transport=transport, on_response=self.observe_response),
        )
        if self.base_url != DEFAULT_BASE_URL:
            # The SDK adds ANTHROPIC_CUSTOM_HEADERS to every request; only what the config asked
            # for may go to a third-party base_url.
            ambient = os.environ.get("ANTHROPIC_CUSTOM_HEADERS", "")
            names = {line.partition(":")[0].strip().lower() for line in ambient.split("\n") if ":" in line}
            custom: Any = self._client._custom_headers
            for key in [k for k in custom if k.lower() in names]:
                del custom[key]
        self._on_close(self._client.close)

    # ----- request --------------------------------------------------------------------

    def build_request(self, messages: Sequence[Message], options: ChatOptions) -> dict[str, Any]:
        """The keyword arguments for `messages.create` (without `stream`/`timeout`); see `_claude_request`."""
        return build_request(self.claude_config, self.model, messages, options)

    # ----- RemoteProvider hooks ---------------------------------------------------------

    async def _attempt(
        self, messages: list[Message], options: ChatOptions, deadline: float
    ) -> AsyncIterator[StreamChunk]:
        try:
            params = self.build_request(messages, options)
            structured = None if self.claude_config.structured_output == "prompted" else structured_tool(options)
        except (TypeError, ValueError) as exc:  # our conversion, not the server: never retried
            raise InvalidRequestError(f"cannot build the request: {exc}", provider=self.name) from exc
        translator = StreamTranslator(
            provider=self.name,
            model=self.model,
            structured=structured[0] if structured is not None else None,
        )
        if not options.stream:
            # One request, converted whole before the first chunk (so the retry loop can retry it).
            for chunk in await self._complete(params, translator, deadline):
                yield chunk
            return
        # The raw SSE body through `with_streaming_response` (the SDK still builds, authenticates
        # and sends the request, and raises APIStatusError for an HTTP error status); each event's
        # JSON is parsed here into a plain dict, skipping the SDK's per-event model construction.
        create: Any = self._client.messages.with_streaming_response.create
        async with create(**params, stream=True, timeout=self.remaining(deadline)) as raw:
            response = raw.http_response
            body = response.aiter_bytes()
            events = iter_sse(body)
            try:
                async for name, data in events:
                    if name == "ping" or name is None:
                        continue
                    if name == "error":
                        raise _stream_error(data, response)
                    if not data:
                        continue
                    out = translator.feed(loads(data, provider=self.name, what="stream event"))
                    if translator.stopped:
                        # Read on to the end of the body (bounded; normally nothing is left) so the
                        # connection returns to the pool, before the final chunks go out.
                        await drain(body)
                    for chunk in out:
                        yield chunk
                    if translator.stopped:
                        break
            finally:
                await events.aclose()
        if not translator.stopped:
            raise BadResponseError("the stream ended before message_stop (truncated reply)", provider=self.name)

    async def _complete(
        self, params: dict[str, Any], translator: StreamTranslator, deadline: float
    ) -> list[StreamChunk]:
        create: Any = self._client.messages.with_raw_response.create
        raw = await create(**params, timeout=self.remaining(deadline))
        body = loads(raw.http_response.content, provider=self.name)
        try:
            events = message_events(body)
        except ErrorBody as exc:
            raise error_event(exc.body, provider=self.name, where="in the response body") from exc
        except TypeError as exc:
            raise BadResponseError(f"malformed response ({exc})", provider=self.name) from exc
        out: list[StreamChunk] = []
        for event in events:
            out.extend(translator.feed(event))
        return out

    def _map_error(self, exc: BaseException) -> LlmError:
        if isinstance(exc, anthropic.APIStatusError):
            return self._status_error(exc)
        if isinstance(exc, anthropic.APIResponseValidationError):
            return BadResponseError(f"unexpected response shape: {exc.message}", provider=self.name)
        return super()._map_error(exc)

    def _status_error(self, exc: anthropic.APIStatusError) -> LlmError:
        if exc.status_code < 400:  # an `event: error` inside a 200 stream: its type says what happened
            return error_event(exc.body if isinstance(exc.body, dict) else exc.message, provider=self.name)
        error = get(exc.body, "error", {}) if isinstance(exc.body, dict) else {}
        error_type = str(getattr(exc, "type", None) or get(error, "type", "") or "")
        message = str(getattr(exc, "api_message", None) or get(error, "message", "") or exc.message)
        text = f"{error_type}: {message}" if error_type else message
        return status_error(exc.status_code, text, provider=self.name, headers=exc.response.headers)

    # ----- model metadata (wire shapes in `_models`; see `zeph_providers.models_info`) ----

    async def _list_models(self, deadline: float) -> list[ModelInfo]:
        """`GET /v1/models`, every page (`after_id`)."""
        models: list[ModelInfo] = []
        after: str | None = None
        while True:
            page: dict[str, Any] = {"limit": 1000} if after is None else {"limit": 1000, "after_id": after}
            raw = await self._client.models.with_raw_response.list(**page, timeout=self.remaining(deadline))
            found, after = anthropic_models(loads(raw.http_response.content, provider=self.name), self.name)
            models.extend(found)
            if after is None:
                return models

    async def fetch_context_window(self) -> int | None:
        """`GET /v1/models/{model}`'s `max_input_tokens` (aliases resolve), else the maintained table's."""
        if self._fetched_window is None:

            async def retrieve(deadline: float) -> ModelInfo:
                raw = await self._client.models.with_raw_response.retrieve(self.model, timeout=self.remaining(deadline))
                return anthropic_model(loads(raw.http_response.content, provider=self.name), self.name)

            self._fetched_window = (await self.api_call(retrieve)).context_window
        return self.context_window

    async def count_tokens(self, messages: Sequence[Message], *, tools: Sequence[ToolDefinition] = ()) -> int:
        """`POST /v1/messages/count_tokens` with the request `chat()` would send (system, tools, thinking)."""
        params = self.build_request(messages, ChatOptions.from_kwargs({"tools": list(tools)}))
        params = {k: v for k, v in params.items() if k in COUNT_TOKENS_FIELDS}

        async def counted(deadline: float) -> int:
            raw = await self._client.messages.with_raw_response.count_tokens(**params, timeout=self.remaining(deadline))
            return anthropic_token_count(loads(raw.http_response.content, provider=self.name), self.name)

        return await self.api_call(counted)

    # ----- structured output ----------------------------------------------------------

    def _structured_payload(self, response: ChatResponse, options: ChatOptions) -> Any:
        """The answer tool's arguments, which were streamed as the reply text ("prompted": the JSON in the text)."""
        if self.claude_config.structured_output == "prompted":
            return prompted_payload(response.text, options, provider=self.name)
        return _trailing_json(response.text)

    def _finalize(self, response: ChatResponse, options: ChatOptions) -> ChatResponse:
        if options.response_format is None:
            return response
        if response.tool_calls and not response.text.strip():
            return response  # the model called one of the caller's tools instead of answering
        finalized = super()._finalize(response, options)
        if self.claude_config.structured_output == "prompted":
            return finalized  # the model's own text, streamed and not alike
        # A stream carries the model's own JSON text, a single message only the parsed input:
        # re-serialise so that `stream.response == await chat()` holds for structured output too.
        split = _split_trailing_json(finalized.text)
        if split is not None:
            finalized.text = split[0] + json.dumps(split[1])
        return finalized


build = ClaudeProvider.build
