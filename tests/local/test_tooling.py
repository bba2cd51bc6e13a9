"""Local tool calls: each syntax's documented format parsed back from streamed text, and prepare().

Formats (from each family's own documentation / chat template):
- Hermes / Qwen2.5: `<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call>`
- Llama 3.1 JSON tool calling: `{"name": function name, "parameters": {...}}` (after `<|python_tag|>`
  when the model uses it)
- Mistral (v3 tokenizer): `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zeph_providers.errors import BadResponseError, InvalidRequestError, UnsupportedCapabilityError
from zeph_providers.local.engine import Constraint, GenerationParams, Prepared
from zeph_providers.local.templates import select_template
from zeph_providers.local.tooling import ReplyParser, closed_objects, decoding_schema, prepare
from zeph_providers.local.toolsyntax import HERMES, LLAMA3, MISTRAL, ToolSyntax, detect_syntax
from zeph_providers.types import (
    ContentChunk,
    Message,
    StreamChunk,
    ToolCall,
    ToolCallDeltaChunk,
    ToolDefinition,
    ToolUseChunk,
)

WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather for a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"],
    },
)
TIME = ToolDefinition(
    name="get_time", parameters={"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}
)
TOOLS = (WEATHER, TIME)
PROVIDER = "tiny"

HERMES_REPLY = (
    "Let me check both.\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {"zone": "Europe/Paris \\"CET\\" {}"}}\n</tool_call>'
)
LLAMA3_REPLY = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}'
MISTRAL_REPLY = (
    '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
    '{"name": "get_time", "arguments": {"zone": "UTC"}}]'
)
EXPECTED = [("get_weather", {"city": "Paris", "unit": "c"}), ("get_time", {"zone": 'Europe/Paris "CET" {}'})]


def _auto(syntax: ToolSyntax, tools: Sequence[ToolDefinition] = TOOLS) -> Prepared:
    constraint = Constraint(syntax.span_schema(tools), trigger=syntax.trigger, rearm=True)
    return Prepared(prompt="PROMPT", constraint=constraint, syntax=syntax)


def _forced(syntax: ToolSyntax, tools: Sequence[ToolDefinition] = TOOLS) -> Prepared:
    return Prepared(
        prompt="PROMPT" + syntax.prefill,
        prefill=syntax.prefill,
        constraint=Constraint(syntax.span_schema(tools)),
        syntax=syntax,
    )


def _run(prepared: Prepared, pieces: Sequence[str], tools: Sequence[ToolDefinition] = TOOLS) -> list[StreamChunk]:
    parser = ReplyParser(prepared, tools, provider=PROVIDER)
    chunks: list[StreamChunk] = []
    for piece in pieces:
        chunks.extend(parser.feed(piece))
    chunks.extend(parser.close())
    return chunks


def _summary(chunks: Sequence[StreamChunk]) -> tuple[str, list[ToolCall], dict[int, str]]:
    """(all content, the complete calls, each call's concatenated argument deltas), checking delta shape."""
    text = "".join(c.text for c in chunks if isinstance(c, ContentChunk))
    calls = [c.tool_call for c in chunks if isinstance(c, ToolUseChunk)]
    deltas: dict[int, str] = {}
    for chunk in chunks:
        if isinstance(chunk, ToolCallDeltaChunk):
            if chunk.index not in deltas:  # the first delta names the call and carries its final id
                assert chunk.name == calls[chunk.index].name and chunk.id == calls[chunk.index].id
            deltas[chunk.index] = deltas.get(chunk.index, "") + chunk.arguments
    return text, calls, deltas


def _check(chunks: Sequence[StreamChunk], content: str, expected: list[tuple[str, dict[str, Any]]]) -> None:
    text, calls, deltas = _summary(chunks)
    assert text == content
    assert [(c.name, c.arguments) for c in calls] == expected
    assert sorted(deltas) == list(range(len(calls)))
    for index, call in enumerate(calls):
        assert json.loads(deltas[index]) == call.arguments
        assert call.id.startswith("call_")
    assert len({c.id for c in calls}) == len(calls)


def _char_by_char(text: str) -> list[str]:
    return list(text)


# ----- Hermes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [lambda t: [t], _char_by_char], ids=["whole", "char"])
def test_hermes_text_then_parallel_calls(split: Any) -> None:
    chunks = _run(_auto(HERMES), split(HERMES_REPLY))
    _check(chunks, "Let me check both.\n", EXPECTED)
    assert not any("<tool" in c.text for c in chunks if isinstance(c, ContentChunk))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=len(HERMES_REPLY)), max_size=12))
