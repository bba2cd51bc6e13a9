"""The local backend's calls as OpenTelemetry spans and metrics (the tiny random model)."""

from __future__ import annotations

from opentelemetry.trace import SpanKind

from tests.otel_support import install_global_otel, points
from zeph_providers import Message
from zeph_providers.local.provider import LocalProvider
from zeph_providers.telemetry import Telemetry


async def test_local_chat_and_stream_spans(tiny: LocalProvider) -> None:
    exporter, reader = install_global_otel()
    exporter.clear()
    exporter.armed = True
    tiny.hooks.add(Telemetry())
    resp = await tiny.chat([Message.user("hello")], max_tokens=8)
    async with tiny.chat_stream([Message.user("again")], max_tokens=8) as stream:
        async for _ in stream:
            pass
    exporter.armed = False
    spans = [s for s in exporter.get_finished_spans() if s.name == f"chat {tiny.model}"]
    exporter.clear()
    assert len(spans) == 2
    plain, streamed = spans
    for span in spans:
        attrs = dict(span.attributes or {})
        assert span.kind is SpanKind.INTERNAL  # the model runs in this process
        assert attrs["gen_ai.provider.name"] == "zeph.local"
        assert attrs["gen_ai.request.max_tokens"] == 8
        assert int(attrs["gen_ai.usage.output_tokens"]) > 0  # type: ignore[call-overload]
        assert int(attrs["gen_ai.usage.input_tokens"]) > 0  # type: ignore[call-overload]
        assert attrs["zeph.local.engine"] == "transformers"
        wait, generation = float(attrs["zeph.local.queue_wait"]), float(attrs["zeph.local.generation"])  # type: ignore[arg-type]
        assert wait >= 0 and generation > 0
        assert 0 <= float(attrs["zeph.local.time_to_first_token"]) <= generation  # type: ignore[arg-type]
        assert span.end_time is not None and span.start_time is not None
        # Both parts lie inside the call's span (different clocks: allow for rounding between them).
        assert wait + generation <= (span.end_time - span.start_time) / 1e9 + 0.05
    assert plain.attributes is not None and plain.attributes["gen_ai.usage.output_tokens"] == resp.usage.output_tokens
    assert streamed.attributes is not None and streamed.attributes["gen_ai.response.time_to_first_chunk"] > 0  # type: ignore[operator]
    assert points(reader, "gen_ai.client.operation.time_to_first_chunk", **{"gen_ai.request.model": tiny.model})
