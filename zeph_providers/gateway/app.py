"""`create_app(registry)`: the gateway as a Starlette app (routes, health, status, lifespan).

Decisions:
- Starlette on uvicorn: a thin ASGI layer (no validation framework: the API modules translate
  JSON to our types themselves, so every unknown field can be named), streaming responses whose
  cancellation on disconnect reaches our `ChatStream.aclose()`.
- Shutdown (the lifespan's end, after uvicorn stops accepting and its graceful timeout): wait up
  to `settings.shutdown_timeout` for in-flight requests (`GatewayContext.track`), then close the
  registry (unless `close_registry=False`, for apps that own their registry).
- `/healthz` (alive) and `/readyz` (the registry has providers and is not shutting down) need no
  key, so they name nothing (no provider names: the config is not shown to unknown clients);
  `/v1/zeph/status` (usage, cost totals, router breakers) is authorised like the APIs, and a key
  limited to some providers sees only those (their usage, their cost total, those routers).
- `shutting_down` is set when shutdown begins: by `serve` on SIGTERM/SIGINT (before uvicorn's
  graceful wait), else at the lifespan's end.
- CORS only when `cors_origins` is set.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from zeph_providers.gateway import _openai
from zeph_providers.gateway._context import GatewayContext
from zeph_providers.gateway._settings import GatewaySettings

if TYPE_CHECKING:
    from zeph_providers.registry import Registry

__all__ = ["create_app"]

log = logging.getLogger("zeph_providers.gateway")


def create_app(registry: Registry, *, settings: GatewaySettings | None = None) -> Starlette:
    """The gateway over `registry`: OpenAI and Anthropic APIs, health and status routes.

    `settings` None reads `[llm.gateway]` from the registry's config (keys from the environment).
    """
    if settings is None:
        settings = GatewaySettings.from_config(registry.config.gateway)
    ctx = GatewayContext(registry, settings)

    routes: list[BaseRoute] = [
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", _readyz(ctx), methods=["GET"]),
        Route("/v1/zeph/status", _status(ctx), methods=["GET"]),
    ]
    routes.extend(_openai.routes(ctx))
    routes.extend(_anthropic_routes(ctx))

    middleware: list[Middleware] = []
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["authorization", "x-api-key", "content-type", "anthropic-version"],
            )
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        finished = await ctx.drain(settings.shutdown_timeout)
        if not finished:
            log.warning(
                "gateway shutdown: %d request(s) still in flight after %.0f s", ctx.in_flight, settings.shutdown_timeout
            )
        if settings.close_registry:
            await registry.aclose()
        log.info("gateway: shut down (%s)", "registry closed" if settings.close_registry else "registry left open")

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.gateway = ctx
    return app


def _anthropic_routes(ctx: GatewayContext) -> list[BaseRoute]:
    try:
        from zeph_providers.gateway import _anthropic
    except ImportError:  # the Anthropic API module is optional while it is being built
        return []
    return list(_anthropic.routes(ctx))


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _readyz(ctx: GatewayContext) -> Any:
    async def readyz(request: Request) -> Response:
        if ctx.shutting_down:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        if not ctx.registry.names():
            return JSONResponse({"status": "no providers configured"}, status_code=503)
        return JSONResponse({"status": "ready"})

    return readyz


def _status(ctx: GatewayContext) -> Any:
    async def status(request: Request) -> Response:
        from zeph_providers.gateway._openai import error_response

        try:
            key = await ctx.authorize(request, None)
        except Exception as exc:
            return error_response(exc)
        allowed = key.key.providers if key.key is not None else None
        return JSONResponse(gateway_status(ctx, allowed))

    return status


def gateway_status(ctx: GatewayContext, allowed: Collection[str] | None = None) -> dict[str, Any]:
    """Usage and cost totals per provider, the registry total, and each built router's members;
    with `allowed`, only those providers (and the total over them)."""
    registry = ctx.registry
    routers: dict[str, Any] = {}
    for name, provider in registry.built().items():
        if allowed is not None and name not in allowed:
            continue
        member_status = getattr(provider, "status", None)
        if callable(member_status) and getattr(provider, "backend", None) == "router":
            try:
                routers[name] = member_status()
            except Exception:  # a status must never fail the endpoint
                log.warning("router %r: status() failed", name, exc_info=True)
    usage = {name: totals for name, totals in registry.usage().items() if allowed is None or name in allowed}
    total = registry.total_cost() if allowed is None else sum(totals.cost_usd for totals in usage.values())
    return {
        "providers": {name: totals.as_dict() for name, totals in usage.items()},
        "total_cost_usd": total,
        "routers": routers,
        "in_flight": ctx.in_flight,
    }
