"""The small value types of the `StateStore` protocol (shared by every store)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["BreakerAdmission", "BreakerVerdict", "Bucket"]


@dataclass(frozen=True)
class Bucket:
    """A token bucket: `capacity` units, refilled continuously at `per_second` units a second."""

    key: str
    capacity: float
    per_second: float


BreakerVerdict = Literal["normal", "probe", "open"]


@dataclass(frozen=True)
class BreakerAdmission:
    """`breaker_admit`'s answer: let a normal call through, let the one probe through, or refuse
    (`retry_in` seconds of cooldown left; 0 when another replica holds the probe)."""

    verdict: BreakerVerdict
    retry_in: float = 0.0
    failures: int = 0
    """The shared consecutive-failure count (a success only writes when it is not 0)."""
