"""Moved to `tests.fakes.fault_server`; this path re-exports it so old imports keep working."""

from tests.fakes.fault_server import *  # noqa: F403
from tests.fakes.fault_server import (
    CHAOS_MODES,
    FaultServer,
    Seen,
    Step,
    chaos_fault,
    echo_text,
    fault_server,
    parse_plan,
)

__all__ = ["CHAOS_MODES", "FaultServer", "Seen", "Step", "chaos_fault", "echo_text", "fault_server", "parse_plan"]
