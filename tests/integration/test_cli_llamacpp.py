"""`zeph-providers chat NAME ...` against a real llama.cpp server, for `compatible` and `claude` configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, base_url: str) -> Path:
    path = tmp_path / "zeph.toml"
    path.write_text(
        f"""
[[llm.providers]]
name = "llamacpp"
type = "compatible"
base_url = "{base_url}/v1"
model = "smollm2"

[[llm.providers]]
name = "claude-on-llamacpp"
type = "anthropic"
base_url = "{base_url}"
model = "smollm2"
api_key_env = "ZEPH_TEST_CLAUDE_KEY"
max_tokens = 24
""",
        encoding="utf-8",
    )
    return path


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZEPH_TEST_CLAUDE_KEY": "sk-ant-test-not-a-real-key"}
    return subprocess.run(
        [sys.executable, "-m", "zeph_providers", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("name", ["llamacpp", "claude-on-llamacpp"])
def test_cli_chat_streams_a_real_answer(llamacpp_server: str, tmp_path: Path, name: str) -> None:
    config = _config(tmp_path, llamacpp_server)
    result = _cli(config, "chat", name, "Name one colour.", "--max-tokens", "24", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the model answered with text"
    assert "sk-ant-test-not-a-real-key" not in result.stdout + result.stderr


@pytest.mark.parametrize("name", ["llamacpp", "claude-on-llamacpp"])
def test_cli_chat_json_reports_usage(llamacpp_server: str, tmp_path: Path, name: str) -> None:
    config = _config(tmp_path, llamacpp_server)
    result = _cli(config, "chat", name, "Say hi.", "--max-tokens", "8", "--temperature", "0", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["usage"]["input_tokens"] > 0
    assert 0 < payload["usage"]["output_tokens"] <= 8
    assert payload["finish_reason"] in {"stop", "length"}
    assert payload["provider"] == name
