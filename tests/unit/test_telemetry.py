"""OpenTelemetry: GenAI spans and metrics through the global providers, asserted with the SDK's
in-memory exporter and reader (chat, stream, tool call, error, retry after 429, router fallback,
embeddings, content opt-in, telemetry off, no-op without the API, light import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.otel_support import install_global_otel, points, render_tree
from tests.unit.test_hooks import Flaky
from zeph_providers import Message, RateLimitError, Registry, ToolCall
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.backends.router import RouterProvider
from zeph_providers.telemetry import Telemetry

HELLO = [Message.user("one two three")]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def otel() -> Iterator[Any]:
    exporter, reader = install_global_otel()
    exporter.clear()
    exporter.armed = True
    yield exporter, reader
    exporter.armed = False
    exporter.clear()


def spans_named(exporter: Any, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def registry(model: str, **llm: Any) -> Registry:
    provider = {"name": "m", "type": "mock", "model": model, "responses": ["four five"]}
    return Registry.from_dict({"llm": {**llm, "providers": [provider]}})


async def test_chat_span_follows_the_genai_conventions(otel: Any) -> None:
    exporter, reader = otel
    reg = registry("t-plain")
    resp = await reg.get("m").chat(HELLO, max_tokens=64, temperature=0.3, top_p=0.9, seed=7, stop=["END"])
    (span,) = spans_named(exporter, "chat t-plain")
    attrs = dict(span.attributes or {})
    assert span.kind is SpanKind.INTERNAL  # an in-process backend
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "zeph.mock"
    assert attrs["gen_ai.request.model"] == "t-plain"
    assert attrs["gen_ai.request.max_tokens"] == 64
    assert attrs["gen_ai.request.temperature"] == 0.3
    assert attrs["gen_ai.request.top_p"] == 0.9
    assert attrs["gen_ai.request.seed"] == 7
    assert attrs["gen_ai.request.stop_sequences"] == ("END",)
    assert attrs["gen_ai.request.stream"] is False
    assert attrs["gen_ai.response.model"] == "t-plain"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.usage.input_tokens"] == resp.usage.input_tokens == 3
    assert attrs["gen_ai.usage.output_tokens"] == resp.usage.output_tokens == 2
    assert attrs["zeph.provider"] == "m" and attrs["zeph.attempts"] == 1
    assert "error.type" not in attrs and span.status.status_code is StatusCode.UNSET
    assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs  # no contents
    assert "gen_ai.response.time_to_first_chunk" not in attrs  # not a stream
    (duration,) = points(reader, "gen_ai.client.operation.duration", **{"gen_ai.request.model": "t-plain"})
    assert duration.count == 1 and duration.attributes["gen_ai.operation.name"] == "chat"
    assert duration.attributes["gen_ai.provider.name"] == "zeph.mock"
    (tokens_in,) = points(
        reader, "gen_ai.client.token.usage", **{"gen_ai.request.model": "t-plain", "gen_ai.token.type": "input"}
    )
    (tokens_out,) = points(
        reader, "gen_ai.client.token.usage", **{"gen_ai.request.model": "t-plain", "gen_ai.token.type": "output"}
    )
    assert (tokens_in.sum, tokens_out.sum) == (3, 2)
    assert points(reader, "gen_ai.client.operation.time_to_first_chunk", **{"gen_ai.request.model": "t-plain"}) == []
    await reg.aclose()


async def test_stream_records_time_to_first_chunk(otel: Any) -> None:
    exporter, reader = otel
    reg = registry("t-stream")
    async with reg.get("m").chat_stream(HELLO) as stream:
        async for _ in stream:
            pass
    (span,) = spans_named(exporter, "chat t-stream")
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.response.time_to_first_chunk"] >= 0
    (first,) = points(reader, "gen_ai.client.operation.time_to_first_chunk", **{"gen_ai.request.model": "t-stream"})
    assert first.count == 1


async def test_tool_call_reply(otel: Any) -> None:
    exporter, _ = otel
    mock = MockProvider(
        model="t-tool", replies=[MockReply(tool_calls=[ToolCall(id="c1", name="lookup", arguments={"q": 1})])]
    )
    mock.hooks.add(Telemetry())
    await mock.chat(HELLO)
    (span,) = spans_named(exporter, "chat t-tool")
    assert span.attributes is not None
    assert span.attributes["gen_ai.response.finish_reasons"] == ("tool_use",)
    assert span.attributes["zeph.response.tool_calls"] == ("lookup",)


async def test_error_marks_span_and_duration_metric(otel: Any) -> None:
    exporter, reader = otel
    mock = MockProvider(model="t-error", replies=[MockReply(error=RateLimitError("slow down"))])
    mock.hooks.add(Telemetry())
    with pytest.raises(RateLimitError):
        await mock.chat(HELLO)
    (span,) = spans_named(exporter, "chat t-error")
    assert span.attributes is not None and span.attributes["error.type"] == "RateLimitError"
    assert span.status.status_code is StatusCode.ERROR and "slow down" in (span.status.description or "")
    (duration,) = points(reader, "gen_ai.client.operation.duration", **{"gen_ai.request.model": "t-error"})
    assert duration.attributes["error.type"] == "RateLimitError"
    assert points(reader, "gen_ai.client.token.usage", **{"gen_ai.request.model": "t-error"}) == []


async def test_retry_after_429_gives_one_child_span_per_try(otel: Any) -> None:
    exporter, _ = otel
    flaky = Flaky()
    flaky.hooks.add(Telemetry())
    await flaky.chat(HELLO)
    (parent,) = spans_named(exporter, "chat flaky-1")
    tries = sorted(spans_named(exporter, "zeph.attempt"), key=lambda s: s.start_time or 0)
    assert [t.parent.span_id for t in tries if t.parent] == [parent.context.span_id] * 2
    first, second = (dict(t.attributes or {}) for t in tries)
    assert first["error.type"] == "RateLimitError" and first["zeph.attempt.number"] == 1
    assert tries[0].status.status_code is StatusCode.ERROR
    assert second["zeph.attempt.outcome"] == "ok" and second["zeph.attempt.wait"] >= 0.01
    assert "error.type" not in second
    assert parent.attributes is not None and parent.attributes["zeph.attempts"] == 2


async def test_router_fallback_parent_and_member_spans(otel: Any) -> None:
    exporter, reader = otel
    a = MockProvider("a", model="t-member-a", replies=[MockReply(error=RateLimitError("busy"))])
    b = MockProvider("b", model="t-member-b", replies=["from b"])
    members = {"a": a, "b": b}
    router = RouterProvider("smart", ["a", "b"], members.__getitem__)
    hook = Telemetry()
    for provider in (a, b, router):
        provider.hooks.add(hook)
    resp = await router.chat(HELLO)
    assert resp.provider == "b"
    (parent,) = spans_named(exporter, "chat router(a,b)")
    (failed,) = spans_named(exporter, "chat t-member-a")
    (answered,) = spans_named(exporter, "chat t-member-b")
    for member in (failed, answered):
        assert member.parent is not None and member.parent.span_id == parent.context.span_id
        assert member.context.trace_id == parent.context.trace_id
    assert failed.attributes is not None and failed.attributes["error.type"] == "RateLimitError"
    assert failed.status.status_code is StatusCode.ERROR
    assert answered.attributes is not None and "error.type" not in answered.attributes
    pattrs = dict(parent.attributes or {})
    assert pattrs["gen_ai.provider.name"] == "zeph.router" and "error.type" not in pattrs
    assert pattrs["gen_ai.response.model"] == "t-member-b" and pattrs["zeph.response.provider"] == "b"
    assert pattrs["zeph.attempts"] == 2
    # Measured once, by the members' calls; the router's own call is not counted again.
    assert points(reader, "gen_ai.client.operation.duration", **{"gen_ai.request.model": "router(a,b)"}) == []
    assert len(points(reader, "gen_ai.client.operation.duration", **{"gen_ai.request.model": "t-member-b"})) == 1
    tree = render_tree(exporter.get_finished_spans(), keys=("error.type",))
    assert tree.splitlines()[0].startswith("chat router(a,b)")
    assert "├── chat t-member-a" in tree and "└── chat t-member-b" in tree


async def test_embedding_span(otel: Any) -> None:
    exporter, reader = otel
    reg = registry("t-embed")
    await reg.get("m").embed_batch(["a", "b", "c"])
    (span,) = spans_named(exporter, "embeddings t-embed")
    assert span.attributes is not None
    assert span.attributes["gen_ai.operation.name"] == "embeddings"
    assert span.attributes["zeph.embeddings.inputs"] == 3
    (duration,) = points(reader, "gen_ai.client.operation.duration", **{"gen_ai.request.model": "t-embed"})
    assert duration.attributes["gen_ai.operation.name"] == "embeddings"


async def test_contents_only_when_opted_in(otel: Any) -> None:
    exporter, _ = otel
    reg = registry("t-content", telemetry_content=True)
    await reg.get("m").chat(HELLO)
    (span,) = spans_named(exporter, "chat t-content")
    assert span.attributes is not None
    sent = json.loads(str(span.attributes["gen_ai.input.messages"]))
    got = json.loads(str(span.attributes["gen_ai.output.messages"]))
    assert sent == [{"role": "user", "parts": [{"type": "text", "content": "one two three"}]}]
    assert got[0]["parts"][0]["content"] == "four five" and got[0]["finish_reason"] == "stop"


async def test_telemetry_false_emits_nothing(otel: Any) -> None:
    exporter, reader = otel
    reg = registry("t-off", telemetry=False)
    await reg.get("m").chat(HELLO)
    assert spans_named(exporter, "chat t-off") == []
    assert points(reader, "gen_ai.client.operation.duration", **{"gen_ai.request.model": "t-off"}) == []


async def test_budget_refusal_is_a_span_too(otel: Any) -> None:
    from zeph_providers import BudgetExceededError

    exporter, _ = otel
    reg = Registry.from_dict(
        {"llm": {"providers": [{"name": "m", "type": "mock", "model": "t-budget", "budget_usd": 0.0}]}}
    )
    with pytest.raises(BudgetExceededError):
        await reg.get("m").chat(HELLO)
    (span,) = spans_named(exporter, "chat t-budget")
    assert span.attributes is not None and span.attributes["error.type"] == "BudgetExceededError"


def _run(script: str) -> str:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = str(REPO) + os.pathsep + environ.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_no_op_without_the_api() -> None:
    script = """
