"""Chat templates, end-token detection, incremental decoding and stop matching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zeph_providers.local.decoding import IncrementalDecoder, StopMatcher
from zeph_providers.local.templates import TEMPLATES, ChatTemplate, eos_token_ids, select_template
from zeph_providers.types import Message, ToolCall, ToolDefinition

CONVERSATION = [Message.system("Be brief."), Message.user("Hi"), Message.assistant("Hello!"), Message.user("Bye")]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


def test_chatml() -> None:
    text = select_template("chatml", None).render(CONVERSATION)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    )


def test_llama3() -> None:
    text = select_template("llama3", None).render(CONVERSATION[:2])
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_mistral_folds_the_system_prompt_into_the_first_user_turn() -> None:
    text = select_template("mistral", None).render(CONVERSATION)
    assert text == "<s>[INST] Be brief.\n\nHi [/INST] Hello!</s>[INST] Bye [/INST]"


def test_phi3_and_raw() -> None:
    assert select_template("phi3", None).render(CONVERSATION[1:2]) == "<|user|>\nHi<|end|>\n<|assistant|>\n"
    raw = select_template("raw", None)
    assert raw.render(CONVERSATION[1:2]) == "Hi" and raw.add_special_tokens


def test_end_tokens_per_template() -> None:
    assert "<|im_end|>" in TEMPLATES["chatml"].end_tokens
    assert "<|eot_id|>" in TEMPLATES["llama3"].end_tokens
    assert "<|end|>" in TEMPLATES["phi3"].end_tokens
    assert "</s>" in TEMPLATES["mistral"].end_tokens


def test_auto_uses_the_tokenizers_own_template(tokenizer: Any) -> None:
    template = select_template("auto", tokenizer)
    assert template.name == "tokenizer" and template.end_tokens == ("<|im_end|>",)
    assert template.render(CONVERSATION) == select_template("chatml", None).render(CONVERSATION)


def test_auto_without_a_template_falls_back_to_chatml() -> None:
    class Bare:
        chat_template = None

    assert select_template("auto", Bare()).name == "chatml"


def test_unknown_template_name() -> None:
    with pytest.raises(ValueError, match="chatml"):
        select_template("vicuna", None)


def test_eos_ids_from_tokenizer_and_template(tokenizer: Any) -> None:
    ids = eos_token_ids(tokenizer, select_template("auto", tokenizer))
    assert ids == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    chatml_ids = eos_token_ids(tokenizer, select_template("chatml", tokenizer))
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") in chatml_ids  # a template end token in the vocab
    assert eos_token_ids(tokenizer, select_template("llama3", tokenizer)) == ids  # not in this vocab: ignored


def test_tool_messages_render_as_text() -> None:
    history = [
        Message.assistant("Checking.", tool_calls=[ToolCall(id="c1", name="lookup", arguments={"q": "x"})]),
        Message.tool_result("c1", "found it"),
        Message.tool_result("c2", "boom", is_error=True),
    ]
    text = select_template("chatml", None).render(history)
    assert '[tool call c1: lookup({"q": "x"})]' in text
    assert "<|im_start|>user\n[tool result for c1]\nfound it" in text
    assert "[tool error for c2]\nboom" in text


def test_incremental_decoding_never_splits_characters(tokenizer: Any) -> None:
    text = "héllo wörld 日本語のテキスト 🙂🚀 café"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(i) for i in ids]
    deltas.append(decoder.flush())
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert sum(1 for d in deltas if d) > 5  # it really streams


@pytest.mark.parametrize(
    ("pieces", "stops", "expected", "hit"),
    [
        (["Hello ", "wor", "ld. STO", "P here"], ("STOP",), "Hello world. ", True),
        (["ab", "c"], ("bcd",), "abc", False),
        (["x<", "|end", "|>y"], ("<|end|>",), "x", True),
        (["no stops"], (), "no stops", False),
        (["aaa", "b"], ("ab", "zz"), "aa", True),
    ],
)
def test_stop_matcher(pieces: list[str], stops: tuple[str, ...], expected: str, hit: bool) -> None:
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(p) for p in pieces) + matcher.flush()
    assert out == expected and matcher.hit is hit


# ----- rendering with tools ----------------------------------------------------------------------

WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALL = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})
TOOL_LOOP = [
    Message.system("Be brief."),
    Message.user("Weather in Paris and Oslo?"),
    Message.assistant("", tool_calls=[CALL, ToolCall(id="call_2", name="get_weather", arguments={"city": "Oslo"})]),
    Message.tool_result("call_1", "21C"),
    Message.tool_result("call_2", "3C"),
]

# A compact Qwen2.5-style template (the official one's tool handling, trimmed): tools in the system
# prompt, assistant tool_calls as <tool_call> blocks, tool messages as <tool_response> in a user turn.
QWEN_LIKE = (
    "{%- if tools %}<|im_start|>system\n{{ messages[0]['content'] if messages[0]['role'] == 'system' }}"
    "\n\n# Tools\n<tools>{% for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}"
    "{{ '\\n' }}</tools><|im_end|>\n"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and tools %}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}<|im_start|>user{% endif %}"
    "{{ '\\n' }}<tool_response>\n{{ message.content }}\n</tool_response>"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}<|im_end|>{{ '\\n' }}{% endif %}"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}"
    "{%- for call in message.tool_calls or [] %}{{ '\\n' if message.content or not loop.first }}<tool_call>\n"
    '{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}\n</tool_call>'
    "{%- endfor %}<|im_end|>{{ '\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_native_tools_render_through_the_template() -> None:
    template = ChatTemplate.from_jinja(QWEN_LIKE, eos_token="<|im_end|>")
    assert template.native_tools and template.syntax.name == "hermes"
    text = template.render(TOOL_LOOP, tools=[WEATHER])
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n<tools>\n")
    assert '"name": "get_weather"' in text and '"type": "function"' in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert "<|im_start|>user\n<tool_response>\n21C\n</tool_response>\n<tool_response>\n3C\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert "[tool call" not in text


def test_a_template_that_rejects_tool_messages_gets_them_as_text() -> None:
    strict = QWEN_LIKE.replace(
        "{%- elif message.role == 'tool' %}", "{%- elif message.role == 'tool' %}{{ raise_exception('no tool role') }}"
    )
    text = ChatTemplate.from_jinja(strict).render(TOOL_LOOP, tools=[WEATHER])
    assert "<|im_start|>user\n<tool_response>\n21C\n</tool_response>\n<tool_response>\n3C\n</tool_response>" in text
    assert "# Tools" in text  # still the template's own tool list


def test_chatml_without_tool_support_gets_tools_in_the_system_prompt() -> None:
    template = select_template("chatml", None)
    assert not template.native_tools
    text = template.render(TOOL_LOOP, tools=[WEATHER])
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in system
    assert "<tool_call></tool_call> XML tags" in system
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>'
    ) in text
    assert "<|im_start|>user\n<tool_response>\n21C\n</tool_response>\n<tool_response>\n3C\n</tool_response>" in text
    no_system = template.render(TOOL_LOOP[1:2], tools=[WEATHER])
    assert no_system.startswith("<|im_start|>system\n# Tools\n")


def test_jinja_template_without_tools_uses_the_text_fallback(tokenizer: Any) -> None:
    template = select_template("auto", tokenizer)  # the tiny tokenizer's ChatML template has no `tools`
    assert not template.native_tools
    assert template.render(TOOL_LOOP, tools=[WEATHER]) == select_template("chatml", None).render(
        TOOL_LOOP, tools=[WEATHER]
    )


def test_llama3_and_mistral_fallback_forms() -> None:
    llama = select_template("llama3", None).render(TOOL_LOOP, tools=[WEATHER])
    assert 'respond with <|python_tag|> followed by a JSON object' in llama
    assert '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}' in llama
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n21C\n3C<|eot_id|>" in llama
    mistral = select_template("mistral", None).render(TOOL_LOOP, tools=[WEATHER])
    assert mistral.startswith("<s>[INST] Be brief.\n\n[AVAILABLE_TOOLS][{")
    assert '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_1"}' in mistral
    assert '[TOOL_RESULTS]{"call_id": "call_1", "content": "21C"}[/TOOL_RESULTS]' in mistral


def test_without_tools_rendering_is_unchanged() -> None:
    template = select_template("chatml", None)
    assert template.render(TOOL_LOOP, tools=[]) == template.render(TOOL_LOOP) == template.render(TOOL_LOOP, tools=None)
