"""OpenTelemetry spans and metrics for every call, following the GenAI semantic conventions.

Built on `zeph_providers.hooks` and on `opentelemetry-api` alone (the optional extra `otel`), as
the OpenTelemetry convention for libraries asks: spans and metrics go to the *global* tracer and
meter providers, so an application that installs and configures the SDK sees them with no
further step. Without the API installed this is a no-op; `[llm] telemetry = false` turns it off
for a registry. Nothing is imported until the first call (`import zeph_providers` stays light).

What a call produces (see docs/observability.md for a rendered tree):

- one span per call named `{gen_ai.operation.name} {gen_ai.request.model}` (`chat gpt-4o-mini`,
  `embeddings text-embedding-3-small`), kind CLIENT (INTERNAL for in-process backends), with
  `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`, the request parameters
  (`gen_ai.request.max_tokens`, `.temperature`, `.top_p`, `.top_k`, `.seed`, `.stop_sequences`,
  `.stream`), `gen_ai.response.model`, `gen_ai.response.finish_reasons`,
  `gen_ai.usage.input_tokens` / `.output_tokens` / `.cache_read.input_tokens` /
  `.cache_write.input_tokens`, `gen_ai.response.time_to_first_chunk` (streams), `error.type` and
  an ERROR status on failure, plus `zeph.provider` (the configured name), `zeph.cost_usd` (when
  known) and `zeph.attempts`;
- a router's members are calls of their own: child spans of the router's span;
- a call that made more than one try (retries; a router's members that never started) gets one
  `zeph.attempt` child span per try, with `zeph.attempt.number`, `.outcome`, `.wait` and the
  try's `error.type`;
- remote backends add `server.address` / `server.port`; the local backend adds `zeph.local.engine`,
  `zeph.local.queue_wait` (s waiting for the worker: the queue, and the model's load on the first
  request), `zeph.local.generation` (s from the engine taking the job to its end) and
  `zeph.local.time_to_first_token` (s);
- histograms `gen_ai.client.operation.duration` (s), `gen_ai.client.token.usage` ({token}, by
  `gen_ai.token.type`) and, for streams, `gen_ai.client.operation.time_to_first_chunk` (s), for
  the calls that reached a model (a router's own call is not measured twice).

Message contents are recorded (`gen_ai.input.messages` / `gen_ai.output.messages`) only with
`[llm] telemetry_content = true`; secrets never (error texts are already redacted).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from zeph_providers.hooks import Call, Hook
from zeph_providers.types import Attempt

__all__ = ["PROVIDER_NAMES", "Telemetry", "available"]

PROVIDER_NAMES = {
    "openai": "openai",
    "compatible": "openai",
    "claude": "anthropic",
    "ollama": "ollama",
    "local": "zeph.local",
    "candle": "zeph.local",
    "mock": "zeph.mock",
    "router": "zeph.router",
}
"""Backend type -> `gen_ai.provider.name` (the spec's well-known values where one applies)."""

_IN_PROCESS = frozenset({"local", "candle", "mock"})
_SPAN = "zeph_providers.telemetry.span"
_TRIES = "zeph_providers.telemetry.tries"
_STARTED_KEYS = "zeph_providers.telemetry.started_keys"
"""`call.attributes` already on the span from its start (only later ones are added at the end)."""
_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
_CACHE_LIMIT = 1024
"""Most cached attribute sets kept (distinct provider/model/error combinations in one process)."""
_TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]


def available() -> bool:
    """Whether `opentelemetry-api` is installed."""
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


