"""A router in front of one real member (the Ollama backend over its loopback wire server).

The router must be transparent: the same scripted replies come out the same way as from the member
itself. Where a router differs by design the contract allows it: `resp.provider` names the member
that answered (`answers_as`), and a member's retryable error that ends the call arrives wrapped in
`AllProvidersFailedError` (the tests unwrap a single member error).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.conformance.harness_ollama import HARNESS as OLLAMA
from tests.conformance.scenarios import Scenario, Served
from zeph_providers.backends.router import RouterProvider
from zeph_providers.protocol import LlmProvider


class RouterHarness:
    name = "router"
    supports_tools = True
    supports_scripted_errors = True
    supports_retries = True
    answers_as = "ollama-conf"

    @asynccontextmanager
    async def provider(
        self, scenarios: list[Scenario], *, max_retries: int = 0
    ) -> AsyncIterator[tuple[LlmProvider, Served]]:
        async with OLLAMA.provider(scenarios, max_retries=max_retries) as (member, served):
            router = RouterProvider("router-conf", [member.name], {member.name: member}.__getitem__, timeout_secs=20)
            try:
                yield router, served
            finally:
                await router.aclose()


HARNESS = RouterHarness()
