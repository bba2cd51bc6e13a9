"""Generation through the provider: options, stop strings, usage, finish reasons, capabilities."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.local.conftest import ProviderFactory
from zeph_providers import Registry
from zeph_providers.errors import ContextLengthError, InvalidRequestError, UnsupportedCapabilityError
from zeph_providers.local.provider import LocalProvider, constrained_decoding
from zeph_providers.types import ContentChunk, ImagePart, Message, ToolCall, ToolDefinition, UsageChunk

HELLO = [Message.system("Be brief."), Message.user("Hello there, how are you?")]


def _stop_from(text: str) -> str:
    """A two-character piece of `text` after its start, free of replacement characters."""
    for index in range(3, len(text) - 2):
        piece = text[index : index + 2]
        if "\ufffd" not in piece and piece.strip():
            return piece
    raise AssertionError(f"no usable stop string in {text!r}")


async def test_usage_counts_prompt_and_completion_tokens(tiny: LocalProvider) -> None:
    response = await tiny.chat(HELLO, max_tokens=7)
    engine = tiny.worker.engine
    assert engine is not None
    prompt = engine.template.render(HELLO)
    assert response.usage.input_tokens == len(engine.loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert response.usage.output_tokens == 7
    assert response.finish_reason == "length"
    assert response.provider == "tiny"


async def test_stop_string_ends_the_answer_and_is_not_included(tiny: LocalProvider) -> None:
    full = (await tiny.chat(HELLO, max_tokens=16)).text
    stop = _stop_from(full)
    response = await tiny.chat(HELLO, max_tokens=16, stop=[stop, "never-seen-zzz"])
    assert response.text == full[: full.find(stop)]
    assert stop not in response.text
    assert response.finish_reason == "stop"
    assert response.usage.output_tokens < 16


async def test_configured_stop_strings_apply_and_per_call_stop_overrides(
    make_provider: ProviderFactory, tiny_model: Path
) -> None:
    plain = make_provider()
    full = (await plain.chat(HELLO)).text
    stop = _stop_from(full)
    configured = make_provider(generation={"stop": [stop]})
    assert (await configured.chat(HELLO)).text == full[: full.find(stop)]
    overridden = await configured.chat(HELLO, stop=["never-seen-zzz"])
    assert overridden.text == full and overridden.finish_reason == "length"


async def test_eos_ends_with_stop_and_no_eos_text(make_provider: ProviderFactory, eos_model: Path) -> None:
    provider = make_provider(eos_model)
    response = await provider.chat(HELLO, max_tokens=10)
    assert response.text == "" and "<|im_end|>" not in response.text
    assert response.finish_reason == "stop"
    assert response.usage.output_tokens == 1


async def test_per_call_overrides(tiny: LocalProvider) -> None:
    short = await tiny.chat(HELLO, max_tokens=3)
    assert short.usage.output_tokens == 3 and short.finish_reason == "length"
    sampled = [await tiny.chat(HELLO, temperature=1.5, seed=s, max_tokens=12) for s in (1, 1, 2)]
    assert sampled[0].text == sampled[1].text  # same seed, same sample
    assert sampled[0].text != sampled[2].text  # another seed, another sample
    top = await tiny.chat(HELLO, temperature=1.0, top_p=0.5, top_k=5, seed=3, max_tokens=12)
    assert top.usage.output_tokens == 12
    greedy = await tiny.chat(HELLO, max_tokens=16)
    penalised = await tiny.chat(HELLO, max_tokens=16, extra={"repeat_penalty": 2.0})
    assert penalised.text != greedy.text


async def test_temperature_zero_is_greedy_regardless_of_seed(tiny: LocalProvider) -> None:
    first = await tiny.chat(HELLO, temperature=0.0, seed=1)
    second = await tiny.chat(HELLO, temperature=0.0, seed=999)
    assert first.text == second.text


async def test_bad_options_are_refused(tiny: LocalProvider) -> None:
    with pytest.raises(InvalidRequestError, match="repeat_penalty") as info:
        await tiny.chat(HELLO, extra={"frequency_penalty": 1.0})
    assert info.value.provider == "tiny"
    with pytest.raises(InvalidRequestError):
        await tiny.chat(HELLO, max_tokens=0)


async def test_capabilities_and_refusals(tiny: LocalProvider) -> None:
    caps = tiny.capabilities
    assert caps.streaming and not caps.vision and not caps.embeddings
    assert caps.tools == caps.structured_output == constrained_decoding("transformers")  # llguidance installed
    if not caps.tools:
        with pytest.raises(UnsupportedCapabilityError):
            await tiny.chat(HELLO, tools=[ToolDefinition(name="get_weather")])
    with pytest.raises(UnsupportedCapabilityError):
        await tiny.chat([Message.user("look", images=[ImagePart(data=b"\x89PNG")])])
    with pytest.raises(UnsupportedCapabilityError) as info:
        await tiny.embed("text")
    assert info.value.provider == "tiny"


async def test_tool_history_is_rendered_as_text(tiny: LocalProvider) -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})
    history = [
        Message.user("Weather in Paris?"),
        Message.assistant("Let me check.", tool_calls=[call]),
        Message.tool_result("call_1", {"temp": 21}),
    ]
    response = await tiny.chat(history, max_tokens=3)
    assert response.usage.output_tokens == 3
    engine = tiny.worker.engine
    assert engine is not None
    prompt = engine.template.render(history)
    assert "get_weather" in prompt and '{"temp": 21}' in prompt and "call_1" in prompt


async def test_too_long_prompt_is_a_context_length_error(tiny: LocalProvider) -> None:
    with pytest.raises(ContextLengthError) as info:
        await tiny.chat([Message.user("the quick brown fox " * 1200)])
    assert info.value.provider == "tiny"


async def test_registry_builds_instantly_and_closes_the_worker(tiny_model: Path) -> None:
    data = {
        "llm": {
            "providers": [
                {
                    "name": "tiny",
                    "type": "local",
                    "model_path": str(tiny_model),
                    "generation": {"max_tokens": 4, "temperature": 0.0},
                }
            ]
        }
    }
    async with Registry.from_dict(data) as registry:
        provider = registry.get("tiny")
        assert isinstance(provider, LocalProvider) and registry.get("tiny") is provider
        assert provider.worker.engine is None  # nothing loaded until the first request
        chunks = [chunk async for chunk in provider.chat_stream([Message.user("hi")])]
        assert sum(isinstance(c, UsageChunk) for c in chunks) == 1
        assert any(isinstance(c, ContentChunk) for c in chunks)
        thread = provider.worker.thread
    assert thread is not None and not thread.is_alive()
