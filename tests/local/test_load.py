"""Load through the local worker: 200 concurrent callers through a queue of 4 (tiny model).

Every caller gets exactly its own complete answer (greedy output is deterministic, so each is
compared with the same prompt's solo answer) or a typed `ProviderTimeoutError`; nothing is lost,
mixed or duplicated, and the worker thread is gone after `aclose()`.
"""

from __future__ import annotations

import asyncio
import threading

from tests.local.conftest import ProviderFactory
from zeph_providers.errors import ProviderTimeoutError
from zeph_providers.types import ChatResponse, Message

CALLERS = 200
DISTINCT = 20
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
]
PROMPTS = [" ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 6)) for i in range(DISTINCT)] * (CALLERS // DISTINCT)


async def test_200_callers_through_a_queue_of_4(make_provider: ProviderFactory) -> None:
    threads_before = {t.ident for t in threading.enumerate()}
    # A timeout far beyond the whole run's work: every caller must be served, on a machine of any speed.
    provider = make_provider(queue_capacity=4, max_batch_size=4, inference_timeout_secs=600)
    solo = {p: (await provider.chat([Message.user(p)], max_tokens=8, temperature=0)).text for p in set(PROMPTS)}
    assert len(set(solo.values())) >= 5, "the prompts give distinguishable answers, so a mix-up would show"

    async def call(prompt: str) -> ChatResponse | ProviderTimeoutError:
        try:
            return await provider.chat([Message.user(prompt)], max_tokens=8, temperature=0)
        except ProviderTimeoutError as exc:
            return exc

    results = await asyncio.wait_for(asyncio.gather(*(call(p) for p in PROMPTS)), 600)

    answered = [(p, r) for p, r in zip(PROMPTS, results, strict=True) if isinstance(r, ChatResponse)]
    timed_out = [r for r in results if isinstance(r, ProviderTimeoutError)]
    assert len(answered) + len(timed_out) == CALLERS, "every caller got an answer or a typed error"
    assert len(answered) == CALLERS, f"only {len(answered)} of {CALLERS} callers were served: {timed_out[:1]}"
    for prompt, resp in answered:
        assert resp.text == solo[prompt], "an answer reached the wrong caller or was mixed"
        assert resp.usage.output_tokens > 0 and resp.usage.input_tokens > 0

    await provider.aclose()
    leftover = [t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
    assert not [t for t in leftover if t.name.startswith("zeph-")], leftover
