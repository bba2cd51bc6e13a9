"""Smoke test for `bench/bench_scaling.py --quick`: it runs, measures both stores, and writes its figures.

No assertion on timings (a --quick run's numbers mean nothing); the Redis row must exist and must
not have fallen back to local state (that would mean the benchmark measured the wrong thing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_scaling_quick(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_scaling.py"), "--quick", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "p50" in proc.stdout
    data = json.loads(out.read_text())
    assert data["quick"] is True
    assert data["results"]["memory"]["calls"] == 300
    redis = data["results"]["redis"]
    assert redis is not None and redis["calls"] == 300
    assert redis["fallbacks"] == 0
