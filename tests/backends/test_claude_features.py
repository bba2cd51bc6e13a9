"""Issue 12, Claude: prompt caching, complete thinking, stop reasons, documents, on the wire.

Payload shapes follow Anthropic's documentation (prompt caching: `cache_control` on tools,
system blocks and message blocks, top-level automatic caching, `usage.cache_creation`'s TTL
breakdown; extended thinking: several signed `thinking` blocks, `redacted_thinking`, interleaved
thinking in a tool loop; `stop_reason` `pause_turn` / `refusal` / `stop_sequence`; PDF and
plain-text `document` blocks). Every reply is read both ways: streamed (`chat_stream`) and
unstreamed (`chat`, the fake server folds the same events into one `message`), and the two
assembled replies must be equal.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest

from tests.conformance.harness_claude import FakeAnthropic, make_provider, sse_response
from tests.conformance.harness_openai import ScriptedServer, answering_unstreamed
from tests.conformance.harness_openai import make_provider as make_openai
from tests.conformance.harness_openai import sse_response as openai_sse
from tests.conformance.harness_openai import text_events as openai_text_events
from tests.conformance.scenarios import TextReply
from tests.fakes.anthropic import (
    message_delta,
    message_start,
    message_stop,
    redacted_thinking_block,
    text_block,
    thinking_block,
    tool_block,
)
from tests.fakes.ollama_server import OllamaServer
from zeph_providers import (
    CachePointPart,
    CacheSettings,
    ChatResponse,
    DocumentPart,
    InvalidRequestError,
    Message,
    RedactedThinkingChunk,
    RedactedThinkingPart,
    TextPart,
    ThinkingChunk,
    ThinkingPart,
    ToolDefinition,
    UnsupportedCapabilityError,
)
from zeph_providers.backends.ollama import OllamaProvider
from zeph_providers.backends.openai import OpenAIProvider
from zeph_providers.config import CandleConfig, CompatibleConfig, OllamaConfig
from zeph_providers.local.provider import LocalProvider
from zeph_providers.types import Role

WEATHER = ToolDefinition(
    name="get_weather",
    description="Get the current weather in a given location",
    parameters={"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
)
# Signatures and redacted data in the documentation's shape (opaque base64-like strings).
SIG_1 = "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL"
SIG_2 = "EuYBCkQYAiJAgCs1le6/Pol5Z4/JMomVOouGrWdhYNsH3ukzUECbB6iWrSQtsQuRHJID6lWV"
SIG_3 = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
REDACTED = (
    "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB9URj2pLmN3kF8/dW5h"
)


def messages_with(*parts: Any, role: Role = Role.USER) -> list[Message]:
    return [Message(role=role, parts=tuple(parts))]


async def both_ways(events: list[bytes], messages: list[Message], **config: Any) -> tuple[ChatResponse, FakeAnthropic]:
    """The reply streamed and unstreamed (equal, checked here), and the server (bodies[0] streamed)."""
    server = FakeAnthropic([sse_response(events), sse_response(events)])
    async with make_provider(server, **config) as provider:
        streamed = await provider.chat_stream(messages).collect()
        whole = await provider.chat(messages)
    assert streamed == whole
    assert {k: v for k, v in server.bodies[0].items() if k != "stream"} == server.bodies[1]
    return whole, server


async def body_of(messages: list[Message], *, config: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    server = FakeAnthropic([TextReply()])
    async with make_provider(server, **(config or {})) as provider:
        await provider.chat(messages, **kwargs)
    return server.bodies[0]


async def refused(messages: list[Message], *, config: dict[str, Any] | None = None, **kwargs: Any) -> str:
    """The InvalidRequestError's message; nothing reached the server."""
    server = FakeAnthropic([TextReply()])
    async with make_provider(server, **(config or {})) as provider:
        with pytest.raises(InvalidRequestError) as info:
            await provider.chat(messages, **kwargs)
    assert info.value.provider == "claude-conf"
    assert server.bodies == []
    return info.value.message


EPHEMERAL_5M = {"type": "ephemeral", "ttl": "5m"}
EPHEMERAL_1H = {"type": "ephemeral", "ttl": "1h"}


# ----- prompt caching ---------------------------------------------------------------------------


