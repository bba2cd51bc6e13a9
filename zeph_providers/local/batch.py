"""Deprecated: the transformers engine's continuous batching moved to `local.transformers_batch`."""

from __future__ import annotations

from zeph_providers._compat import moved_names

_MOVED = {
    "BatchJob": "zeph_providers.local.transformers_batch",
    "Finish": "zeph_providers.local.transformers_batch",
    "batchable": "zeph_providers.local.transformers_batch",
    "run_batch": "zeph_providers.local.transformers_batch",
}

__all__: list[str] = []


__getattr__ = moved_names(__name__, _MOVED)