def test_hermes_any_split_gives_the_same_reply(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    pieces = [HERMES_REPLY[a:b] for a, b in zip([0, *points], [*points, len(HERMES_REPLY)], strict=True)]
    chunks = _run(_auto(HERMES), pieces)
    _check(chunks, "Let me check both.\n", EXPECTED)


def test_arguments_stream_before_the_call_ends() -> None:
    parser = ReplyParser(_auto(HERMES), TOOLS, provider=PROVIDER)
    first = parser.feed('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa')
    assert [type(c) for c in first] == [ToolCallDeltaChunk, ToolCallDeltaChunk]
    assert first[0].name == "get_weather" and first[0].id  # type: ignore[union-attr]
    assert first[1].arguments == '{"city": "Pa'  # type: ignore[union-attr]
    rest = parser.feed('ris"}}\n</tool_call>') + parser.close()
    assert isinstance(rest[0], ToolCallDeltaChunk) and rest[0].arguments == 'ris"}'
    assert isinstance(rest[-1], ToolUseChunk) and rest[-1].tool_call.arguments == {"city": "Paris"}


def test_a_partial_trigger_is_held_back_then_released_as_text() -> None:
    parser = ReplyParser(_auto(HERMES), TOOLS, provider=PROVIDER)
    assert parser.feed("Use <tool") == [ContentChunk(text="Use ")]
    assert parser.feed("_c") == []
    assert parser.feed("ar> wisely") == [ContentChunk(text="<tool_car> wisely")]
    assert parser.feed(" <") == [ContentChunk(text=" ")]
    assert parser.close() == [ContentChunk(text="<")]
    assert not parser.calls


def test_forced_hermes_call_without_closing_tag() -> None:
    # Forced: the prompt ends with the prefill "<tool_call>\n"; the model writes only the JSON.
    chunks = _run(_forced(HERMES), ['{"name": "get_time", ', '"arguments": {"zone": "UTC"}}'])
    _check(chunks, "", [("get_time", {"zone": "UTC"})])
    chunks = _run(_forced(HERMES), ['{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'])
    _check(chunks, "", [("get_time", {"zone": "UTC"})])


def test_arguments_before_name_get_their_deltas_at_the_end() -> None:
    reply = '<tool_call>{"arguments": {"zone": "UTC"}, "name": "get_time"}</tool_call>done'
    chunks = _run(_auto(HERMES), list(reply))
    _check(chunks, "done", [("get_time", {"zone": "UTC"})])


def test_a_call_without_arguments_has_empty_arguments() -> None:
    chunks = _run(_auto(HERMES), ['<tool_call>\n{"name": "get_time"}\n</tool_call>'])
    _check(chunks, "", [("get_time", {})])


def test_ids_are_stable_and_depend_on_the_prompt() -> None:
    a = _summary(_run(_auto(HERMES), [HERMES_REPLY]))[1]
    b = _summary(_run(_auto(HERMES), list(HERMES_REPLY)))[1]
    other = Prepared(prompt="ANOTHER", constraint=_auto(HERMES).constraint, syntax=HERMES)
    c = _summary(_run(other, [HERMES_REPLY]))[1]
    assert [x.id for x in a] == [x.id for x in b]
    assert {x.id for x in a}.isdisjoint(x.id for x in c)


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        ('<tool_call>\n{"name": "get_weather", "arguments": {"city": }}\n</tool_call>', "malformed tool call"),
        ('<tool_call>\n{"name": "launch_rockets", "arguments": {}}\n</tool_call>', "unknown tool 'launch_rockets'"),
        ('<tool_call>\n{"name": "get_time", "arguments": 3}\n</tool_call>', "not a JSON object"),
        ('<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"', "cut off"),
        ("<tool_call>\nget_time(zone='UTC')\n</tool_call>", "does not start with a JSON object"),
        ("<tool_call>\n", "ended before"),
        ('<tool_call>\n["get_time"]\n</tool_call>', "does not start with a JSON object"),
    ],
)
def test_malformed_calls_are_bad_responses(reply: str, match: str) -> None:
    for pieces in ([reply], list(reply)):
        with pytest.raises(BadResponseError, match=match) as info:
            _run(_auto(HERMES), pieces)
        assert info.value.provider == PROVIDER