async def test_cache_from_config_marks_tools_system_and_a_cache_point() -> None:
    history = [
        Message.system("You are an AI assistant tasked with analyzing literary works."),
        Message(
            role=Role.USER, parts=(TextPart(text="<the entire contents of Pride and Prejudice>"), CachePointPart())
        ),
        Message.user("Analyze the major themes in Pride and Prejudice."),
    ]
    settings = CacheSettings(automatic=False, system=True, tools=True, ttl="1h")
    body = await body_of(history, config={"cache": settings}, tools=[WEATHER])
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": WEATHER.parameters,
            "cache_control": EPHEMERAL_1H,
        }
    ]
    assert body["system"] == [
        {
            "type": "text",
            "text": "You are an AI assistant tasked with analyzing literary works.",
            "cache_control": EPHEMERAL_1H,
        }
    ]
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                # The cache point's own ttl is unset: it takes the call's ("1h").
                {"type": "text", "text": "<the entire contents of Pride and Prejudice>", "cache_control": EPHEMERAL_1H},
                {"type": "text", "text": "Analyze the major themes in Pride and Prejudice."},
            ],
        }
    ]
    assert "cache_control" not in body  # automatic off


async def test_cache_true_is_automatic_top_level_and_a_call_overrides_the_config() -> None:
    hello = [Message.system("Be brief."), Message.user("Hi")]
    body = await body_of(hello, cache=True)
    assert body["cache_control"] == EPHEMERAL_5M  # the API marks the last cacheable block itself
    assert body["system"] == "Be brief."  # not marked: stays a plain string
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]

    body = await body_of(hello, config={"cache": {"system": True}}, cache=False)
    assert "cache_control" not in body and body["system"] == "Be brief."

    body = await body_of(hello, config={"cache": True}, cache=CacheSettings(ttl="1h"))
    assert body["cache_control"] == EPHEMERAL_1H

    body = await body_of(hello)  # no caching anywhere by default
    assert "cache_control" not in body


async def test_cache_point_ttl_of_its_own_and_in_a_system_message() -> None:
    history = [
        Message(role=Role.SYSTEM, parts=(TextPart(text="Long instructions."), CachePointPart(ttl="1h"))),
        Message(role=Role.USER, parts=(TextPart(text="Document."), CachePointPart())),
        Message.assistant("Read it."),
        # A cache point opening a message marks the last block of the turn before it.
        Message(role=Role.USER, parts=(CachePointPart(), TextPart(text="Question?"))),
    ]
    body = await body_of(history)
    assert body["system"] == [{"type": "text", "text": "Long instructions.", "cache_control": EPHEMERAL_1H}]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Document.", "cache_control": EPHEMERAL_5M}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Read it.", "cache_control": EPHEMERAL_5M}]},
        {"role": "user", "content": [{"type": "text", "text": "Question?"}]},
    ]


async def test_a_fifth_breakpoint_is_refused_before_sending() -> None:
    def marked(i: int) -> Message:
        return Message(role=Role.USER, parts=(TextPart(text=f"part {i}"), CachePointPart()))

    four = [marked(i) for i in range(4)]
    body = await body_of(four)  # four is the API's limit: sent
    assert sum("cache_control" in block for block in body["messages"][0]["content"]) == 4

    message = await refused([marked(i) for i in range(5)])
    assert "5 prompt-cache breakpoints" in message and "at most 4" in message
    # Automatic caching, system and tools each take one of the four.
    message = await refused(
        [Message.system("S"), *four[:2]], cache=CacheSettings(system=True, tools=True), tools=[WEATHER]
    )
    assert "5 prompt-cache breakpoints" in message


async def test_a_1h_entry_after_a_5m_one_and_a_cache_point_after_thinking_are_refused() -> None:
    history = [
        Message(role=Role.USER, parts=(TextPart(text="a"), CachePointPart(ttl="5m"))),
        Message(role=Role.USER, parts=(TextPart(text="b"), CachePointPart(ttl="1h"))),
    ]
    assert "1h cache breakpoint must come before" in await refused(history)
    after_thinking = [
        Message.user("Q"),
        Message(role=Role.ASSISTANT, parts=(ThinkingPart(text="hmm", signature=SIG_1), CachePointPart())),
    ]
    assert "cache point must follow a cacheable content block" in await refused(after_thinking)
    assert "must follow a cacheable content block" in await refused(messages_with(CachePointPart()))


