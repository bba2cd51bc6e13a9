"""Keep secrets out of log output, the library's own and that of httpx, httpcore, openai, anthropic.

With DEBUG logging on, httpcore logs response headers and the SDKs log request options; a server
that echoes the key, or a header that carries it, would put it in your logs. Two tools:

- `install_log_redaction()` wraps the process's log record factory once, so every record created
  afterwards has each registered secret (see `zeph_providers.errors.register_secret`) replaced by
  `[REDACTED]`, whatever logger made it (child loggers such as `httpcore.http11` included). The
  library calls it itself the first time it learns a secret; calling it again does nothing.
- `RedactingFilter` does the same as a `logging.Filter`. It never drops a record and never raises,
  so it is safe on any handler or on the root logger::

      handler = logging.StreamHandler()
      handler.addFilter(RedactingFilter())
      logging.getLogger().addHandler(handler)

  (A filter on a logger sees only records made by that exact logger, not its children: put it on
  a handler to cover everything the handler writes.)
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

__all__ = ["RedactingFilter", "install_log_redaction", "redact_record"]

_lock = threading.Lock()
_installed = False


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Scrub one record in place: message and arguments, exception text, stack info."""
    from zeph_providers.errors import _by_length, redact, redact_exception

    if not _by_length:
        return record
    try:
        message = record.getMessage()
        safe = redact(message)
        if safe != message:
            record.msg = safe
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            redact_exception(record.exc_info[1])
            if not record.exc_text:
                record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
    except Exception:  # a record whose args do not format: leave it to the handler's own error path
        pass
    return record


class RedactingFilter(logging.Filter):
    """A filter that scrubs every registered secret from a record and always lets it through."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install_log_redaction() -> None:
    """Scrub every log record the process creates from now on (idempotent, thread-safe)."""
    global _installed
    if _installed:
        return
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return redact_record(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed = True
