"""The response cache: exact-match (and optional semantic) replies replayed as streams (issue 14).

SEAM (lead): the implementation is the cache helper's. Entries live in a `StateStore`
(`zeph_providers.state`), so `[llm.state] backend = "redis"` shares them across processes.
"""

from __future__ import annotations

from zeph_providers.state import StateStore

__all__ = ["ResponseCache"]


class ResponseCache:
    def __init__(self, name: str, *, store: StateStore, ttl_s: float = 3600.0) -> None:
        self.name = name
        self.ttl_s = ttl_s
        self._store = store
