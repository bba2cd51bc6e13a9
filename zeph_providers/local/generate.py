"""Deprecated: this module was split (one release of compatibility).

The engine protocol, `GenerationParams`, results and the token sink are in `local.engine`;
`IncrementalDecoder`/`StopMatcher` in `local.decoding`; the transformers engine in `local.transformers_engine`.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = {
    "GenerationParams": "zeph_providers.local.engine",
    "GenerationResult": "zeph_providers.local.engine",
    "TokenSink": "zeph_providers.local.engine",
    "InferenceEngine": "zeph_providers.local.engine",
    "IncrementalDecoder": "zeph_providers.local.decoding",
    "StopMatcher": "zeph_providers.local.decoding",
    "Engine": "zeph_providers.local.transformers_engine",
    "TransformersEngine": "zeph_providers.local.transformers_engine",
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
