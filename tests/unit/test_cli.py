"""The `zeph-providers` command, run as `python -m zeph_providers` in a subprocess."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zeph_providers.cli import main
from zeph_providers.defaults import STARTER_CONFIG_TOML

REPO = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "ZEPH_PROVIDERS_CONFIG"}
    environ["PYTHONPATH"] = str(REPO) + os.pathsep + environ.get("PYTHONPATH", "")
    # the per-user config and the conversation log: never the real home folder's
    environ["ZEPH_PROVIDERS_CONFIG_HOME"] = str(cwd / ".user-config")
    environ["ZEPH_PROVIDERS_DATA_DIR"] = str(cwd / ".user-data")
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "zeph_providers", *args],
        cwd=cwd,
        env=environ,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


@pytest.fixture(autouse=True)
def _private_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process `main()` calls log conversations and read the per-user config: keep both in tmp."""
    monkeypatch.setenv("ZEPH_PROVIDERS_CONFIG_HOME", str(tmp_path / ".user-config"))
    monkeypatch.setenv("ZEPH_PROVIDERS_DATA_DIR", str(tmp_path / ".user-data"))


@pytest.fixture
def cfg(mock_config_path: Path) -> str:
    return str(mock_config_path)


def test_list_table(cfg: str, tmp_path: Path) -> None:
    result = run_cli("--config", cfg, "list", "--capabilities", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "MODEL", "CAPABILITIES"]
    assert lines[1].startswith("mock (default, embedding)")
    assert "mock-1" in lines[1] and "streaming, embeddings, tools" in lines[1]
    assert lines[2].startswith("second") and "mock-2" in lines[2]
    assert f"2 providers from {cfg}" in result.stdout


