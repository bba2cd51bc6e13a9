"""`zeph-providers serve`: the OpenAI/Anthropic-compatible gateway (zeph_providers.gateway) on uvicorn.

```
zeph-providers serve [--host 127.0.0.1] [--port 8000] [--shutdown-timeout 30] [--insecure-no-auth] [--access-log]
```

Decisions: without `[[llm.gateway.keys]]` the gateway serves loopback clients only, and a
non-loopback `--host` is refused unless `--insecure-no-auth` says that is meant. SIGTERM/SIGINT
stop accepting connections, let in-flight requests (streams included) finish within
`--shutdown-timeout` seconds, then close the registry. Uvicorn's access log (off by default) shows
the method, path and status, never a header. Once listening, one line goes to stderr:
`zeph-providers: serving on http://HOST:PORT` (with the real port for `--port 0`).
Uvicorn runs with `proxy_headers=False`: the client address is the socket's, never rewritten from
`X-Forwarded-For` (which would let any client pass the loopback-only check). The signal marks the
gateway as shutting down at once (`/readyz` 503), before uvicorn's graceful wait.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

from zeph_providers._cli_common import number_type

__all__ = ["add_serve_parser"]


_port = number_type(int, "a port number", lambda v: 0 <= v <= 65535, "between 0 and 65535")
_seconds = number_type(float, "a number of seconds", lambda v: v >= 0, ">= 0")


def add_serve_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `serve` on the CLI's subcommands."""
    p_serve = commands.add_parser(
        "serve", parents=[common], help="serve the providers over the OpenAI and Anthropic APIs"
    )
    p_serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p_serve.add_argument("--port", type=_port, default=8000, help="port to bind (default: 8000; 0 picks a free one)")
    p_serve.add_argument(
        "--shutdown-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECS",
        help="seconds in-flight requests get to finish on SIGTERM/SIGINT (default: 30)",
    )
    p_serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve non-loopback clients without keys (no [[llm.gateway.keys]] configured)",
    )
    p_serve.add_argument("--access-log", action="store_true", help="log each request (method, path, status)")
    p_serve.set_defaults(handler=_cmd_serve)


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from zeph_providers._cli_common import EXIT_OK, _open_registry
    from zeph_providers.errors import ConfigError
    from zeph_providers.gateway import GatewaySettings, create_app

    registry = _open_registry(args)
    settings = GatewaySettings.from_config(
        registry.config.gateway, allow_remote=args.insecure_no_auth, shutdown_timeout=args.shutdown_timeout
    )
    if not settings.keys and not args.insecure_no_auth and not _is_loopback_host(args.host):
        raise ConfigError(
            f"refusing to serve {args.host!r} without keys: add [[llm.gateway.keys]] to the config"
            " (docs/gateway.md), bind a loopback address, or pass --insecure-no-auth",
            source=registry.config.source,
        )
    app = create_app(registry, settings=settings)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,  # our logging set-up (-v) stays in charge
        access_log=args.access_log,
        timeout_graceful_shutdown=max(1, round(args.shutdown_timeout)),
        server_header=False,
        proxy_headers=False,  # request.client is the socket's peer: no forged X-Forwarded-For
        lifespan="on",
    )
    _announcing_server(config, app.state.gateway).run()
    return EXIT_OK


def _announcing_server(config: Any, ctx: Any) -> Any:
    """uvicorn's Server, printing the address it listens on once it does, and marking `ctx` (the
    app's `GatewayContext`) as shutting down as soon as a signal asks it to stop."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            ctx.shutting_down = True
            super().handle_exit(sig, frame)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            for server in self.servers:
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    shown = f"[{host}]" if ":" in host else host
                    sys.stderr.write(f"zeph-providers: serving on http://{shown}:{port}\n")
                    sys.stderr.flush()

    return Server(config)


def remote_status(args: argparse.Namespace) -> int:
    """`zeph-providers status --url URL [--key-env VAR] [--json]`: a running gateway's
    `/v1/zeph/status` (per-provider usage and cost, the total, router members' breakers)."""
    import json
    import os

    import httpx

    from zeph_providers._cli_common import EXIT_OK, _dumps, _out
    from zeph_providers.errors import ConfigError, ProviderUnavailableError, register_secret

    headers: dict[str, str] = {}
    if args.key_env:
        key = os.environ.get(args.key_env)
        if not key:
            raise ConfigError(f"--key-env {args.key_env}: the variable is not set")
        register_secret(key)
        headers["authorization"] = f"Bearer {key}"
    url = args.url.rstrip("/") + "/v1/zeph/status"
    try:
        response = httpx.get(url, headers=headers, timeout=30.0)
    except httpx.HTTPError as exc:
        raise ProviderUnavailableError(f"cannot reach the gateway at {args.url}: {exc}", provider="gateway") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        detail = body.get("error", {}).get("message") if isinstance(body, dict) else response.text[:200]
        raise ProviderUnavailableError(
            f"the gateway answered HTTP {response.status_code}: {detail}", provider="gateway"
        )
    if args.json:
        _out(_dumps(body))
        return EXIT_OK
    lines = [
        f"gateway {args.url}: total cost ${body.get('total_cost_usd', 0.0):.6f}, in flight {body.get('in_flight', 0)}"
    ]
    for name, totals in sorted((body.get("providers") or {}).items()):
        lines.append(
            f"{name}: {totals.get('calls', 0)} calls ({totals.get('failed', 0)} failed), "
            f"{totals.get('input_tokens', 0)} in / {totals.get('output_tokens', 0)} out tokens, "
            f"${totals.get('cost_usd', 0.0):.6f}"
        )
    for router, members in sorted((body.get("routers") or {}).items()):
        lines.append(f"router {router}:")
        for member, state in sorted(members.items()):
            lines.append(f"    {member}: {json.dumps(state)}")
    _out("\n".join(lines))
    return EXIT_OK
