"""Shared OpenTelemetry test plumbing: the SDK's in-memory exporters behind the GLOBAL providers
(as an application would set them; OpenTelemetry lets a process set them once), and a text
rendering of a span tree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class SwitchedExporter(InMemorySpanExporter):
    """Keeps spans only while `armed`: the global provider outlives the telemetry tests, and the
    tests that run after them in the same process must not pile their spans up in memory."""

    armed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self.armed:
            return SpanExportResult.SUCCESS
        return super().export(spans)


_installed: tuple[SwitchedExporter, InMemoryMetricReader] | None = None


def install_global_otel() -> tuple[SwitchedExporter, InMemoryMetricReader]:
    """Set the global tracer and meter providers once per process; returns the exporter and reader.

    Arm the exporter (`exporter.armed = True`) for the test, and disarm it after."""
    global _installed
    if _installed is None:
        exporter = SwitchedExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _installed = (exporter, reader)
    return _installed


def points(reader: InMemoryMetricReader, name: str, **attrs: Any) -> list[Any]:
    """The data points of metric `name` whose attributes include `attrs`."""
    data = reader.get_metrics_data()
    found: list[Any] = []
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    if all(point.attributes.get(k) == v for k, v in attrs.items()):
                        found.append(point)
    return found


def render_tree(spans: Sequence[ReadableSpan], keys: Sequence[str] = ()) -> str:
    """The spans as an indented text tree, children in start order, with the chosen attributes."""
    by_id = {s.context.span_id: s for s in spans}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in by_id else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(span: ReadableSpan, prefix: str, last: bool, root: bool) -> None:
        ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        shown = [f"{k}={span.attributes[k]!r}" for k in keys if span.attributes and k in span.attributes]
        status = " ERROR" if span.status.status_code.name == "ERROR" else ""
        branch = "" if root else ("└── " if last else "├── ")
        lines.append(f"{prefix}{branch}{span.name}  [{ms:.1f} ms{status}]  " + " ".join(shown))
        kids = sorted(children.get(span.context.span_id, []), key=lambda s: s.start_time or 0)
        inner = prefix if root else prefix + ("    " if last else "│   ")
        for i, kid in enumerate(kids):
            walk(kid, inner, i == len(kids) - 1, False)

    for root in sorted(children.get(None, []), key=lambda s: s.start_time or 0):
        walk(root, "", True, True)
    return "\n".join(lines)