import sys, asyncio
sys.modules["opentelemetry"] = None  # as if not installed: importing it raises ImportError
from zeph_providers import Message, Registry
from zeph_providers.telemetry import available
reg = Registry.from_dict({"llm": {"providers": [{"name": "m", "type": "mock", "responses": ["ok"]}]}})
resp = asyncio.run(reg.get("m").chat([Message.user("hi")]))
print(available(), resp.text)
"""
    assert _run(script) == "False ok"


def test_import_and_registry_do_not_import_opentelemetry() -> None:
    script = """
import sys
import zeph_providers
from zeph_providers import Registry
Registry.from_default().names()
print(sorted(m for m in sys.modules if m.startswith(("opentelemetry", "genai_prices"))))
"""
    assert _run(script) == "[]"


async def test_remote_span_names_the_server(otel: Any) -> None:
    import httpx2

    from tests.conformance.harness_openai import ScriptedServer, answering_unstreamed, sse_response, text_events
    from zeph_providers.backends.openai import OpenAIProvider
    from zeph_providers.config import CompatibleConfig

    exporter, _ = otel
    server = ScriptedServer([lambda _request: sse_response(text_events(["Hi", "!"]))])
    provider = OpenAIProvider(
        CompatibleConfig(name="srv", model="t-server", base_url="http://10.1.2.3:8080/v1?x=1"),
        transport=httpx2.MockTransport(answering_unstreamed(server)),
    )
    provider.hooks.add(Telemetry())
    async with provider:
        await provider.chat(HELLO)
    (span,) = spans_named(exporter, "chat t-server")
    attrs = dict(span.attributes or {})
    assert attrs["server.address"] == "10.1.2.3" and attrs["server.port"] == 8080
    assert span.kind is SpanKind.CLIENT
    assert not any("/v1" in str(value) for value in attrs.values())  # no path or query


def test_server_attributes_default_ports_and_bad_urls() -> None:
    from zeph_providers.backends._remote import server_attributes

    assert server_attributes("https://api.openai.com/v1") == {"server.address": "api.openai.com", "server.port": 443}
    assert server_attributes("http://localhost:11434") == {"server.address": "localhost", "server.port": 11434}
    assert server_attributes("http://[::1]/v1") == {"server.address": "::1", "server.port": 80}
    assert server_attributes("http://host:99999999/v1") == {}
    assert server_attributes("") == {} and server_attributes(None) == {}


async def test_embedding_span_names_the_embedding_model_and_its_cost(otel: Any) -> None:
    from zeph_providers.backends.openai import OpenAIProvider
    from zeph_providers.config import CompatibleConfig

    exporter, _ = otel
    pricing = {"input": 1.0, "output": 1.0}
    provider = {"name": "m", "type": "mock", "model": "t-chat", "responses": ["x"], "pricing": pricing}
    reg = Registry.from_dict({"llm": {"providers": [provider]}})
    mock = reg.get("m")
    await mock.embed_batch(["a b", "c"])
    (span,) = spans_named(exporter, "embeddings t-chat")  # the mock embeds with its one model
    assert span.attributes is not None and span.attributes["zeph.cost_usd"] == pytest.approx(3 / 1e6)
    await reg.aclose()
    config = CompatibleConfig(name="c", model="chat-m", embedding_model="embed-m", base_url="http://127.0.0.1:9/v1")
    remote = OpenAIProvider(config)
    assert (remote.model, remote.embedding_model) == ("chat-m", "embed-m")
    remote.hooks.add(Telemetry())
    call = remote.new_call("embeddings", texts=["x"])
    assert call is not None and call.model == "embed-m"  # an embeddings span is named after the embedding model
    await remote.aclose()
