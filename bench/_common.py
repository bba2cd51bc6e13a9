"""Shared helpers for the benchmark scripts: CLI flags, result rows, JSON output, peers.

Every script accepts `--json OUT` (write the results there) and `--quick` (tiny inputs, for the
smoke test). A result is a list of rows; each row compares one figure of ours with one peer
measured in the same run, on the same machine. `ratio` is always ours / peer in the row's unit;
`target` is a bound on that ratio (`>=` for throughputs, `<=` for times).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

# Nothing in a benchmark may reach the network: keep every library on local files.
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # litellm otherwise fetches its price list on import
    "LITELLM_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "ANONYMIZED_TELEMETRY": "False",
    "DO_NOT_TRACK": "1",
}
for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


@dataclass
class Row:
    """One comparison: our figure, the peer's figure from the same run, and ours/peer."""

    metric: str
    unit: str
    ours: float | None
    peer: str
    peer_value: float | None = None
    target: str = ""
    """e.g. ">=0.9" or "<=0.1": a bound on the ratio ours/peer; empty when informational."""
    note: str = ""
    ratio: float | None = None
    met: bool | None = None

    def finish(self) -> Row:
        if self.ours is not None and self.peer_value:
            self.ratio = self.ours / self.peer_value
        if self.target and self.ratio is not None:
            op, bound = self.target[:2], float(self.target[2:])
            self.met = self.ratio >= bound if op == ">=" else self.ratio <= bound
        return self


@dataclass
class Result:
    benchmark: str
    title: str
    rows: list[Row] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    """Raw numbers for plots: {plot name: {"x": [...], "lines": {label: [...]}, ...}}."""
    notes: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    """peer -> why it could not be measured."""
    absolute: list[dict[str, Any]] = field(default_factory=list)
    """Extra absolute figures (label, value, unit) that have no peer."""
    quick: bool = False

    def add(self, row: Row) -> Row:
        self.rows.append(row.finish())
        return row

    def skipped(self, why: str) -> None:
        """Record and print why this benchmark did not run (it still exits 0: CI has no peers)."""
        self.notes.append(f"skipped: {why}")
        print(f"skipped: {why}", flush=True)

    def peer_unavailable(self, peer: str, why: str) -> None:
        self.unavailable[peer] = why
        print(f"peer unavailable: {peer}: {why}", flush=True)

    def print_rows(self) -> None:
        print(f"\n== {self.title} ==")
        for row in self.rows:
            ours = "n/a" if row.ours is None else f"{row.ours:,.2f}"
            peer = "n/a" if row.peer_value is None else f"{row.peer_value:,.2f}"
            ratio = "n/a" if row.ratio is None else f"{row.ratio:.3f}x"
            verdict = "" if row.met is None else ("  target met" if row.met else "  TARGET MISSED")
            target = f" (target {row.target})" if row.target else ""
            print(
                f"{row.metric:<48} ours {ours:>12} {row.unit:<9} {row.peer:<22} {peer:>12}"
                f"  ratio {ratio}{target}{verdict}"
            )
        for item in self.absolute:
            print(f"{item['label']:<48} {item['value']:,.2f} {item['unit']}")
        for peer, why in self.unavailable.items():
            print(f"peer unavailable: {peer}: {why}")
        sys.stdout.flush()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_args(description: str, extra: list[tuple[str, dict[str, Any]]] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--quick", action="store_true", help="tiny inputs (smoke test); numbers are meaningless")
    for flag, kwargs in extra or []:
        parser.add_argument(flag, **kwargs)
    return parser.parse_args()


def emit(result: Result, path: Path | None) -> None:
    result.print_rows()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_json(), indent=2))


def median(values: list[float]) -> float:
    return statistics.median(values)


def has_module(name: str) -> str | None:
    """None when `name` can be found, else why not (the module is not imported)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if spec is not None else f"`{name}` is not installed (pip install -r bench/requirements.txt)"


def package_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    for dist in (
        "torch",
        "transformers",
        "openai",
        "anthropic",
        "ollama",
        "httpx",
        "httpx2",
        "litellm",
        "any-llm-sdk",
        "aisuite",
        "sentence-transformers",
        "xllamacpp",
        "zeph-providers",
    ):
        info[dist] = package_version(dist)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["processor"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


Direction = Literal["higher", "lower"]