async def test_usage_keeps_cache_reads_writes_and_the_ttl_breakdown() -> None:
    # The documentation's usage object with both TTLs written.
    start = message_start(
        input_tokens=50,
        cache_read=100_000,
        cache_write=556,
        cache_creation={"ephemeral_5m_input_tokens": 456, "ephemeral_1h_input_tokens": 100},
    )
    events = [start, *text_block(0, ["Hi"]), message_delta("end_turn", 503), message_stop()]
    resp, _ = await both_ways(events, [Message.user("Hi")])
    usage = resp.usage
    assert (usage.input_tokens, usage.output_tokens) == (50, 503)
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (100_000, 556)
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (456, 100)
    assert (usage + usage).cache_write_1h_tokens == 200


# ----- thinking, complete ----------------------------------------------------------------------


def _thinking_reply_events() -> list[bytes]:
    """Two signed thinking blocks, a redacted one between them, a signed block with empty text,
    then the answer."""
    return [
        message_start(input_tokens=20),
        *thinking_block(0, ["Let me analyze ", "this step by step."], signature=SIG_1),
        *redacted_thinking_block(1, REDACTED),
        *thinking_block(2, ["Now the second part."], signature=SIG_2),
        *thinking_block(3, [], signature=SIG_3),  # display "omitted": a signed block, no text
        *text_block(4, ["Based on my analysis..."]),
        message_delta("end_turn", 90),
        message_stop(),
    ]


async def test_several_signed_thinking_blocks_and_redacted_thinking_are_kept_in_order() -> None:
    resp, _ = await both_ways(_thinking_reply_events(), [Message.user("Think hard.")])
    assert resp.thinking_blocks == [
        ThinkingPart(text="Let me analyze this step by step.", signature=SIG_1),
        RedactedThinkingPart(data=REDACTED),
        ThinkingPart(text="Now the second part.", signature=SIG_2),
        ThinkingPart(text="", signature=SIG_3),
    ]
    # Compatibility: the text joined, the last signature.
    assert resp.thinking == "Let me analyze this step by step.Now the second part."
    assert resp.thinking_signature == SIG_3
    assert resp.text == "Based on my analysis..."
    message = resp.to_message()
    assert message.parts == (*resp.thinking_blocks, TextPart(text="Based on my analysis..."))
    assert ChatResponse.model_validate_json(resp.model_dump_json()) == resp


async def test_stream_chunks_name_their_block() -> None:
    server = FakeAnthropic([sse_response(_thinking_reply_events())])
    async with make_provider(server) as provider:
        chunks = [chunk async for chunk in provider.chat_stream([Message.user("Think hard.")])]
    thinking = [c for c in chunks if isinstance(c, ThinkingChunk | RedactedThinkingChunk)]
    assert [c.block for c in thinking] == [0, 0, 0, 1, 2, 2, 3]
    assert thinking[3] == RedactedThinkingChunk(data=REDACTED, block=1)
    assert thinking[-1] == ThinkingChunk(text="", signature=SIG_3, block=3)


async def test_interleaved_thinking_tool_loop_sends_back_exactly_the_blocks() -> None:
    """Anthropic's interleaved-thinking tool loop: think, (redacted), call a tool; get the result;
    think again and answer. The second request must carry the first reply's blocks unchanged."""
    first = [
        message_start(input_tokens=400),
        *thinking_block(0, ["I need the weather in Paris."], signature=SIG_1),
        *redacted_thinking_block(1, REDACTED),
        *thinking_block(2, [], signature=SIG_2),
        *tool_block(3, "toolu_01A09q90qw90lq917835lq9", "get_weather", ['{"location": ', '"Paris"}']),
        message_delta("tool_use", 120),
        message_stop(),
    ]
    second = [
        message_start(input_tokens=600),
        *thinking_block(0, ["18 degrees: mild."], signature=SIG_3),
        *text_block(1, ["It is 18°C in Paris."]),
        message_delta("end_turn", 40),
        message_stop(),
    ]
    config = {"thinking_budget_tokens": 10_000, "max_tokens": 16_000, "interleaved_thinking": True}
    for stream in (True, False):
        server = FakeAnthropic([sse_response(first), sse_response(second)])
        async with make_provider(server, **config) as provider:
            history = [Message.user("What's the weather in Paris?")]
            ask = provider.chat_stream(history, tools=[WEATHER]).collect if stream else None
            reply = await (ask() if ask else provider.chat(history, tools=[WEATHER]))
            assert reply.finish_reason == "tool_use"
            call = reply.tool_calls[0]
            history += [reply.to_message(), Message.tool_result(call.id, "18°C, partly cloudy")]
            final = await provider.chat(history, tools=[WEATHER])
        assert final.text == "It is 18°C in Paris."
        assert final.thinking_blocks == [ThinkingPart(text="18 degrees: mild.", signature=SIG_3)]
        body = server.bodies[1]
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 10_000}
        assert body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "What's the weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "I need the weather in Paris.", "signature": SIG_1},
                    {"type": "redacted_thinking", "data": REDACTED},
                    {"type": "thinking", "thinking": "", "signature": SIG_2},
                    {
                        "type": "tool_use",
                        "id": "toolu_01A09q90qw90lq917835lq9",
                        "name": "get_weather",
                        "input": {"location": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                        "content": "18°C, partly cloudy",
                        "is_error": False,
                    }
                ],
            },
        ]
        for request in server.raw_requests:
            assert request.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"


