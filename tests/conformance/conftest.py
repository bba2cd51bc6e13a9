"""Collects every `harness_*.py` module here; each test runs once per harness."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

_HERE = Path(__file__).parent
HARNESS_MODULES = sorted(p.stem for p in _HERE.glob("harness_*.py"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "harness" in metafunc.fixturenames:
        harnesses = []
        for module_name in HARNESS_MODULES:
            module = importlib.import_module(f"tests.conformance.{module_name}")
            harnesses.append(pytest.param(module.HARNESS, id=module.HARNESS.name))
        metafunc.parametrize("harness", harnesses)
