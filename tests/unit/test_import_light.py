"""`import zeph_providers` and loading a config stay light: no SDK, torch or HTTP client imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ["torch", "transformers", "huggingface_hub", "openai", "anthropic", "ollama", "httpx", "httpx2"]

SCRIPT = """
import json, sys
import zeph_providers
from zeph_providers import Registry, Message, ChatResponse, ConfigError
registry = Registry.from_toml(sys.argv[1])
registry.config.names()
Registry.from_default().names()
from zeph_providers.config import dump_toml
dump_toml(registry.config)
if len(sys.argv) > 2:
    import zeph_providers.cli
    zeph_providers.cli.build_parser()
    from zeph_providers import BlockingRegistry
heavy = %r
print(json.dumps(sorted(m for m in heavy if m in sys.modules or any(k.startswith(m + ".") for k in sys.modules))))
"""


def _loaded(*extra: str) -> list[str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = str(REPO) + os.pathsep + environ.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT % (HEAVY,), str(REPO / "configs" / "example.toml"), *extra],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_import_and_config_load_import_nothing_heavy() -> None:
    assert _loaded() == []


def test_cli_module_and_blocking_twin_import_nothing_heavy() -> None:
    assert _loaded("cli") == []
