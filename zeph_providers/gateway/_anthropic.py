"""The Anthropic Messages API (`POST /v1/messages`); built on the wt-anthropic branch."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from zeph_providers.gateway._context import GatewayContext


def routes(ctx: GatewayContext) -> list[BaseRoute]:
    return []
