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
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

__all__ = ["add_serve_parser"]


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


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
        lifespan="on",
    )
    _announcing_server(config).run()
    return EXIT_OK


def _announcing_server(config: Any) -> Any:
    """uvicorn's Server, printing the address it listens on once it does."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            for server in self.servers:
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    shown = f"[{host}]" if ":" in host else host
                    sys.stderr.write(f"zeph-providers: serving on http://{shown}:{port}\n")
                    sys.stderr.flush()

    return Server(config)