def test_list_json(cfg: str, tmp_path: Path) -> None:
    result = run_cli("list", "--json", "--capabilities", "--config", cfg, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["source"] == cfg
    assert payload["default"] == "mock"
    rows = {row["name"]: row for row in payload["providers"]}
    assert rows["mock"]["type"] == "mock"
    assert rows["mock"]["model"] == "mock-1"
    assert "embeddings" in rows["mock"]["capabilities"]
    assert rows["mock"]["default"] is True and rows["second"]["default"] is False
    assert rows["second"]["note"] is None


def test_list_shows_unbuildable_providers_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # in-process: building a remote provider imports its SDK, which is slow to do per subprocess
    monkeypatch.delenv("ZEPH_TEST_NO_SUCH_KEY", raising=False)
    path = tmp_path / "keys.toml"
    path.write_text(
        '[llm]\n[[llm.providers]]\nname = "claude"\ntype = "claude"\napi_key_env = "ZEPH_TEST_NO_SUCH_KEY"\n'
        '[[llm.providers]]\nname = "mock"\ntype = "mock"\n'
    )
    assert main(["--config", str(path), "list"]) == 0  # the config alone: the key variable is unset
    plain = capsys.readouterr().out
    assert "claude: needs an API key: $ZEPH_TEST_NO_SUCH_KEY is not set" in plain
    assert main(["--config", str(path), "list", "--capabilities"]) == 0
    out = capsys.readouterr().out
    claude_line = next(line for line in out.splitlines() if line.startswith("claude"))
    assert "claude-" in claude_line and claude_line.rstrip().endswith("?")
    assert "claude: not built:" in out
    assert "ZEPH_TEST_NO_SUCH_KEY" in out
    assert main(["--config", str(path), "list", "--json", "--capabilities"]) == 0
    payload = json.loads(capsys.readouterr().out)
    claude = next(row for row in payload["providers"] if row["name"] == "claude")
    assert claude["capabilities"] is None and claude["note"].startswith("not built:")


def test_list_builtin_default_does_not_load_a_model(tmp_path: Path) -> None:
    result = run_cli("list", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["source"] == "<built-in default>"
    assert [row["name"] for row in payload["providers"]] == ["local", "mock"]


def test_check_ok(cfg: str, tmp_path: Path) -> None:
    result = run_cli("--config", cfg, "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"OK: 2 providers (mock, second) in {cfg}"


def test_check_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[llm]\n[[llm.providers]]\nname = "gpt"\ntype = "openai"\ntemprature = 0.2\n'
        '[[llm.providers]]\nname = "x"\ntype = "gpt4"\n'
    )
    result = run_cli("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert_no_traceback(result)
    err = result.stderr
    assert err.startswith(f"error: {path}: invalid configuration (2 problems)")
    assert "providers[0] ('gpt'), field 'temprature': unknown key 'temprature' (did you mean 'temperature'?)" in err
    assert "providers[1] ('x'), field 'type': unknown provider type 'gpt4'" in err


def test_check_toml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[llm\nname = "x"\n')
    result = run_cli("--config", str(path), "check", cwd=tmp_path)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "TOML syntax error" in result.stderr and "line 1" in result.stderr


def test_check_missing_file(tmp_path: Path) -> None:
    result = run_cli("--config", str(tmp_path / "nope.toml"), "check", cwd=tmp_path)
    assert result.returncode == 1
    assert "nope.toml: config file not found" in result.stderr


def test_chat_streams_the_mock_text(cfg: str, tmp_path: Path) -> None:
    result = run_cli("--config", cfg, "chat", "mock", "hello", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from the mock provider.\n"
    second = run_cli(
        "--config", cfg, "chat", "second", "hi", "--system", "Be brief.", "--max-tokens", "5", cwd=tmp_path
    )
    assert second.stdout == "Second reply.\n"


def test_chat_json(cfg: str, tmp_path: Path) -> None:
    result = run_cli("--config", cfg, "chat", "mock", "hello there", "--json", "--temperature", "0.2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["text"] == "Hello from the mock provider."
    assert payload["provider"] == "mock" and payload["finish_reason"] == "stop"
    assert payload["usage"]["input_tokens"] == 2


def test_chat_prompt_from_stdin(cfg: str, tmp_path: Path) -> None:
    result = run_cli("--config", cfg, "chat", "mock", "-", "--json", cwd=tmp_path, stdin="one two three\n")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["usage"]["input_tokens"] == 3


def test_chat_unknown_provider(cfg: str, tmp_path: Path) -> None:
    result = run_cli("--config", cfg, "chat", "gpt", "hello", cwd=tmp_path)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert result.stderr.strip() == "error: no provider named 'gpt'; configured providers: 'mock', 'second'"


def test_usage_errors_exit_2(cfg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli("--config", cfg, "chat", "mock", cwd=tmp_path)  # no prompt, stdin not a terminal
    assert result.returncode == 2, result.stderr
    assert "no prompt: give one, pipe it on stdin, or run on a terminal for the REPL" in result.stderr
    assert_no_traceback(result)
    for args in (["bogus"], ["chat", "mock", "x", "--max-tokens", "0"], [], ["config"], ["chat", "mock", "-"]):
        assert main(["--config", cfg, *args]) == 2, args
        assert "Traceback" not in capsys.readouterr().err


def test_embed(cfg: str, tmp_path: Path) -> None:
    one = run_cli("--config", cfg, "embed", "mock", "hello", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    vector = json.loads(one.stdout)
    assert len(vector) == 8 and all(isinstance(v, float) for v in vector)
    two = run_cli("--config", cfg, "embed", "mock", "hello", "world", cwd=tmp_path)
    vectors = json.loads(two.stdout)
    assert len(vectors) == 2 and vectors[0] == vector
    dims = run_cli("--config", cfg, "embed", "mock", "a", "b", "c", "--dims", cwd=tmp_path)
    assert dims.stdout.strip() == "3 vectors of 8 dimensions from 'mock'"


def test_config_init_writes_a_checkable_file(tmp_path: Path) -> None:
    target = tmp_path / "conf" / "zeph.toml"
    result = run_cli("config", "init", str(target), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == STARTER_CONFIG_TOML
    assert "#" in target.read_text()  # commented
    check = run_cli("--config", str(target), "check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("OK: ")
    again = run_cli("config", "init", str(target), cwd=tmp_path)
    assert again.returncode == 1
    assert "already exists; pass --force" in again.stderr
    target.write_text("# mine\n")
    forced = run_cli("config", "init", str(target), "--force", cwd=tmp_path)
    assert forced.returncode == 0
    assert target.read_text() == STARTER_CONFIG_TOML


def test_config_init_default_path(tmp_path: Path) -> None:
    result = run_cli("config", "init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "zeph.toml").is_file()
    # ./zeph.toml is now what the commands pick up
    check = run_cli("check", cwd=tmp_path)
    assert "in zeph.toml" in check.stdout


def test_config_show(cfg: str, tmp_path: Path) -> None:
    result = run_cli("--config", cfg, "config", "show", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"# source: {cfg}\n")
    assert 'name = "second"' in result.stdout
    shown = tmp_path / "shown.toml"
    shown.write_text(result.stdout)
    assert run_cli("--config", str(shown), "check", cwd=tmp_path).returncode == 0


def test_status(cfg: str, tmp_path: Path) -> None:
    result = run_cli("--config", cfg, "status", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "mock (mock, mock-1): ready" in result.stdout
    payload = json.loads(run_cli("--config", cfg, "status", "--json", cwd=tmp_path).stdout)
    assert [p["state"] for p in payload["providers"]] == ["ready", "ready"]


def _named_config(path: Path, name: str) -> Path:
    path.write_text(f'[llm]\n[[llm.providers]]\nname = "{name}"\ntype = "mock"\n')
    return path


def test_config_precedence(tmp_path: Path) -> None:
    flag = _named_config(tmp_path / "flag.toml", "from-flag")
    env_file = _named_config(tmp_path / "env.toml", "from-env")
    workdir = tmp_path / "work"
    workdir.mkdir()
    _named_config(workdir / "zeph.toml", "from-cwd")
    env = {"ZEPH_PROVIDERS_CONFIG": str(env_file)}

    def names(*args: str, env: dict[str, str] | None = None, cwd: Path = workdir) -> list[str]:
        result = run_cli(*args, "list", "--json", cwd=cwd, env=env)
        assert result.returncode == 0, result.stderr
        return [row["name"] for row in json.loads(result.stdout)["providers"]]

    assert names("--config", str(flag), env=env) == ["from-flag"]
    assert names(env=env) == ["from-env"]
    assert names() == ["from-cwd"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert names(cwd=empty) == ["local", "mock"]


def test_verbose_logging_is_accepted(cfg: str, tmp_path: Path) -> None:
    result = run_cli("-vv", "--config", cfg, "chat", "mock", "hi", cwd=tmp_path)
    assert result.returncode == 0
    assert "config:" in result.stderr
    assert result.stdout == "Hello from the mock provider.\n"


# ----- in-process (fast paths the subprocesses cannot reach) ------------------------------


def test_main_returns_exit_codes(cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", cfg, "check"]) == 0
    assert "OK: 2 providers" in capsys.readouterr().out
    assert main(["--config", cfg, "chat", "nope", "x"]) == 1
    assert "error: no provider named 'nope'" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert main(["nonsense"]) == 2


def test_keyboard_interrupt_exits_130(cfg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from zeph_providers import cli

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_check", interrupted)
    assert main(["--config", cfg, "check"]) == 130


def _thinking_mock(config: object, registry: object) -> object:
    from zeph_providers.backends.mock import MockProvider, MockReply

    return MockProvider("mock", replies=[MockReply(text="The answer.", thinking="Let me think.")])


def test_chat_thinking_goes_to_stderr(
    cfg: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from zeph_providers.config import catalog

    monkeypatch.setitem(
        catalog.BUILTIN,
        "mock",
        dataclasses.replace(catalog.BUILTIN["mock"], builder="tests.unit.test_cli:_thinking_mock"),
    )
    assert main(["--config", cfg, "chat", "mock", "why?"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "The answer.\n"
    assert "Let me think." in captured.err
    assert "\x1b[" not in captured.err  # not a TTY: no colour codes


def test_unexpected_error_is_one_line(
    cfg: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from zeph_providers import cli

    def broken(args: object) -> int:
        raise RuntimeError("surprise")

    monkeypatch.setattr(cli, "_cmd_check", broken)
    assert main(["--config", cfg, "check"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: unexpected RuntimeError: surprise"


def test_check_reports_a_router_cycle_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cycle.toml"
    path.write_text(
        "[llm]\n"
        '[[llm.providers]]\nname = "m"\ntype = "mock"\n'
        '[[llm.providers]]\nname = "a"\ntype = "router"\nproviders = ["m", "b"]\n'
        '[[llm.providers]]\nname = "b"\ntype = "router"\nproviders = ["a"]\n'
    )
    assert main(["--config", str(path), "check"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err
    assert "routers form a cycle: a -> b -> a" in err


def test_list_shows_the_local_type_for_a_zeph_llm_candle_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "zeph.toml"
    path.write_text('[llm]\n[[llm.providers]]\nname = "loc"\ntype = "candle"\nmodel_path = "/nonexistent/m.gguf"\n')
    assert main(["--config", str(path), "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["providers"]
    assert [row["type"] for row in rows] == ["local"]
    assert main(["--config", str(path), "config", "show"]) == 0
    shown = capsys.readouterr().out
    assert 'type = "local"' in shown and "candle" not in shown


_SEEN: list[object] = []


def _tool_mock(config: object, registry: object) -> object:
    from zeph_providers.backends.mock import MockProvider, MockReply
    from zeph_providers.options import Capabilities
    from zeph_providers.types import ToolCall

    mock = MockProvider(
        "mock",
        replies=[MockReply(tool_calls=[ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})])],
        capabilities=Capabilities(tools=True, structured_output=True),
    )
    _SEEN.append(mock)
    return mock


def _json_mock(config: object, registry: object) -> object:
    from zeph_providers.backends.mock import MockProvider
    from zeph_providers.options import Capabilities

    mock = MockProvider("mock", replies=['{"city": "Paris"}'], capabilities=Capabilities(structured_output=True))
    _SEEN.append(mock)
    return mock


def test_chat_passes_tools_schema_and_seed(
    cfg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from zeph_providers.config import catalog

    monkeypatch.setitem(
        catalog.BUILTIN, "mock", dataclasses.replace(catalog.BUILTIN["mock"], builder="tests.unit.test_cli:_tool_mock")
    )
    tool = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    schema_file = tmp_path / "schema.json"
    schema_file.write_text('{"type": "object", "properties": {"city": {"type": "string"}}}')
    _SEEN.clear()
    args = ["chat", "mock", "weather?", "--tool", json.dumps(tool), "--tool-choice", "required", "--seed", "7"]
    code = main(["--config", cfg, *args])
    assert code == 0
    assert '[tool call get_weather({"city": "Paris"}) id=call_1]' in capsys.readouterr().err
    options = _SEEN[-1].requests[0].options  # type: ignore[attr-defined]
    assert [t.name for t in options.tools] == ["get_weather"]
    assert options.tool_choice == "required" and options.seed == 7
    monkeypatch.setitem(
        catalog.BUILTIN, "mock", dataclasses.replace(catalog.BUILTIN["mock"], builder="tests.unit.test_cli:_json_mock")
    )
    assert main(["--config", cfg, "chat", "mock", "city?", "--schema", f"@{schema_file}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == '{"city": "Paris"}'
    assert _SEEN[-1].requests[0].options.response_format == json.loads(schema_file.read_text())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--schema", "{not json", "not valid JSON"),
        ("--schema", "[1, 2]", "expected a JSON object"),
        ("--schema", "@/nonexistent/schema.json", "cannot read"),
        ("--tool", '{"description": "no name"}', "name: Field required"),
    ],
)
def test_chat_rejects_bad_schema_and_tool_flags(
    cfg: str, flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", cfg, "chat", "mock", "hi", flag, value]) == 2
    assert message in capsys.readouterr().err
