"""Forgiving, precise inputs (issue 16 item 2): `chat("hi")`, a `Message`, OpenAI-style dicts and
lists mixing them are accepted everywhere a conversation is; anything else is a typed
`InvalidRequestError` naming the provider, never an AttributeError or pydantic ValidationError."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zeph_providers import (
    BlockingRegistry,
    ImagePart,
    InvalidRequestError,
    Message,
    MessageInput,
    MockProvider,
    Registry,
    Role,
    TextPart,
    ToolCall,
    ToolResultPart,
    ToolUsePart,
    messages_from,
)
from zeph_providers.backends._openai_request import convert_messages

PNG = b"\x89PNG\r\n\x1a\n fake image bytes"
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()

OPENAI_HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {
        "role": "user",
        "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": PNG_URL}}],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": '{"zone":"CET"}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
    {"role": "assistant", "content": "Sunny, noon."},
    {"role": "user", "content": "Thanks"},
]


# ----- what is accepted -------------------------------------------------------------------------


def test_a_string_is_one_user_message() -> None:
    assert messages_from("hi") == [Message.user("hi")]


def test_a_message_and_a_dict_alone_are_one_message() -> None:
    assert messages_from(Message.system("s")) == [Message.system("s")]
    assert messages_from({"role": "user", "content": "hi"}) == [Message.user("hi")]


def test_a_list_mixing_messages_and_dicts() -> None:
    mixed = [Message.system("Be brief."), {"role": "user", "content": "hi"}, Message.assistant("yo")]
    assert messages_from(mixed) == [Message.system("Be brief."), Message.user("hi"), Message.assistant("yo")]
    assert messages_from(m for m in mixed) == messages_from(mixed)  # any iterable


def test_openai_history_maps_to_our_parts() -> None:
    system, user, calls, result_1, result_2, answer, thanks = messages_from(OPENAI_HISTORY)
    assert system == Message.system("Be brief.")
    assert user.role is Role.USER and user.parts == (
        TextPart(text="What is this?"),
        ImagePart(data=PNG, mime_type="image/png"),
    )
    assert calls.parts == (
        ToolUsePart(id="call_1", name="weather", arguments={"city": "Paris"}),
        ToolUsePart(id="call_2", name="time", arguments={"zone": "CET"}),
    )
    assert calls.tool_calls == [
        ToolCall(id="call_1", name="weather", arguments={"city": "Paris"}),
        ToolCall(id="call_2", name="time", arguments={"zone": "CET"}),
    ]
    assert result_1 == Message(role=Role.TOOL, parts=(ToolResultPart(tool_call_id="call_1", content="sunny"),))
    assert result_2.tool_results[0].tool_call_id == "call_2"
    assert answer == Message.assistant("Sunny, noon.") and thanks == Message.user("Thanks")


def test_openai_history_round_trips_through_the_openai_wire_format() -> None:
    """What the OpenAI backend sends for the mapped history is the history we were given."""
    assert convert_messages(messages_from(OPENAI_HISTORY)) == OPENAI_HISTORY


def test_developer_role_arguments_as_dict_and_sdk_dump_noise() -> None:
    got = messages_from(
        [
            {"role": "developer", "content": "rules"},
            {
                "role": "assistant",
                "content": "",
                "refusal": None,
                "audio": None,
                "tool_calls": [
                    {"id": "c", "function": {"name": "f", "arguments": {"a": 1}}},
                ],
            },
            {"role": "user", "content": ["plain", TextPart(text=" part")], "name": None},
        ]
    )
    assert got[0] == Message.system("rules")
    assert got[1].parts == (ToolUsePart(id="c", name="f", arguments={"a": 1}),)
    assert got[2].text == "plain part"


def test_our_own_json_shape_reads_back() -> None:
    history = [Message.user("a"), Message.tool_result("c1", {"x": 1}, is_error=True)]
    dumped = [m.model_dump(mode="json") for m in history]
    assert messages_from(dumped) == history


# ----- what is refused --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (42, "got int 42"),
        (None, "got NoneType"),
        (b"hi", "got bytes"),
        (["hi"], "messages[0] is a str"),
        ([Message.user("a"), 3.5], "messages[1] must be a Message"),
        ({"content": "no role"}, "'role' must be one of"),
        ({"role": "robot", "content": "x"}, "'role' must be one of"),
        ({"role": "user", "content": "x", "name": "bob"}, "unsupported key(s) 'name'"),
        ({"role": "user", "content": 7}, "'content' must be a str"),
        ({"role": "user", "content": [{"type": "audio"}]}, "unsupported content part type"),
        ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}, "data: URL"),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": "data:image/png;base64,@@@"}]},
            "not valid base64",
        ),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG_URL, "detail": "high"}}]},
            "detail",
        ),
        ({"role": "tool", "content": "r"}, "needs 'tool_call_id'"),
        ({"role": "user", "content": "x", "tool_call_id": "c"}, "only a 'tool' message"),
        ({"role": "user", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}, "only an assistant"),
        (
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]},
            "not valid JSON",
        ),
        (
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]},
            "JSON object",
        ),
        ({"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}, "needs 'id'"),
        ({"role": "user", "parts": [{"type": "nope"}]}, "not a valid Message"),
    ],
)
def test_refusals_are_typed_and_say_what_is_wrong(value: object, words: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        messages_from(value, provider="p")
    assert words in str(caught.value)
    assert caught.value.provider == "p"


def test_builders_raise_the_typed_error_which_is_also_a_value_error() -> None:
    for build in (
        lambda: Message.user(42),  # type: ignore[arg-type]
        lambda: Message.system(None),  # type: ignore[arg-type]
        lambda: Message.assistant(tool_calls=[{"id": "x"}]),  # type: ignore[list-item]
        lambda: Message.user("a", images=[b"png"]),  # type: ignore[list-item]
        lambda: Message.tool_result(1, "x"),  # type: ignore[arg-type]
        lambda: Message.tool_result("c", object()),
    ):
        with pytest.raises(InvalidRequestError) as caught:
            build()
        assert isinstance(caught.value, ValueError)  # code that caught pydantic's ValueError still does
    # (not the word "user": another test may have registered it as a secret, redacted everywhere)
    assert "takes the text as a str; got int 42" in str(_error(lambda: Message.user(42)))  # type: ignore[arg-type]


def _error(build: Any) -> BaseException:
    try:
        build()
    except BaseException as exc:
        return exc
    raise AssertionError("no error")


# ----- random junk only ever gives the typed error ----------------------------------------------

_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8) | st.binary(max_size=4)
)
_keys = st.sampled_from(
    [
        "role",
        "content",
        "tool_calls",
        "tool_call_id",
        "type",
        "text",
        "image_url",
        "url",
        "id",
        "function",
        "name",
        "arguments",
        "parts",
    ]
)
_roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "robot"])
_json = st.recursive(
    _scalars | _roles,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)
_messageish = st.fixed_dictionaries(
    {"role": _roles}, optional={"content": _json, "tool_calls": _json, "tool_call_id": _json, "parts": _json}
)
_junk = (
    _json | _messageish | st.lists(_messageish | _json, max_size=3) | st.builds(object) | st.just(Message.user("ok"))
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_junk)
def test_random_junk_gives_messages_or_the_typed_error(value: object) -> None:
    try:
        got = messages_from(value, provider="fuzz")
    except InvalidRequestError as exc:
        assert exc.provider == "fuzz"
        return
    assert all(isinstance(message, Message) for message in got)


@settings(max_examples=150, deadline=None)
@given(_junk)
async def test_random_junk_through_chat_gives_a_reply_or_the_typed_error(value: object) -> None:
    provider = MockProvider(replies=["ok"])
    try:
        response = await provider.chat(value)  # type: ignore[arg-type]
    except InvalidRequestError as exc:
        assert exc.provider == "mock"
        assert provider.requests == []  # nothing was sent
        return
    assert response.text == "ok"


# ----- every entry point takes them -------------------------------------------------------------


async def test_chat_and_chat_stream_take_every_shape() -> None:
    provider = MockProvider(replies=["ok"])
    inputs: list[MessageInput] = [
        "hi",
        Message.user("hi"),
        {"role": "user", "content": "hi"},
        [{"role": "user", "content": "hi"}],
    ]
    for value in inputs:
        assert (await provider.chat(value)).text == "ok"
        async with provider.chat_stream(value) as stream:
            assert (await stream.collect()).text == "ok"
    assert all(request.messages == [Message.user("hi")] for request in provider.requests)
    assert len(provider.requests) == 8
    with pytest.raises(InvalidRequestError, match="provider 'mock': messages must be"):
        provider.chat_stream(42)  # type: ignore[arg-type]  # refused at once, before any iteration


async def test_a_router_takes_them_and_its_members_get_messages() -> None:
    member = MockProvider("member", replies=["routed"])
    registry = Registry.from_toml_string(
        '[[llm.providers]]\nname = "front"\ntype = "router"\nproviders = ["member"]\n', providers=[member]
    )
    async with registry:
        router = registry.get("front")
        assert (await router.chat({"role": "user", "content": "hi"})).text == "routed"
        with pytest.raises(InvalidRequestError) as caught:
            await router.chat(["hi"])  # type: ignore[list-item]
        assert caught.value.provider == "front"
    assert member.requests[0].messages == [Message.user("hi")]


def test_the_blocking_twins_take_them() -> None:
    with BlockingRegistry.from_toml_string(
        '[[llm.providers]]\nname = "m"\ntype = "mock"\nresponses = ["ok"]\n'
    ) as registry:
        provider = registry.get("m")
        assert provider.chat("hi").text == "ok"
        with provider.chat_stream({"role": "user", "content": "hi"}) as stream:
            assert stream.collect().text == "ok"
        with pytest.raises(InvalidRequestError, match="provider 'm'"):
            provider.chat_stream(["hi", "h"])  # type: ignore[list-item]
        with pytest.raises(InvalidRequestError):
            provider.chat(7)  # type: ignore[arg-type]


async def test_embed_inputs_are_checked() -> None:
    provider = MockProvider()
    assert len(await provider.embed("text")) == 8
    assert len(await provider.embed_batch(("a", "b"))) == 2
    with pytest.raises(
        InvalidRequestError, match="embed\\(\\) takes one str; got list \\(for several texts, use embed_batch\\)"
    ):
        await provider.embed(["a"])  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="for one text, use embed"):
        await provider.embed_batch("abc")
    with pytest.raises(InvalidRequestError, match=r"texts\[1\] must be a str; got int 2"):
        await provider.embed_batch(["a", 2])  # type: ignore[list-item]
    with pytest.raises(InvalidRequestError):
        await provider.embed_batch(None)  # type: ignore[arg-type]


# ----- any valid OpenAI history round-trips -----------------------------------------------------

_text = st.text(max_size=12)
_ids = st.from_regex(r"call_[a-z0-9]{1,8}", fullmatch=True)
_args = st.dictionaries(st.text(min_size=1, max_size=5), st.integers() | _text | st.booleans(), max_size=3)
_image = st.binary(min_size=1, max_size=12).map(
    lambda data: {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()}}
)
_user = st.one_of(
    _text.map(lambda text: {"role": "user", "content": text}),
    st.lists(_text.map(lambda text: {"type": "text", "text": text}) | _image, min_size=1, max_size=3)
    .filter(lambda parts: any(p["type"] == "image_url" for p in parts))
    .map(lambda parts: {"role": "user", "content": parts}),
)
_call = st.builds(
    lambda call_id, name, args: {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False, separators=(",", ":"))},
    },
    _ids,
    st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
    _args,
)
_assistant = st.one_of(
    _text.map(lambda text: {"role": "assistant", "content": text}),
    st.builds(
        lambda text, calls: {"role": "assistant", "content": text or None, "tool_calls": calls},
        _text,
        st.lists(_call, min_size=1, max_size=3),
    ),
)
_tool = st.builds(lambda call_id, text: {"role": "tool", "tool_call_id": call_id, "content": text}, _ids, _text)
_system = _text.map(lambda text: {"role": "system", "content": text})
_history = st.lists(_system | _user | _assistant | _tool, max_size=6)


@settings(max_examples=300, deadline=None)
@given(_history)
def test_any_openai_history_round_trips_through_our_messages(history: list[dict[str, Any]]) -> None:
    assert convert_messages(messages_from(history)) == history
