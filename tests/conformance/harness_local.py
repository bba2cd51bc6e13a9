"""The local backend (in-process transformers) on the tiny random-weight Llama of tests/local.

A real model cannot be scripted: it answers with its own (gibberish, greedy and deterministic)
tokens. So `scripts_replies` is False and the contract tests check what any real model must give:
text in several stream pieces, usage counted once, `length` at `max_tokens`, `stream.response ==
chat()` for the same prompt, attempts, a clean early close. It has no HTTP layer, no retries and
the tiny model has no tools, so those tests skip.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.conformance.scenarios import Scenario, Served
from tests.local.conftest import build_tiny_model, tiny_config
from zeph_providers.local.provider import LocalProvider
from zeph_providers.protocol import LlmProvider


@functools.cache
def _tiny_model() -> Path:
    """Built once per test session (well under a second once torch is imported); no download."""
    return build_tiny_model(Path(tempfile.mkdtemp(prefix="conformance-tiny-")))


class LocalHarness:
    name = "local"
    supports_tools = False
    supports_scripted_errors = False
    supports_retries = False
    scripts_replies = False

    @asynccontextmanager
    async def provider(
        self, scenarios: list[Scenario], *, max_retries: int = 0
    ) -> AsyncIterator[tuple[LlmProvider, Served]]:
        provider = LocalProvider(tiny_config(_tiny_model(), name="local-conf"))
        served = Served()
        try:
            yield provider, served
        finally:
            await provider.aclose()


HARNESS = LocalHarness()
