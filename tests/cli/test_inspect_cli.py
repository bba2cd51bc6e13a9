"""`list` builds nothing; `status` (`--probe`), `models`, config discovery, `config init --user`, the schema."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.cli.conftest import NEVER_HANG, REPO, Cli
from zeph_providers._cli_schema import schema_text

HEAVY = ["openai", "anthropic", "ollama", "torch", "transformers", "huggingface_hub", "httpx", "httpx2", "xllamacpp"]

WRAPPER = """
import json, sys
from zeph_providers.cli import main
code = main(sys.argv[1:])
heavy = %r
loaded = sorted(m for m in heavy if m in sys.modules or any(k.startswith(m + ".") for k in sys.modules))
print("LOADED=" + json.dumps(loaded))
sys.exit(code)
"""


def _loaded_by(cli: Cli, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER % (HEAVY,), *args],
        cwd=cli.cwd,
        env=cli.env(),
        capture_output=True,
        text=True,
        timeout=NEVER_HANG,
        check=False,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("LOADED="))
    return result, json.loads(line.removeprefix("LOADED="))


def test_list_imports_no_sdk_and_builds_no_client(cli: Cli) -> None:
    example = str(REPO / "configs" / "example.toml")
    result, loaded = _loaded_by(cli, "list", "--config", example)
    assert result.returncode == 0, result.stderr
    assert loaded == []
    assert "claude" in result.stdout and "8 providers from" in result.stdout
    as_json, loaded_json = _loaded_by(cli, "list", "--json", "--config", example)
    assert loaded_json == []
    rows = json.loads(as_json.stdout.split("LOADED=")[0])["providers"]
    assert {row["name"] for row in rows} >= {"claude", "gpt", "ollama", "local", "smart"}
    # the control: building them (list --capabilities) is what imports the SDKs
    _, built = _loaded_by(cli, "list", "--capabilities", "--config", example)
    assert {"openai", "anthropic"} <= set(built)


def test_status_says_state_is_per_process_and_probes(cli: Cli) -> None:
    mock = str(REPO / "configs" / "mock.toml")
    plain = cli("--config", mock, "status")
    assert plain.returncode == 0, plain.stderr
    assert "state is per process" in plain.stdout and "status --probe" in plain.stdout
    assert "probe:" not in plain.stdout
    probed = cli("--config", mock, "status", "--probe")
    assert probed.returncode == 0, probed.stderr
    lines = probed.stdout.splitlines()
    assert any(line.strip().startswith("probe: ok: lists 1 model") for line in lines), probed.stdout
    router = lines.index(next(line for line in lines if line.startswith("mocks (router")))
    assert "probe: ok: answered a 1-token chat" in "\n".join(lines[router:])
    payload = json.loads(cli("--config", mock, "status", "--probe", "--json").stdout)
    assert payload["state_scope"] == "process"
    assert all(p["probe"]["ok"] for p in payload["providers"])


def test_models_lists_what_the_provider_serves(cli: Cli) -> None:
    mock = str(REPO / "configs" / "mock.toml")
    result = cli("--config", mock, "models", "mock", "--json")
    assert result.returncode == 0, result.stderr
    assert [m["id"] for m in json.loads(result.stdout)["models"]] == ["mock-1"]
    table = cli("--config", mock, "models", "mocks")  # a router: its members' models
    assert "mock-1" in table.stdout and "mock-slow" in table.stdout


def _named(path: Path, name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[llm]\n[[llm.providers]]\nname = "{name}"\ntype = "mock"\n', encoding="utf-8")
    return path


def _names(cli: Cli, env: dict[str, str] | None = None) -> list[str]:
    result = cli("list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return [row["name"] for row in json.loads(result.stdout)["providers"]]


def test_discovery_order_flag_env_cwd_user_default(cli: Cli, tmp_path: Path) -> None:
    assert _names(cli) == ["local", "mock"]  # nothing anywhere: the built-in default
    user = _named(cli.config_home / "zeph.toml", "from-user")
    assert _names(cli) == ["from-user"]
    _named(cli.cwd / "zeph.toml", "from-cwd")
    assert _names(cli) == ["from-cwd"]  # ./zeph.toml comes before the user file
    env_file = _named(tmp_path / "env.toml", "from-env")
    assert _names(cli, {"ZEPH_PROVIDERS_CONFIG": str(env_file)}) == ["from-env"]
    assert cli("config", "path").stdout.strip() == "zeph.toml"
    (cli.cwd / "zeph.toml").unlink()
    assert cli("config", "path").stdout.strip() == str(user)


def test_config_init_user_writes_the_per_user_file(cli: Cli) -> None:
    result = cli("config", "init", "--user")
    assert result.returncode == 0, result.stderr
    target = cli.config_home / "zeph.toml"
    assert target.is_file() and str(target) in result.stdout
    check = cli("check")
    assert check.returncode == 0 and str(target) in check.stdout
    again = cli("config", "init", "--user")
    assert again.returncode == 1 and "already exists; pass --force" in again.stderr
    both = cli("config", "init", "--user", "x.toml")
    assert both.returncode == 2


# ----- the JSON Schema --------------------------------------------------------------------------


def test_committed_schema_is_the_generated_one(cli: Cli) -> None:
    committed = (REPO / "docs" / "zeph.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), "regenerate: zeph-providers config schema > docs/zeph.schema.json"
    printed = cli("config", "schema")
    assert printed.returncode == 0 and printed.stdout == committed


jsonschema = pytest.importorskip("jsonschema")


def _validator() -> object:
    schema = json.loads(schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_validate_against_the_schema(path: Path) -> None:
    validator = _validator()
    errors = [e.message for e in validator.iter_errors(tomllib.loads(path.read_text(encoding="utf-8")))]  # type: ignore[attr-defined]
    assert errors == []


def test_starter_and_default_configs_validate() -> None:
    from zeph_providers.defaults import DEFAULT_CONFIG_TOML, STARTER_CONFIG_TOML

    validator = _validator()
    for text in (STARTER_CONFIG_TOML, DEFAULT_CONFIG_TOML):
        assert list(validator.iter_errors(tomllib.loads(text))) == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "document",
    [
        {"llm": {"providers": [{"name": "x", "type": "openai", "temprature": 0.2}]}},  # a typo
        {"llm": {"providers": [{"name": "x", "type": "gpt4"}]}},  # an unknown type
        {"llm": {"defualt": "x"}},
        {"llm": {"providers": [{"name": "r", "type": "router", "providers": ["a"], "strategy": "random"}]}},
        {"llm": {"providers": [{"name": "x", "type": "mock", "chunk_size": 0}]}},
    ],
)
def test_the_schema_rejects_what_the_loader_rejects(document: dict[str, object]) -> None:
    from zeph_providers.config import parse_config
    from zeph_providers.errors import ConfigError

    assert list(_validator().iter_errors(document)) != []  # type: ignore[attr-defined]
    with pytest.raises(ConfigError):
        parse_config(document)


def test_the_schema_describes_fields_and_aliases() -> None:
    schema = json.loads(schema_text())
    assert schema["$schema"].startswith("https://json-schema.org/")
    local = schema["$defs"]["LocalConfig"]
    assert local["properties"]["type"]["enum"] == ["local", "candle", "transformers"]
    assert "type" in local["required"]
    assert local["properties"]["device"]["description"].startswith("Where the model runs")
    assert schema["$defs"]["ClaudeConfig"]["properties"]["type"]["enum"] == ["claude", "anthropic"]
    assert "registry.default()" in schema["$defs"]["LlmConfig"]["properties"]["default"]["description"]
