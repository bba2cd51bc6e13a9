"""Smoke test for bench/bench_gateway.py: `--quick` runs end to end (upstream, gateway, workers) and
reports every gateway row against its direct peer; a missing LiteLLM proxy is reported, not fatal.
Never asserts on timings: the numbers of a --quick run mean nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_bench_gateway_quick(tmp_path: Path) -> None:
    out = tmp_path / "gateway.json"
    env = {**os.environ, "BENCH_LITELLM": str(tmp_path / "no-litellm")}  # the peer-missing path, always
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_gateway.py"), "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["benchmark"] == "gateway" and data["quick"] is True
    metrics = {row["metric"] for row in data["rows"]}
    assert metrics == {
        f"gateway {api} {label}" for api in ("openai", "anthropic") for label in ("chat c64", "stream c64")
    }
    for row in data["rows"]:
        assert row["ours"] > 0 and row["peer_value"] > 0 and row["ratio"] is not None
    assert "litellm-proxy" in data["unavailable"]
    assert "peer unavailable: litellm-proxy" in proc.stdout