async def test_thinking_modes_display_and_effort_from_config() -> None:
    hello = [Message.user("Hi")]
    body = await body_of(hello, config={"thinking": "adaptive", "thinking_display": "omitted", "effort": "high"})
    assert body["thinking"] == {"type": "adaptive", "display": "omitted"}
    assert body["output_config"] == {"effort": "high"}
    body = await body_of(hello, config={"thinking": "disabled"})
    assert body["thinking"] == {"type": "disabled"} and "output_config" not in body
    body = await body_of(hello, config={"thinking_budget_tokens": 2048, "thinking_display": "summarized"})
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048, "display": "summarized"}
    server = FakeAnthropic([TextReply()])
    async with make_provider(server) as provider:
        await provider.chat(hello)
    assert "anthropic-beta" not in server.raw_requests[0].headers

    assert "must be below max_tokens" in await refused(hello, config={"thinking_budget_tokens": 4096})
    assert "needs thinking_budget_tokens" in await refused(hello, config={"thinking": "enabled"})
    assert "thinking_display needs" in await refused(hello, config={"thinking_display": "omitted"})


# ----- stop reasons ------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["pause_turn", "refusal"])
async def test_pause_turn_and_refusal_are_finish_reasons_of_their_own(reason: str) -> None:
    events = [message_start(input_tokens=5), *text_block(0, ["I"]), message_delta(reason, 1), message_stop()]
    resp, _ = await both_ways(events, [Message.user("Hi")])
    assert resp.finish_reason == reason
    assert resp.stop_sequence is None


async def test_the_matched_stop_sequence_is_kept() -> None:
    events = [
        message_start(input_tokens=5),
        *text_block(0, ["1, 2, 3"]),
        message_delta("stop_sequence", 6, stop_sequence="\n\nHuman:"),
        message_stop(),
    ]
    resp, _ = await both_ways(events, [Message.user("Count")])
    assert (resp.finish_reason, resp.stop_sequence) == ("stop", "\n\nHuman:")


# ----- documents ---------------------------------------------------------------------------------

PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


async def test_pdf_and_text_documents_on_the_wire() -> None:
    import base64

    history = messages_with(
        DocumentPart(data=PDF, title="Annual report"),
        DocumentPart(text="The grass is green. The sky is blue.", title="My Document"),
        DocumentPart(data=b"plain bytes", mime_type="text/plain"),
        TextPart(text="What do these say?"),
    )
    body = await body_of(history)
    assert body["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(PDF).decode()},
            "title": "Annual report",
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "The grass is green. The sky is blue."},
            "title": "My Document",
        },
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain bytes"}},
        {"type": "text", "text": "What do these say?"},
    ]
    message = await refused(messages_with(DocumentPart(data=b"PK\x03\x04", mime_type="application/zip")))
    assert "PDF and plain-text" in message


def test_document_part_takes_exactly_one_source_and_round_trips() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        DocumentPart()
    with pytest.raises(ValueError, match="exactly one"):
        DocumentPart(data=PDF, text="both")
    assert DocumentPart(text="t").mime_type == "text/plain"
    message = Message(role=Role.USER, parts=(DocumentPart(data=PDF, title="r"), CachePointPart(ttl="1h")))
    assert Message.model_validate_json(message.model_dump_json()) == message


