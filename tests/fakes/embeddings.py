"""Deterministic embeddings: the same text always maps to the same unit-length vector."""

from __future__ import annotations

import hashlib
import math


def vector(text: str, dim: int = 8) -> list[float]:
    """A unit-length vector of `dim` floats derived from the SHA-256 of `text` (any `dim`)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    raw = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(dim)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]
