"""Deprecated: the transformers engine's continuous batching moved to `local.transformers_batch`."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = {
    "BatchJob": "zeph_providers.local.transformers_batch",
    "Finish": "zeph_providers.local.transformers_batch",
    "batchable": "zeph_providers.local.transformers_batch",
    "run_batch": "zeph_providers.local.transformers_batch",
}

__all__: list[str] = []


def __getattr__(name: str) -> Any:
    target = _MOVED.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"{__name__}.{name} moved to {target}.{name}; import it from there",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(target), name)
