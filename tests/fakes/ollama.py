"""Ollama `/api/chat` wire shapes: NDJSON lines, content deltas and the final `"done": true` line."""

from __future__ import annotations

import json
from typing import Any

CREATED_AT = "2025-09-01T12:00:00.000000Z"


def line(payload: Any) -> bytes:
    """One NDJSON line: the JSON object and a newline."""
    return json.dumps(payload).encode() + b"\n"


def delta(model: str, content: str, *, created_at: str = CREATED_AT, **message: Any) -> dict[str, Any]:
    """A streamed chat chunk (`"done": false`) carrying `content` (and e.g. `thinking`, `tool_calls`)."""
    return {
        "model": model,
        "created_at": created_at,
        "message": {"role": "assistant", "content": content, **message},
        "done": False,
    }


def final(
    model: str,
    *,
    content: str = "",
    done_reason: str = "stop",
    created_at: str = CREATED_AT,
    **counts: Any,
) -> dict[str, Any]:
    """The last chat chunk (`"done": true`) with its `done_reason` and the given counts/durations."""
    return {
        "model": model,
        "created_at": created_at,
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": done_reason,
        **counts,
    }
