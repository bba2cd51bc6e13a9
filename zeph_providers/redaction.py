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

from zeph_providers._secrets import install_log_redaction, redact_record

__all__ = ["RedactingFilter", "install_log_redaction", "redact_record"]


class RedactingFilter(logging.Filter):
    """A filter that scrubs every registered secret from a record and always lets it through."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True
