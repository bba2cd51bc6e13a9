"""The gateway's settings and client keys, built from `[llm.gateway]` (no Starlette here).

Decisions:
- A key is kept only as its SHA-256 digest; a presented key is hashed and compared against every
  digest with `hmac.compare_digest` (no early exit that would time which key matched). A `key_env`
  key is read once, when the settings are built, and registered as a secret so no error or log
  line can print it.
- No keys configured: the gateway serves loopback clients only (`allow_remote=False`), and
  `serve` refuses a non-loopback bind unless keys are set or `--insecure-no-auth` is given.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

from zeph_providers.config.models import GatewayConfig, GatewayKeyConfig
from zeph_providers.errors import ConfigError, register_secret

__all__ = ["GatewayKey", "GatewaySettings", "hash_key"]


def hash_key(key: str) -> str:
    """The SHA-256 of a key, as the hex digits `key_sha256` takes."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class GatewayKey:
    """One client key: its name, digest, the providers it may use, and its limits."""

    name: str
    sha256: str = field(repr=False)
    providers: frozenset[str] | None = None
    """None: every provider."""
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None


@dataclass(frozen=True)
class GatewaySettings:
    """What the gateway accepts; `from_config` reads `[llm.gateway]`."""

    keys: tuple[GatewayKey, ...] = ()
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest request body (413 beyond)."""
    max_tokens: int = 65536
    """Largest `max_tokens` a request may ask for (400 beyond)."""
    cors_origins: tuple[str, ...] = ()
    """CORS origins; empty: CORS off."""
    allow_remote: bool = False
    """Serve non-loopback clients without keys (`--insecure-no-auth`); with keys, every client
    must present one anyway."""
    shutdown_timeout: float = 30.0
    """Seconds in-flight requests get to finish once shutdown starts."""
    close_registry: bool = True
    """Close the registry when the app shuts down (False when the app is mounted in a server that
    owns the registry)."""

    @classmethod
    def from_config(cls, config: GatewayConfig | None, **overrides: object) -> GatewaySettings:
        """Settings from `[llm.gateway]` (None: the defaults); `key_env` keys are read now."""
        base = cls(**overrides)  # type: ignore[arg-type]
        if config is None:
            return base
        keys = tuple(_key(entry) for entry in config.keys)
        return cls(
            keys=keys,
            max_body_bytes=config.max_body_bytes,
            max_tokens=config.max_tokens,
            cors_origins=tuple(config.cors_origins),
            allow_remote=base.allow_remote,
            shutdown_timeout=base.shutdown_timeout,
            close_registry=base.close_registry,
        )

    def match(self, presented: str) -> GatewayKey | None:
        """The key whose digest matches `presented`, comparing against every key."""
        digest = hash_key(presented)
        found: GatewayKey | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.sha256.lower()):
                found = key
        return found


def _key(entry: GatewayKeyConfig) -> GatewayKey:
    if entry.key_env is not None:
        value = os.environ.get(entry.key_env)
        if not value:
            raise ConfigError(
                f"gateway key {entry.name!r} reads its key from ${entry.key_env}, which is not set;"
                " set it, or give the key's key_sha256 instead"
            )
        register_secret(value)
        digest = hash_key(value)
    else:
        assert entry.key_sha256 is not None  # the config model requires one of the two
        digest = entry.key_sha256.lower()
    return GatewayKey(
        name=entry.name,
        sha256=digest,
        providers=None if entry.providers is None else frozenset(entry.providers),
        rpm=entry.rpm,
        tpm=entry.tpm,
        budget_usd=entry.budget_usd,
    )
