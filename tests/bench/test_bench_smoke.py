"""Smoke test for the benchmark suite: `bench/run_all.py --quick` runs every script on tiny inputs.

It checks that the suite runs and writes its report, and that missing peers (CI installs none)
are skipped, not fatal. It never asserts on timings: the numbers of a --quick run mean nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
SCRIPTS = ("bench_import", "bench_remote", "bench_local", "bench_embed")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run_all.py"),
            "--quick",
            "--doc",
            str(out / "benchmarks.md"),
            "--img-dir",
            str(out / "img"),
            "--json",
            str(out / "all.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc, out


def test_run_all_quick_exits_zero(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, _ = quick_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_every_benchmark_reports(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = quick_run
    data = json.loads((out / "all.json").read_text())
    assert data["failures"] == {}
    names = {result["benchmark"] for result in data["results"]}
    assert names == {"import", "remote", "local", "embed"}
    for result in data["results"]:
        assert result["quick"] is True
        for row in result["rows"]:
            assert row["ours"] is None or row["ours"] > 0
            if row["peer_value"] is None:
                assert row["ratio"] is None


def test_remote_benchmark_measures_every_zeph_backend(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = quick_run
    data = json.loads((out / "all.json").read_text())
    remote = next(result for result in data["results"] if result["benchmark"] == "remote")
    measured = {row["metric"].split(" ")[0] for row in remote["rows"] if row["ours"]}
    assert {"zeph-openai", "zeph-compatible", "zeph-claude", "zeph-ollama"} <= measured


def test_missing_peers_are_reported_not_fatal(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = quick_run
    try:
        import litellm  # noqa: F401
    except ImportError:
        assert "peer unavailable: litellm" in proc.stdout
    doc = (out / "benchmarks.md").read_text()
    assert doc.startswith("# Benchmarks")
    assert "python bench/run_all.py --quick" in doc
    for title in ("Cold start", "Remote backends", "Local generation", "Embeddings"):
        assert title in doc


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_have_help(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{script}.py"), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "--json" in proc.stdout