def test_a_call_whose_name_is_not_a_string_is_a_bad_response() -> None:
    with pytest.raises(BadResponseError, match="with a name"):
        _run(_auto(HERMES), ['<tool_call>{"name": 7, "arguments": {}}</tool_call>'])


# ----- Llama 3 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [lambda t: [t], _char_by_char], ids=["whole", "char"])
def test_llama3_python_tag_call(split: Any) -> None:
    _check(_run(_auto(LLAMA3), split(LLAMA3_REPLY)), "", [("get_weather", {"city": "Paris"})])


def test_llama3_bare_json_reply_is_a_call() -> None:
    reply = '\n{"name": "get_weather", "parameters": {"city": "Paris"}}'
    _check(_run(_auto(LLAMA3), list(reply)), "", [("get_weather", {"city": "Paris"})])


def test_llama3_json_that_is_not_a_call_is_content() -> None:
    reply = '{"answer": 42}'
    _check(_run(_auto(LLAMA3), list(reply)), reply, [])
    _check(_run(_auto(LLAMA3), ["It is ", '{"name": "get_time"}']), 'It is {"name": "get_time"}', [])


def test_llama3_forced_call_has_no_prefill() -> None:
    prepared = _forced(LLAMA3, [WEATHER])
    assert prepared.prefill == ""
    chunks = _run(prepared, list('{"name": "get_weather", "parameters": {"city": "Oslo"}}'), [WEATHER])
    _check(chunks, "", [("get_weather", {"city": "Oslo"})])


# ----- Mistral ----------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [lambda t: [t], _char_by_char], ids=["whole", "char"])
def test_mistral_parallel_calls(split: Any) -> None:
    chunks = _run(_auto(MISTRAL), split("Sure. " + MISTRAL_REPLY))
    _check(chunks, "Sure. ", [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "UTC"})])


def test_mistral_list_without_its_special_token_is_calls() -> None:
    reply = MISTRAL_REPLY.removeprefix("[TOOL_CALLS]")  # an engine that skips special tokens drops it
    _check(_run(_auto(MISTRAL), list(reply)), "", [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "UTC"})])
    _check(_run(_auto(MISTRAL), ["[1] is a footnote"]), "[1] is a footnote", [])


SYNTAX_CASES = [
    (HERMES, HERMES_REPLY, "Let me check both.\n", EXPECTED),
    (LLAMA3, LLAMA3_REPLY, "", [("get_weather", {"city": "Paris"})]),
    (MISTRAL, "Sure. " + MISTRAL_REPLY, "Sure. ", [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "UTC"})]),
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(SYNTAX_CASES), cuts=st.lists(st.floats(min_value=0, max_value=1), max_size=10))
def test_every_syntax_survives_any_split(case: Any, cuts: list[float]) -> None:
    syntax, reply, content, expected = case
    points = sorted({int(c * len(reply)) for c in cuts})
    pieces = [reply[a:b] for a, b in zip([0, *points], [*points, len(reply)], strict=True)]
    _check(_run(_auto(syntax), pieces), content, expected)


def test_mistral_forced_list_and_malformed() -> None:
    reply = MISTRAL_REPLY.removeprefix("[TOOL_CALLS]")
    _check(_run(_forced(MISTRAL), list(reply)), "", [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "UTC"})])
    with pytest.raises(BadResponseError, match="tool-call list"):
        _run(_auto(MISTRAL), ['[TOOL_CALLS][{"name": "get_time", "arguments": {}} "oops"]'])
    with pytest.raises(BadResponseError, match="ended before"):
        _run(_auto(MISTRAL), ["[TOOL_CALLS]["])


# ----- syntax detection and span schemas ------------------------------------------------------------


def test_syntax_detection() -> None:
    assert detect_syntax("tokenizer", "{% if tools %}<tool_call>{% endif %}") is HERMES
    assert detect_syntax("gguf", "[AVAILABLE_TOOLS]{{ tools }}[TOOL_CALLS]") is MISTRAL
    assert detect_syntax("tokenizer", "<|start_header_id|>{{ m.role }}<|end_header_id|><|python_tag|>") is LLAMA3
    assert detect_syntax("tokenizer", "<|im_start|>{{ m.role }}") is HERMES
    assert detect_syntax("llama3", None) is LLAMA3 and detect_syntax("mistral", None) is MISTRAL
    assert detect_syntax("chatml", None) is HERMES and detect_syntax("phi3", None) is HERMES


