"""Deprecated: this module was split (one release of compatibility).

The engine protocol, `GenerationParams`, results and the token sink are in `local.engine`;
`IncrementalDecoder`/`StopMatcher` in `local.decoding`; the transformers engine in `local.transformers_engine`.
"""

from __future__ import annotations

from zeph_providers._compat import moved_names

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


__getattr__ = moved_names(__name__, _MOVED)