async def test_openai_sends_file_input_and_compatible_refuses_documents() -> None:
    import base64

    server = ScriptedServer([lambda _r: openai_sse(openai_text_events(["ok"]))])
    history = messages_with(DocumentPart(data=PDF, title="report.pdf"), DocumentPart(text="Notes", title="N"))
    history.append(Message(role=Role.USER, parts=(TextPart(text="Summarise."), CachePointPart())))
    async with make_openai(server) as provider:
        assert provider.capabilities.documents
        await provider.chat(history, cache=True)  # OpenAI caches prompts itself: a no-op there
    user = server.requests[0]["messages"]
    assert user[0]["content"] == [
        {
            "type": "file",
            "file": {
                "filename": "report.pdf",
                "file_data": "data:application/pdf;base64," + base64.b64encode(PDF).decode(),
            },
        },
        {"type": "text", "text": "N\n\nNotes"},
    ]
    assert user[1] == {"role": "user", "content": "Summarise."}  # the cache point sends nothing
    assert "cache_control" not in str(server.requests[0])

    config = CompatibleConfig(name="compat", model="local", base_url="https://llm.example.test/v1")
    transport = httpx2.MockTransport(answering_unstreamed(server))
    async with OpenAIProvider(config, transport=transport) as compatible:
        with pytest.raises(UnsupportedCapabilityError) as info:
            await compatible.chat(history)
    assert info.value.provider == "compat" and "documents" in info.value.message
    assert len(server.requests) == 1


async def test_ollama_and_local_refuse_documents() -> None:
    history = messages_with(DocumentPart(data=PDF), TextPart(text="Read it."))
    with OllamaServer() as server:
        ollama = OllamaProvider(OllamaConfig(name="ollama", model="qwen3:8b", base_url=server.url, max_retries=0))
        async with ollama:
            with pytest.raises(UnsupportedCapabilityError) as info:
                await ollama.chat(history)
        assert info.value.provider == "ollama" and "documents" in info.value.message
        assert server.chat_requests == []

    def never_loaded() -> Any:
        raise AssertionError("the model must not be loaded for a refused request")

    local = LocalProvider(CandleConfig(name="tiny", model_path="/nonexistent/model"), load=never_loaded)
    try:
        with pytest.raises(UnsupportedCapabilityError) as info:
            await local.chat(history)
        assert info.value.provider == "tiny"
    finally:
        await asyncio.wait_for(local.aclose(), 30)


async def test_cache_points_and_redacted_thinking_are_left_out_by_ollama() -> None:
    """Ollama keeps its own KV cache (a cache point is a no-op) and cannot read Anthropic's
    encrypted thinking: both stay out of its request, which is otherwise unchanged."""
    from zeph_providers.backends._ollama_request import convert_messages as ollama_messages

    plain = [Message.user("Hi"), Message.assistant("Hello"), Message.user("Again")]
    marked = [
        Message(role=Role.USER, parts=(TextPart(text="Hi"), CachePointPart())),
        Message(role=Role.ASSISTANT, parts=(RedactedThinkingPart(data=REDACTED), TextPart(text="Hello"))),
        Message.user("Again"),
    ]
    assert ollama_messages(marked) == ollama_messages(plain)


def test_a_router_needs_a_member_with_documents() -> None:
    from zeph_providers.backends._routing import needs
    from zeph_providers.options import ChatOptions

    assert needs(messages_with(DocumentPart(text="t")), ChatOptions()) == ["documents"]
    assert needs([Message.user("plain")], ChatOptions()) == []


def test_new_chunks_and_fields_round_trip_through_json() -> None:
    from pydantic import TypeAdapter

    from zeph_providers.types import EndChunk, StreamChunk

    adapter: TypeAdapter[Any] = TypeAdapter(StreamChunk)
    for chunk in (
        RedactedThinkingChunk(data=REDACTED, block=1),
        ThinkingChunk(text="t", signature=SIG_1, block=0),
        EndChunk(finish_reason="pause_turn", stop_sequence="END"),
    ):
        assert adapter.validate_json(adapter.dump_json(chunk)) == chunk
    legacy = ChatResponse(thinking="x", thinking_signature=SIG_1)  # no blocks: the old one-part message
    assert legacy.to_message().parts == (ThinkingPart(text="x", signature=SIG_1),)