def test_span_schema_for_one_and_several_tools() -> None:
    one = HERMES.span_schema([WEATHER])
    assert list(one["properties"]) == ["name", "arguments"]  # name first: deltas stream early
    assert one["properties"]["name"] == {"const": "get_weather"}
    assert one["properties"]["arguments"] == WEATHER.parameters
    assert one["required"] == ["name", "arguments"] and one["additionalProperties"] is False
    both = HERMES.span_schema(TOOLS)
    assert [c["properties"]["name"]["const"] for c in both["anyOf"]] == ["get_weather", "get_time"]
    assert list(LLAMA3.span_schema([WEATHER])["properties"]) == ["name", "parameters"]
    listed = MISTRAL.span_schema(TOOLS)
    assert listed["type"] == "array" and listed["minItems"] == 1 and len(listed["items"]["anyOf"]) == 2


def test_span_schema_hoists_pydantic_defs() -> None:
    from pydantic import BaseModel

    class Place(BaseModel):
        city: str

    class Trip(BaseModel):
        start: Place
        end: Place

    tool = ToolDefinition(name="plan", parameters=Trip.model_json_schema())
    schema = HERMES.span_schema([tool])
    assert "Place" in schema["$defs"] and "$defs" not in schema["properties"]["arguments"]
    assert schema["properties"]["arguments"]["properties"]["start"] == {"$ref": "#/$defs/Place"}
    clash = ToolDefinition(name="other", parameters={**Trip.model_json_schema(), "$defs": {"Place": {"type": "null"}}})
    with pytest.raises(InvalidRequestError, match="Place"):
        HERMES.span_schema([tool, clash])


# ----- prepare() ---------------------------------------------------------------------------------

CHAT = [Message.system("Be brief."), Message.user("Weather in Paris?")]


def _params(**kw: Any) -> GenerationParams:
    return GenerationParams(max_tokens=32, temperature=0.0, **kw)


def test_prepare_required_prefills_the_opener_and_constrains_any_tool() -> None:
    template = select_template("chatml", None)
    prepared = prepare(template, CHAT, _params(tools=TOOLS, tool_choice="required"))
    assert prepared.prefill == "<tool_call>\n" and prepared.syntax is HERMES
    assert prepared.prompt == template.render(CHAT, tools=TOOLS) + "<tool_call>\n"
    assert prepared.prompt.endswith("<|im_start|>assistant\n<tool_call>\n")
    assert prepared.constraint == Constraint(decoding_schema(HERMES.span_schema(TOOLS)))


def test_prepare_named_tool_constrains_that_tool_only() -> None:
    template = select_template("chatml", None)
    prepared = prepare(template, CHAT, _params(tools=TOOLS, tool_choice="get_time"))
    assert prepared.constraint == Constraint(decoding_schema(HERMES.span_schema([TIME])))
    assert "get_weather" in prepared.prompt  # every tool is still offered
    with pytest.raises(InvalidRequestError, match="'get_news'"):
        prepare(template, CHAT, _params(tools=TOOLS, tool_choice="get_news"))


def test_prepare_auto_is_a_lazy_grammar() -> None:
    for choice in ("auto", None):
        prepared = prepare(select_template("chatml", None), CHAT, _params(tools=TOOLS, tool_choice=choice))
        assert prepared.prefill == "" and prepared.prompt.endswith("<|im_start|>assistant\n")
        assert prepared.constraint == Constraint(
            decoding_schema(HERMES.span_schema(TOOLS)), trigger="<tool_call>", rearm=True
        )
    mistral = prepare(select_template("mistral", None), CHAT, _params(tools=TOOLS))
    assert mistral.constraint is not None and mistral.constraint.trigger == "[TOOL_CALLS]"
    assert mistral.constraint.schema["type"] == "array"


def test_prepare_per_syntax_prefill() -> None:
    llama = prepare(select_template("llama3", None), CHAT, _params(tools=TOOLS, tool_choice="required"))
    assert llama.prefill == "" and llama.syntax is LLAMA3
    assert llama.prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    mistral = prepare(select_template("mistral", None), CHAT, _params(tools=TOOLS, tool_choice="required"))
    assert mistral.prefill == "[TOOL_CALLS]" and mistral.prompt.endswith("[/INST][TOOL_CALLS]")


