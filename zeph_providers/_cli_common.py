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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from zeph_providers.config import LlmConfig, ProviderConfigBase
    from zeph_providers.errors import LlmError
    from zeph_providers.registry import Registry

log = logging.getLogger("zeph_providers.cli")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _UsageError(Exception):
    """A mistake in how the command was called (exit 2)."""


class _StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is at the time of the record (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def number_type(
    convert: Callable[[str], Any], what: str, valid: Callable[[Any], bool], rule: str
) -> Callable[[str], Any]:
    """An argparse `type=`: `convert(text)` (else "expected WHAT"), which `valid` must accept (else
    "must be RULE"). One definition for every numeric flag of the CLI."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not valid(value):
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            raise argparse.ArgumentTypeError(f"must be {rule}, got {shown}")
        return value

    return parse


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


# ----- errors that say more ---------------------------------------------------------------

# The SDKs' own defaults, named here because importing the backend modules would import the SDKs.
_DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "claude": "https://api.anthropic.com"}


def _safe_url(url: str) -> str:
    """`url` without userinfo or query values (config validation refuses them; this is the second fence)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    from zeph_providers.errors import redact

    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    query = urlencode([(k, "...") for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe=".")
    return redact(urlunsplit((parts.scheme, host, parts.path, query, "")))


def _provider_url(config: ProviderConfigBase | None) -> str | None:
    if config is None:
        return None
    url = getattr(config, "base_url", None) or _DEFAULT_URLS.get(config.type)
    return _safe_url(url) if isinstance(url, str) and url else None


def _explain(exc: LlmError, registry: Registry | None) -> str:
    """The error line: a connection failure names the URL tried; an unknown name gets "did you mean"."""
    import difflib

    from zeph_providers.errors import ProviderNotFoundError, ProviderTimeoutError, ProviderUnavailableError

    text = str(exc)
    if isinstance(exc, ProviderNotFoundError):
        close = difflib.get_close_matches(exc.name, exc.available, n=1, cutoff=0.5)
        if close:
            text += f" (did you mean {close[0]!r}?)"
        return text
    if registry is not None and isinstance(exc, ProviderUnavailableError | ProviderTimeoutError) and exc.provider:
        url = _provider_url(registry.config.provider(exc.provider))
        if url and url not in text:
            text += f" (tried {url})"
    return text


# ----- progress ---------------------------------------------------------------------------


class _Spinner:
    """A spinner on stderr while something is under way, on a terminal only; `stop()` erases it.

    It runs in its own thread (a local model loads in a worker thread, a remote call on the event
    loop: neither may block it). `stop()` waits for the thread, so the caller's next output never
    races its erasing of the line. Nothing shows for what finishes within 0.3 s. While it runs,
    `sys.stderr` is a thin wrapper that erases the spinner's line before anything else is written
    (the local worker prints its own "loading ..." / "ready in ..." notes on a terminal), so the
    lines never run together.
    """

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self._stream = stream or sys.stderr
        self._done = threading.Event()
        self._lock = threading.RLock()
        self._shown = False
        self._line_open = False  # someone else's line is unfinished: do not draw over it
        self._thread: threading.Thread | None = None
        self._replaced: TextIO | None = None
        isatty = getattr(self._stream, "isatty", None)
        if label and callable(isatty) and isatty():
            if stream is None:
                self._replaced = sys.stderr
                sys.stderr = _AroundSpinner(self, self._stream)
            self._thread = threading.Thread(target=self._spin, name="zeph-cli-progress", daemon=True)
            self._thread.start()

    def _spin(self) -> None:
        frames = "|/-\\"
        tick = 0
        start = time.monotonic()
        while not self._done.wait(0.1 if tick else 0.3):
            elapsed = time.monotonic() - start
            with self._lock:
                if self._line_open:
                    continue
                self._stream.write(f"\r{frames[tick % len(frames)]} {self.label} ({elapsed:.0f} s)\x1b[K")
                self._stream.flush()
                self._shown = True
            tick += 1
        self.erase()

    def erase(self) -> None:
        with self._lock:
            if self._shown:
                self._stream.write("\r\x1b[K")
                self._stream.flush()
                self._shown = False

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._replaced is not None:
            sys.stderr = self._replaced
            self._replaced = None


class _AroundSpinner:
    """`sys.stderr` while a spinner runs: erases the spinner's line, then writes."""

    def __init__(self, spinner: _Spinner, stream: TextIO) -> None:
        self._spinner = spinner
        self._stream = stream

    def write(self, text: str) -> int:
        spinner = self._spinner
        with spinner._lock:
            spinner.erase()
            if text:
                spinner._line_open = not text.endswith("\n")
            return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def _progress(label: str) -> Iterator[_Spinner]:
    spinner = _Spinner(label)
    try:
        yield spinner
    finally:
        spinner.stop()
