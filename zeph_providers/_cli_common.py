"""What the `zeph-providers` commands share: opening/closing the registry, output writers, JSON and tables, logging.

Everything that reaches the terminal goes through `_err`/`_dumps` (redacted) or the log handler
(with the shared `RedactingFilter`), so no command can print a secret. Kept apart from `cli.py`,
which holds the parser and the commands. Standard library only at module level.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from zeph_providers.config import LlmConfig
    from zeph_providers.registry import Registry

log = logging.getLogger("zeph_providers.cli")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130



class _StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is at the time of the record (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)  # main() called again in the same process
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    from zeph_providers.redaction import RedactingFilter

    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    if verbosity > 0 or root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    if verbosity < 2:
        # Third-party chatter (httpx request lines, ...) only at -vv.
        for noisy in ("httpx", "httpcore", "openai", "anthropic", "urllib3", "filelock"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _out(text: str = "", *, stream: TextIO | None = None, end: str = "\n") -> None:
    target = stream or sys.stdout
    target.write(text + end)
    target.flush()


def _err(text: str) -> None:
    from zeph_providers.errors import redact

    _out(redact(text), stream=sys.stderr)


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _dumps(value: Any) -> str:
    from zeph_providers.errors import redact

    return redact(json.dumps(value, indent=2, default=_json_default))


def _short(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.extend("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
    return "\n".join(lines)


def _dim(text: str, stream: TextIO) -> str:
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty() and not os.environ.get("NO_COLOR"):
        return f"\x1b[2m{text}\x1b[0m"
    return text


def _config_path(args: argparse.Namespace) -> str | None:
    value = getattr(args, "config", None)
    return str(value) if value else None



def _open_registry(args: argparse.Namespace) -> Registry:
    from zeph_providers.registry import Registry

    registry = Registry.discover(_config_path(args))
    _register_known_secrets(registry.config)
    log.info("config: %s", registry.config.source)
    return registry



def _register_known_secrets(config: LlmConfig) -> None:
    """Teach the redactor every key the config points at, so no output can echo one."""
    from zeph_providers.errors import register_secret

    for provider in config.providers:
        inline = getattr(provider, "api_key", None)
        if inline is not None:
            register_secret(inline.get_secret_value())
        env = getattr(provider, "key_env", None)
        if isinstance(env, str) and env:
            register_secret(os.environ.get(env))



async def _close(registry: Registry) -> None:
    try:
        await registry.aclose()
    except Exception as exc:  # closing must not hide the command's own result
        from zeph_providers.errors import redact

        log.warning("closing the providers failed: %s", redact(f"{type(exc).__name__}: {exc}"))