class _Instruments:
    """The tracer and the three histograms, made on first use."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        from opentelemetry import metrics, trace

        try:
            __version__ = version("zeph-providers")
        except PackageNotFoundError:
            __version__ = "0"

        self.trace = trace
        self.tracer = trace.get_tracer("zeph_providers", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("zeph_providers", __version__, meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self.first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        from opentelemetry.trace import SpanKind, StatusCode

        self.client = SpanKind.CLIENT
        self.internal = SpanKind.INTERNAL
        self.error_status = StatusCode.ERROR


class Telemetry(Hook):
    """The OpenTelemetry subscriber (a registry adds one unless `[llm] telemetry = false`).

    For a provider built without a registry: `provider.hooks.add(Telemetry())`, or
    `zeph_providers.hooks.add_hook(Telemetry())` for every provider (then not also on a registry).
    `tracer_provider` / `meter_provider` default to the global ones.
    """

    def __init__(
        self, *, record_content: bool = False, tracer_provider: Any = None, meter_provider: Any = None
    ) -> None:
        self.record_content = record_content
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._instruments: _Instruments | None = None
        self._missing = False
        self._static: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._metric_sets: dict[
            tuple[str, str, str, str | None, str | None],
            tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]],
        ] = {}

    def _ready(self) -> _Instruments | None:
        if self._instruments is None and not self._missing:
            try:
                self._instruments = _Instruments(self._tracer_provider, self._meter_provider)
            except ImportError:
                self._missing = True
        return self._instruments

    # ----- hook ---------------------------------------------------------------------

    def before_request(self, call: Call) -> None:
        otel = self._ready()
        if otel is not None:
            call.data[_SPAN] = self._start(otel, call)

    def after_attempt(self, call: Call, attempt: Attempt) -> None:
        if _SPAN in call.data:
            call.data.setdefault(_TRIES, []).append(time.time_ns())

    def after_call(self, call: Call) -> None:
        otel = self._ready()
        if otel is None:
            return
        span = call.data.get(_SPAN)
        if span is None:  # refused by an earlier hook before this one saw the start
            span = self._start(otel, call)
        end_ns = call.start_time_ns + int((call.duration or 0.0) * 1e9)
        error = call.error
        error_type = _error_type(error)
        if span.is_recording():
            self._finish(otel, call, span, error_type, end_ns)
        span.end(end_time=end_ns)
        if call.children == 0:
            self._measure(otel, call, error_type)

    # ----- spans --------------------------------------------------------------------

    def _start(self, otel: _Instruments, call: Call) -> Any:
        context = None
        parent = call.parent
        if parent is not None and _SPAN in parent.data:
            context = otel.trace.set_span_in_context(parent.data[_SPAN])
        # All request attributes go in at creation, in one batch: samplers see them, and the SDK
        # cleans them once instead of once more in a separate set_attributes() (measured: the
        # span's creation is most of a call's tracing cost, see bench/bench_telemetry.py).
        span = otel.tracer.start_span(
            f"{call.operation} {call.model}",
            context=context,
            kind=otel.internal if call.backend in _IN_PROCESS else otel.client,
            attributes=self._request_attributes(call),
            start_time=call.start_time_ns,
        )
        if call.attributes:
            call.data[_STARTED_KEYS] = frozenset(call.attributes)
        return span

    def _static_attributes(self, call: Call) -> dict[str, Any]:
        """The attributes every call of one provider, operation and model shares (cached)."""
        key = (call.provider, call.operation, call.backend, call.model)
        cached = self._static.get(key)
        if cached is None:
            cached = {
                "gen_ai.operation.name": call.operation,
                "gen_ai.provider.name": PROVIDER_NAMES.get(call.backend, call.backend),
                "gen_ai.request.model": call.model,
                "zeph.provider": call.provider,
            }
            if len(self._static) < _CACHE_LIMIT:
                self._static[key] = cached
        return cached

    def _request_attributes(self, call: Call) -> dict[str, Any]:
        attrs = dict(self._static_attributes(call))
        for key, value in call.attributes.items():
            if isinstance(value, str | int | float | bool):
                attrs[key] = value
        options = call.options
        if options is not None:
            attrs["gen_ai.request.stream"] = options.stream
            for name in ("max_tokens", "temperature", "top_p", "top_k", "seed"):
                value = getattr(options, name)
                if value is not None:
                    attrs[f"gen_ai.request.{name}"] = value
            if options.stop:
                attrs["gen_ai.request.stop_sequences"] = list(options.stop)
            if options.tools:
                attrs["zeph.request.tools"] = [tool.name for tool in options.tools]
        if call.texts is not None:
            attrs["zeph.embeddings.inputs"] = len(call.texts)
        if self.record_content and call.messages is not None:
            attrs["gen_ai.input.messages"] = json.dumps(
                [{"role": str(m.role), "parts": [{"type": "text", "content": m.text}]} for m in call.messages]
            )
        return attrs

    def _finish(self, otel: _Instruments, call: Call, span: Any, error_type: str | None, end_ns: int) -> None:
        response = call.response
        attrs: dict[str, Any] = {"zeph.attempts": len(call.attempts)}
        started: frozenset[str] = call.data.get(_STARTED_KEYS, frozenset())
        for key, value in call.attributes.items():  # facts a backend added during the call (local timings)
            if key not in started and isinstance(value, str | int | float | bool):
                attrs[key] = value
        if response is not None:
            attrs["gen_ai.response.model"] = response.model or call.model
            attrs["gen_ai.response.finish_reasons"] = [response.finish_reason]
            usage = response.usage
            attrs["gen_ai.usage.input_tokens"] = usage.prompt_tokens  # semconv: cached tokens included
            attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
            if usage.cache_read_tokens:
                attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_tokens
            if usage.cache_write_tokens:
                attrs["gen_ai.usage.cache_write.input_tokens"] = usage.cache_write_tokens
            if response.provider and response.provider != call.provider:
                attrs["zeph.response.provider"] = response.provider
            if response.tool_calls:
                attrs["zeph.response.tool_calls"] = [tc.name for tc in response.tool_calls]
            if self.record_content:
                attrs["gen_ai.output.messages"] = json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": response.text}],
                            "finish_reason": response.finish_reason,
                        }
                    ]
                )
        if call.streaming and call.time_to_first_chunk is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = call.time_to_first_chunk
        if call.cost is not None:
            attrs["zeph.cost_usd"] = call.cost
        if isinstance(call.error, asyncio.CancelledError):
            attrs["zeph.cancelled"] = True
        if error_type is not None:
            attrs["error.type"] = error_type
            span.set_status(otel.error_status, _describe(call.error))
        span.set_attributes(attrs)
        tries = call.own_attempts
        if len(tries) > 1 or (tries and call.children):
            ends: list[int] = call.data.get(_TRIES, [])
            context = otel.trace.set_span_in_context(span)
            for number, attempt in enumerate(tries, start=1):
                end = ends[number - 1] if number - 1 < len(ends) else end_ns
                self._attempt_span(otel, call, context, number, attempt, end)

    def _attempt_span(
        self, otel: _Instruments, call: Call, context: Any, number: int, attempt: Attempt, end: int
    ) -> None:
        start = max(end - int(attempt.duration * 1e9), call.start_time_ns)
        attrs: dict[str, Any] = {
            "zeph.attempt.number": number,
            "zeph.attempt.outcome": attempt.outcome,
            "zeph.attempt.wait": attempt.wait,
            "zeph.provider": attempt.provider,
            "gen_ai.operation.name": call.operation,
        }
        if attempt.time_to_first_chunk is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = attempt.time_to_first_chunk
        child = otel.tracer.start_span("zeph.attempt", context=context, start_time=start, attributes=attrs)
        if not attempt.ok and attempt.outcome != "cancelled":
            child.set_attribute("error.type", attempt.outcome)
            child.set_status(otel.error_status, attempt.error or attempt.outcome)
        child.end(end_time=end)

    # ----- metrics ------------------------------------------------------------------

    def _measure(self, otel: _Instruments, call: Call, error_type: str | None) -> None:
        response = call.response
        response_model = response.model if response is not None else None
        sets = self._metric_attributes(call, response_model, error_type)
        if call.duration is not None:
            otel.duration.record(call.duration, sets[0])
        if call.streaming and call.time_to_first_chunk is not None and error_type is None:
            otel.first_chunk.record(call.time_to_first_chunk, sets[1])
        if response is not None:
            usage = response.usage
            otel.tokens.record(usage.prompt_tokens, sets[2])
            otel.tokens.record(usage.output_tokens, sets[3])

    def _metric_attributes(
        self, call: Call, response_model: str | None, error_type: str | None
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The attribute sets of one call's histogram points: duration, first chunk, input and output
        tokens. Cached: a process sees few distinct combinations, and building them per call showed."""
        key = (call.operation, call.backend, call.model, response_model, error_type)
        cached = self._metric_sets.get(key)
        if cached is None:
            base: dict[str, Any] = {
                "gen_ai.operation.name": call.operation,
                "gen_ai.provider.name": PROVIDER_NAMES.get(call.backend, call.backend),
                "gen_ai.request.model": call.model,
            }
            if response_model:
                base["gen_ai.response.model"] = response_model
            timed = dict(base, **{"error.type": error_type}) if error_type else base
            cached = (
                timed,
                base,
                dict(base, **{"gen_ai.token.type": "input"}),
                dict(base, **{"gen_ai.token.type": "output"}),
            )
            if len(self._metric_sets) < _CACHE_LIMIT:
                self._metric_sets[key] = cached
        return cached


def _error_type(error: BaseException | None) -> str | None:
    if error is None or isinstance(error, asyncio.CancelledError | GeneratorExit):
        return None
    return type(error).__name__


def _describe(error: BaseException | None) -> str:
    return "" if error is None else str(error)[:500]