def test_prepare_structured_output_and_its_mix_with_tools() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    template = select_template("chatml", None)
    plain = prepare(template, CHAT, _params(schema=schema))
    assert plain.constraint == Constraint(decoding_schema(schema)) and plain.prefill == "" and plain.syntax is None
    assert plain.prompt == template.render(CHAT)
    forced = prepare(template, CHAT, _params(schema=schema, tools=TOOLS, tool_choice="get_time"))
    assert forced.constraint == Constraint(decoding_schema(HERMES.span_schema([TIME])))  # the forced call wins
    with pytest.raises(InvalidRequestError, match="response_format"):
        prepare(template, CHAT, _params(schema=schema, tools=TOOLS, tool_choice="auto"))


def test_prepare_refuses_tools_on_the_raw_template() -> None:
    with pytest.raises(UnsupportedCapabilityError, match="raw"):
        prepare(select_template("raw", None), CHAT, _params(tools=TOOLS, tool_choice="required"))


def test_tool_choice_none_sends_no_tools() -> None:
    from zeph_providers.config import GenerationConfig
    from zeph_providers.options import ChatOptions

    params = GenerationParams.resolve(GenerationConfig(), ChatOptions(tools=list(TOOLS), tool_choice="none"))
    template = select_template("chatml", None)
    prepared = prepare(template, CHAT, params)
    assert prepared.prompt == template.render(CHAT) and prepared.constraint is None and prepared.syntax is None


def test_span_schemas_compile_as_llguidance_grammars() -> None:
    llguidance = pytest.importorskip("llguidance")
    from pydantic import BaseModel

    class Place(BaseModel):
        city: str

    class Trip(BaseModel):
        start: Place
        end: Place

    plan = ToolDefinition(name="plan", parameters=Trip.model_json_schema())
    for syntax in (HERMES, LLAMA3, MISTRAL):
        for tools in ([WEATHER], [WEATHER, TIME, plan]):
            grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(syntax.span_schema(tools)))
            assert llguidance.LLMatcher.validate_grammar(grammar) == "", (syntax.name, len(tools))


def test_closed_objects_closes_only_objects_that_do_not_choose() -> None:

    schema = {
        "type": "object",
        "properties": {
            "person": {"$ref": "#/$defs/Person"},
            "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
            "free": {"type": "object"},
            "mapping": {"type": "object", "additionalProperties": {"type": "integer"}},
            "either": {"anyOf": [{"type": "object", "properties": {"a": {"type": "integer"}}}, {"type": "null"}]},
            "properties": {"type": "object", "properties": {"x": {"const": {"properties": {}}}}},
        },
        "$defs": {"Person": {"type": "object", "properties": {"name": {"type": "string"}}}},
    }
    closed = closed_objects(schema)
    assert closed["additionalProperties"] is False
    assert closed["$defs"]["Person"]["additionalProperties"] is False
    assert closed["properties"]["tags"]["items"]["additionalProperties"] is False
    assert "additionalProperties" not in closed["properties"]["free"]  # lists no properties: stays open
    assert closed["properties"]["mapping"]["additionalProperties"] == {"type": "integer"}  # chose
    assert closed["properties"]["either"]["anyOf"][0]["additionalProperties"] is False
    assert closed["properties"]["properties"]["additionalProperties"] is False  # a property named "properties"
    assert closed["properties"]["properties"]["properties"]["x"]["const"] == {"properties": {}}  # values untouched
    assert "additionalProperties" not in schema  # the caller's schema is not modified


def test_prepare_decodes_response_format_with_closed_objects() -> None:
    from pydantic import BaseModel

    from zeph_providers.local.engine import GenerationParams
    from zeph_providers.local.templates import select_template
    from zeph_providers.local.tooling import prepare
    from zeph_providers.types import Message

    class Open(BaseModel):
        name: str

    params = GenerationParams(max_tokens=8, temperature=0.0, schema=Open.model_json_schema())
    prepared = prepare(select_template("chatml", None), [Message.user("hi")], params)
    assert prepared.constraint is not None
    assert prepared.constraint.schema["additionalProperties"] is False
    assert prepared.constraint.schema["x-guidance"]["whitespace_flexible"] is False
    custom = {"x-guidance": {"whitespace_flexible": True}, "type": "object", "properties": {}}
    assert decoding_schema(custom)["x-guidance"] == {"whitespace_flexible": True}  # the schema's own choice
    assert Open.model_validate({"name": "x"})  # every reply the closed grammar allows still validates
