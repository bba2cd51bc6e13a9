"""Structured-output repair (`zeph_providers.structured`): the re-ask loop on every BaseProvider and
the router, its attempts, hooks and deadline; streams that never re-ask; the JSON extractor, fuzzed."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.router.helpers import mock, router
from zeph_providers import Registry, StructuredOutputError
from zeph_providers.backends.mock import MockProvider, MockReply
from zeph_providers.errors import BadResponseError, ConfigError, InvalidRequestError, LlmError, ProviderTimeoutError
from zeph_providers.hooks import Call, Hook
from zeph_providers.structured import extract_json, prompted_messages
from zeph_providers.types import Attempt, Message, Role, ToolCall, ToolDefinition, Usage

HELLO = [Message.system("Be brief."), Message.user("Where?")]


class City(BaseModel):
    name: str
    population: int
    kind: Literal["city", "town"] = "city"


GOOD = '{"name": "Oslo", "population": 700000}'
BAD = '{"name": "Oslo"}'  # population missing


def provider(*replies: MockReply | str) -> MockProvider:
    return MockProvider("m", replies=list(replies))


# ----- the repair loop -----------------------------------------------------------------------


async def test_bad_then_good_reply_is_repaired_with_the_error_fed_back() -> None:
    mock_ = provider(
        MockReply(text=BAD, usage=Usage(input_tokens=5, output_tokens=3)),
        MockReply(text=GOOD, usage=Usage(input_tokens=20, output_tokens=7)),
    )
    resp = await mock_.chat(HELLO, response_format=City)
    assert resp.parsed == City(name="Oslo", population=700000)
    assert resp.text == GOOD
    assert [a.outcome for a in resp.attempts] == ["StructuredOutputError", "ok"]
    assert "population" in (resp.attempts[0].error or "")
    assert resp.usage == Usage(input_tokens=25, output_tokens=10)  # every try was paid for
    assert len(mock_.requests) == 2
    second = mock_.requests[1].messages
    assert second[:2] == HELLO
    assert second[2].role == Role.ASSISTANT and second[2].text == BAD
    assert second[3].role == Role.USER
    assert "population" in second[3].text and "JSON" in second[3].text
    assert json.dumps(City.model_json_schema(), sort_keys=True) in second[3].text


async def test_not_json_at_all_is_repaired_too() -> None:
    mock_ = provider("Sure! Oslo has 700k people.", GOOD)
    resp = await mock_.chat(HELLO, response_format=City)
    assert resp.parsed.name == "Oslo"
    assert resp.attempts[0].outcome == "StructuredOutputError"


async def test_every_try_bad_raises_the_typed_error_after_one_plus_n_tries() -> None:
    mock_ = provider(BAD)
    with pytest.raises(StructuredOutputError) as info:
        await mock_.chat(HELLO, response_format=City, structured_retries=2)
    error = info.value
    assert isinstance(error, BadResponseError)
    assert error.provider == "m"
    assert "3 tries" in error.message and "population" in error.message
    assert "population" in error.validation_error
    assert error.raw == BAD
    assert [a.outcome for a in error.attempts] == ["StructuredOutputError"] * 3
    assert len(mock_.requests) == 3
    # Only the latest bad reply goes back: the context does not grow with each retry.
    assert len(mock_.requests[2].messages) == len(HELLO) + 2


async def test_zero_retries_fails_at_once_and_the_default_is_one() -> None:
    mock_ = provider(BAD)
    with pytest.raises(StructuredOutputError) as info:
        await mock_.chat(HELLO, response_format=City, structured_retries=0)
    assert len(mock_.requests) == 1 and len(info.value.attempts) == 1
    with pytest.raises(StructuredOutputError) as info:
        await mock_.chat(HELLO, response_format=City)
    assert len(mock_.requests) == 3 and len(info.value.attempts) == 2


async def test_provider_setting_is_the_default_and_per_call_wins() -> None:
    mock_ = provider(BAD)
    mock_.structured_retries = 0
    with pytest.raises(StructuredOutputError):
        await mock_.chat(HELLO, response_format=City)
    assert len(mock_.requests) == 1
    with pytest.raises(StructuredOutputError):
        await mock_.chat(HELLO, response_format=City, structured_retries=1)
    assert len(mock_.requests) == 3


async def test_negative_per_call_retries_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="structured_retries"):
        await provider(GOOD).chat(HELLO, response_format=City, structured_retries=-1)


async def test_a_dict_schema_retries_only_on_invalid_json() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    mock_ = provider("{not json", '{"a": "x"}')
    resp = await mock_.chat(HELLO, response_format=schema)
    assert resp.parsed == {"a": "x"} and len(resp.attempts) == 2


async def test_no_response_format_or_good_reply_makes_one_request() -> None:
    mock_ = provider(GOOD)
    resp = await mock_.chat(HELLO, response_format=City)
    assert [a.outcome for a in resp.attempts] == ["ok"] and len(mock_.requests) == 1
    await mock_.chat(HELLO)
    assert len(mock_.requests) == 2


async def test_a_call_of_the_callers_tool_is_not_a_structured_failure() -> None:
    tool = ToolDefinition(name="look_up", description="d", parameters={"type": "object", "properties": {}})
    mock_ = provider(MockReply(tool_calls=[ToolCall(id="c1", name="look_up", arguments={})]))
    resp = await mock_.chat(HELLO, response_format=City, tools=[tool])
    assert resp.parsed is None and resp.tool_calls and len(mock_.requests) == 1


async def test_config_field_reaches_the_provider_through_the_registry() -> None:
    registry = Registry.from_dict(
        {"llm": {"providers": [{"name": "m", "type": "mock", "responses": [BAD], "structured_retries": 3}]}}
    )
    async with registry:
        built = registry.get("m")
        with pytest.raises(StructuredOutputError) as info:
            await built.chat(HELLO, response_format=City)
    assert len(info.value.attempts) == 4


def test_config_validates_retries_and_modes() -> None:
    def load(**entry: Any) -> Registry:
        return Registry.from_dict({"llm": {"providers": [{"name": "p", **entry}]}})

    with pytest.raises(ConfigError, match="structured_retries"):
        load(type="mock", structured_retries=-1)
    with pytest.raises(ConfigError, match="structured_output"):
        load(type="ollama", model="m", structured_output="tool")
    with pytest.raises(ConfigError, match="structured_output"):
        load(type="claude", api_key="k" * 12, structured_output="native")
    with pytest.raises(ConfigError, match="structured_output"):
        Registry.from_dict(
            {
                "llm": {
                    "providers": [
                        {"name": "a", "type": "mock"},
                        {"name": "r", "type": "router", "providers": ["a"], "structured_output": "native"},
                    ]
                }
            }
        )
    for mode in ("native", "tool", "prompted"):
        load(type="compatible", model="m", base_url="http://127.0.0.1:1/v1", structured_output=mode)


# ----- hooks and the deadline ------------------------------------------------------------------


class Recorder(Hook):
    def __init__(self) -> None:
        self.begun = 0
        self.attempts: list[Attempt] = []
        self.calls: list[Call] = []

    def before_request(self, call: Call) -> None:
        self.begun += 1

    def after_attempt(self, call: Call, attempt: Attempt) -> None:
        self.attempts.append(attempt)

    def after_call(self, call: Call) -> None:
        self.calls.append(call)


async def test_hooks_see_one_call_with_one_attempt_per_try() -> None:
    mock_ = provider(BAD, GOOD)
    recorder = mock_.hooks.add(Recorder())
    assert isinstance(recorder, Recorder)
    resp = await mock_.chat(HELLO, response_format=City)
    assert recorder.begun == 1 and len(recorder.calls) == 1
    assert [a.outcome for a in recorder.attempts] == ["StructuredOutputError", "ok"]
    call = recorder.calls[0]
    assert call.error is None and call.response is resp
    assert [a.outcome for a in call.attempts] == ["StructuredOutputError", "ok"]


async def test_hooks_see_the_failed_call_once() -> None:
    mock_ = provider(BAD)
    recorder = mock_.hooks.add(Recorder())
    assert isinstance(recorder, Recorder)
    with pytest.raises(StructuredOutputError):
        await mock_.chat(HELLO, response_format=City)
    assert recorder.begun == 1 and len(recorder.calls) == 1
    assert isinstance(recorder.calls[0].error, StructuredOutputError)
    assert len(recorder.attempts) == 2


async def test_one_deadline_covers_every_try() -> None:
    mock_ = provider(BAD, MockReply(text=GOOD, delay_secs=30.0))
    with pytest.raises(ProviderTimeoutError) as info:
        await mock_.chat(HELLO, response_format=City, timeout=0.5)
    outcomes = [a.outcome for a in info.value.attempts]
    assert outcomes == ["StructuredOutputError", "ProviderTimeoutError"]


# ----- streams never re-ask -----------------------------------------------------------------


async def test_a_stream_raises_the_typed_error_at_its_end_without_retry() -> None:
    mock_ = provider(BAD, GOOD)
    stream = mock_.chat_stream(HELLO, response_format=City)
    seen: list[str] = []
    with pytest.raises(StructuredOutputError):
        async for chunk in stream:
            seen.append(getattr(chunk, "text", ""))
    assert "".join(seen) == BAD  # what was delivered stays delivered
    assert len(mock_.requests) == 1
    with pytest.raises(LlmError, match="the stream failed"):
        stream.response  # noqa: B018
    assert [a.outcome for a in stream.attempts] == ["ok"]  # the request itself succeeded


async def test_collect_on_a_stream_raises_the_same_error() -> None:
    mock_ = provider(BAD)
    async with mock_.chat_stream(HELLO, response_format=City) as stream:
        with pytest.raises(StructuredOutputError):
            await stream.collect()


async def test_chat_stream_refuses_structured_retries() -> None:
    mock_ = provider(GOOD)
    with pytest.raises(InvalidRequestError, match="chat_stream"):
        mock_.chat_stream(HELLO, response_format=City, structured_retries=2)
    async with mock_.chat_stream(HELLO, response_format=City, structured_retries=0) as stream:
        resp = await stream.collect()
    assert resp.parsed.population == 700000


# ----- the router ---------------------------------------------------------------------------


async def test_router_repairs_the_whole_routed_call_once() -> None:
    a = mock("a", BAD, GOOD)
    routed = router([a])
    resp = await routed.chat(HELLO, response_format=City)
    assert resp.parsed.name == "Oslo" and resp.provider == "a"
    assert len(a.requests) == 2
    assert a.requests[1].messages[2].text == BAD
    assert [x.outcome for x in resp.attempts] == ["StructuredOutputError", "ok"]


async def test_router_members_do_not_repair_inside_a_routed_call() -> None:
    a = mock("a", BAD)
    a.structured_retries = 5
    routed = router([a])
    with pytest.raises(StructuredOutputError) as info:
        await routed.chat(HELLO, response_format=City, structured_retries=1)
    assert info.value.provider == "router"
    assert len(a.requests) == 2  # the router's 1 + 1, not the member's 1 + 5 per try


async def test_router_zero_retries_keeps_todays_behaviour() -> None:
    a = mock("a", BAD)
    routed = router([a], structured_retries=0)
    with pytest.raises(StructuredOutputError):
        await routed.chat(HELLO, response_format=City)
    assert len(a.requests) == 1


# ----- the JSON extractor -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        ("  [1, 2]\n", [1, 2]),
        ("42", 42),
        ('"x"', "x"),
        ('Here you go:\n```json\n{"a": [1, {"b": null}]}\n```\nAnything else?', {"a": [1, {"b": None}]}),
        ('```\n{"a": 2}\n```', {"a": 2}),
        ('The answer is {"a": 3} and that is {"b": 4}.', {"a": 3}),
        ('I think {not json} but {"a": 5}', {"a": 5}),
        ('```python\nx = {1}\n```\n```json\n{"c": 1}\n```', {"c": 1}),
    ],
)
def test_extract_json_cases(text: str, value: Any) -> None:
    assert extract_json(text) == value


@pytest.mark.parametrize("text", ["", "no json here", "{broken", "[" * 5000, "```json\n{\n```"])
def test_extract_json_none_is_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        extract_json(text)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
CONTAINERS = st.lists(JSON_VALUES, max_size=4) | st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4)
PROSE = st.text(alphabet=st.characters(blacklist_characters='{}[]`"', blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(value=CONTAINERS, before=PROSE, after=PROSE, indent=st.sampled_from([None, 2]))
def test_extract_json_finds_a_value_in_prose(value: Any, before: str, after: str, indent: int | None) -> None:
    text = before + " " + json.dumps(value, indent=indent) + " " + after
    assert extract_json(text) == value


@settings(max_examples=150, deadline=None)
@given(value=JSON_VALUES, before=st.text(max_size=40), after=st.text(max_size=40), tag=st.sampled_from(["json", ""]))
def test_extract_json_prefers_a_fenced_block(value: Any, before: str, after: str, tag: str) -> None:
    # Prose may hold braces and brackets of its own; the fenced JSON still wins (unless the whole
    # text is JSON by itself, which the prose newlines prevent).
    assume("```" not in json.dumps(value, indent=2))
    text = f"{before.replace('`', '')}\n```{tag}\n{json.dumps(value, indent=2)}\n```\n{after.replace('`', '')}"
    assert extract_json(text) == value


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_extract_json_never_raises_anything_but_value_error(text: str) -> None:
    try:
        value = extract_json(text)
    except ValueError:
        return
    json.dumps(value)  # whatever it returns is a JSON value


def test_prompted_messages_extend_the_system_prompt_or_add_one() -> None:
    schema = City.model_json_schema()
    extended = prompted_messages(HELLO, schema)
    assert extended[0].role == Role.SYSTEM and extended[0].text.startswith("Be brief.\n\n")
    assert json.dumps(schema, sort_keys=True) in extended[0].text
    assert extended[1:] == HELLO[1:]
    added = prompted_messages([Message.user("hi")], schema)
    assert added[0].role == Role.SYSTEM and len(added) == 2


async def test_a_reply_cut_at_max_tokens_says_so() -> None:
    from zeph_providers.backends.mock import MockProvider, MockReply
    from zeph_providers.errors import StructuredOutputError
    from zeph_providers.options import Capabilities

    mock = MockProvider(
        replies=[MockReply(text='{"a": "unfinish', finish_reason="length")],
        capabilities=Capabilities(structured_output=True),
    )
    with pytest.raises(StructuredOutputError, match=r"cut at max_tokens .*\(raise max_tokens\)") as info:
        await mock.chat([Message.user("q")], response_format={"type": "object"}, structured_retries=0)
    assert info.value.raw == '{"a": "unfinish'
