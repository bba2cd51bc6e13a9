"""Backend wire tests."""

HANG_GUARD_SECS = 120.0
"""Outer limit that turns a hang (a deadline ignored) into a test failure. It is far above any
deadline under test and bounds no speed: how fast things are is measured in bench/."""
