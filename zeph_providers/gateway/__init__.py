"""`zeph-providers serve`: an OpenAI- and Anthropic-compatible HTTP gateway over a `Registry`.

```python
from zeph_providers import Registry
from zeph_providers.gateway import create_app

app = create_app(Registry.from_toml("zeph.toml"))   # any ASGI server; `zeph-providers serve` runs uvicorn
```

Starlette is imported only when `create_app` (or `GatewaySettings`) is first used: importing
`zeph_providers` or this package loads nothing of the web stack. Layout: `_settings` (the
settings and the keys, no Starlette), `_errors` (typed gateway errors and the status of every
`LlmError`), `_context` (`GatewayContext`: auth, limits, body reading, in-flight tracking),
`_openai` / `_anthropic` (each API's routes), `app` (`create_app`: routes, health, status,
lifespan). See docs/gateway.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zeph_providers.gateway._settings import GatewaySettings
    from zeph_providers.gateway.app import create_app

__all__ = ["GatewaySettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from zeph_providers.gateway.app import create_app

        return create_app
    if name == "GatewaySettings":
        from zeph_providers.gateway._settings import GatewaySettings

        return GatewaySettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
