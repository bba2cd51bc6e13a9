"""Old import paths, kept for one release: a module-level `__getattr__` that warns and forwards.

Every module that lost names in the issue-9 split (`protocol`, `local.generate`, `local.batch`)
builds its `__getattr__` here, so the warning text and the lookup live once.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved_names(module: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """A `__getattr__` for `module`: each name in `moved` imports from its new home, with a DeprecationWarning."""

    def __getattr__(name: str) -> Any:
        home = moved.get(name)
        if home is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"{module}.{name} moved to {home}.{name}; import it from there; "
            "the old path goes away in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), name)

    return __getattr__
