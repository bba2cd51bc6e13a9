"""Fixtures for the local backend: a tiny random-weight Llama built in milliseconds (no download)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from zeph_providers import Registry
from zeph_providers.config import CandleConfig
from zeph_providers.local.loader import load_causal_lm
from zeph_providers.local.provider import LocalProvider

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you today? I am fine, thank you.",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "héllo wörld, café crème, naïve façade, 日本語のテキスト, 🙂 🚀 emoji",
    "def main():\n    print('hello')\n",
    "system user assistant tool result call weather sunny rain",
] * 20


def build_tiny_model(folder: Path, *, eos_only: bool = False) -> Path:
    """A 2-layer, hidden-64 Llama with a byte-level BPE tokenizer and a ChatML template.

    `eos_only=True` zeroes the final norm so every logit is 0 and greedy decoding picks token 0,
    which is `<|im_end|>` (the eos): the model answers with an immediate end of turn.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|im_end|>", "<|im_start|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    fast: Any = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")  # type: ignore[no-untyped-call]
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(str(folder))
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    if eos_only:
        with torch.no_grad():
            model.model.norm.weight.zero_()
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def eos_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-eos"), eos_only=True)


def tiny_config(folder: Path, **overrides: Any) -> CandleConfig:
    """A config for the tiny model: greedy, 16 tokens, no repeat penalty, short timeouts."""
    generation = {"max_tokens": 16, "temperature": 0.0, "repeat_penalty": 1.0, "seed": 42}
    generation.update(overrides.pop("generation", {}))
    data: dict[str, Any] = {
        "name": "tiny",
        "type": "candle",
        "model_path": str(folder),
        "inference_timeout_secs": 30.0,
        "queue_capacity": 4,
        "generation": generation,
    }
    data.update(overrides)
    return CandleConfig.model_validate(data)


ProviderFactory = Callable[..., LocalProvider]


@pytest.fixture
async def make_provider(tiny_model: Path) -> AsyncIterator[ProviderFactory]:
    """Builds tiny-model providers (closing them at the end of the test)."""
    built: list[LocalProvider] = []

    def factory(folder: Path | None = None, **overrides: Any) -> LocalProvider:
        provider = LocalProvider(tiny_config(folder or tiny_model, **overrides))
        built.append(provider)
        return provider

    yield factory
    for provider in built:
        await provider.aclose()


@pytest.fixture
async def tiny(make_provider: ProviderFactory) -> LocalProvider:
    return make_provider()


@pytest.fixture(autouse=True)
def _quiet_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Path]:
    """A per-session ZEPH_PROVIDERS_CACHE, filled by converting the GGUF once (~20-30 s)."""
    root = tmp_path_factory.mktemp("zeph-cache")
    previous = os.environ.get("ZEPH_PROVIDERS_CACHE")
    os.environ["ZEPH_PROVIDERS_CACHE"] = str(root)
    try:
        registry = Registry.from_default()
        config = registry.config.provider("local")
        loaded = load_causal_lm(config)  # type: ignore[arg-type]
        assert loaded.converted and not loaded.from_cache
        del loaded
        yield root
    finally:
        if previous is None:
            os.environ.pop("ZEPH_PROVIDERS_CACHE", None)
        else:
            os.environ["ZEPH_PROVIDERS_CACHE"] = previous
