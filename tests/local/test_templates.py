"""Chat templates, end-token detection, incremental decoding and stop matching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zeph_providers.local.decoding import IncrementalDecoder, StopMatcher
from zeph_providers.local.templates import TEMPLATES, eos_token_ids, select_template
from zeph_providers.types import Message, ToolCall

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
