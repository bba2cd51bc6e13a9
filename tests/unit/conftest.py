"""Helpers shared by the unit tests."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

MOCK_CONFIG = """\
[llm]
default = "mock"
embedding = "mock"

[[llm.providers]]
name = "mock"
type = "mock"
responses = ["Hello from the mock provider."]
chunk_size = 4
embedding_dim = 8

[[llm.providers]]
name = "second"
type = "mock"
model = "mock-2"
responses = ["Second reply."]
"""


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a (dedented) TOML document to a temporary file and return its path."""

    def write(text: str, filename: str = "zeph.toml") -> Path:
        path = tmp_path / filename
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def mock_config_path(write_config: Callable[[str, str], Path]) -> Path:
    return write_config(MOCK_CONFIG, "mock.toml")
