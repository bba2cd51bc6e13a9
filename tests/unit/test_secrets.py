"""A recognisable API key never shows up in a repr, str, error, log record, CLI output or dump."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zeph_providers.config import dump_toml, loads_config, parse_config
from zeph_providers.errors import AuthenticationError, ConfigError, LlmError, ProviderUnavailableError
from zeph_providers.registry import Registry
from zeph_providers.types import Message

REPO = Path(__file__).resolve().parents[2]
ENV_KEY = "sk-zeph-SECRET-123456"
INLINE_KEY = "sk-zeph-SECRET-inline-654321"

CONFIG = f"""\
[llm]
default = "mock"

[[llm.providers]]
name = "from-env"
type = "compatible"
base_url = "http://127.0.0.1:9/v1"
model = "m"
api_key_env = "ZEPH_TEST_KEY_VAR"
max_retries = 0
timeout_secs = 5

[[llm.providers]]
name = "inline"
type = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "{INLINE_KEY}"
max_retries = 0
timeout_secs = 5

[[llm.providers]]
name = "claude"
type = "claude"
base_url = "http://127.0.0.1:9"
api_key_env = "ZEPH_TEST_KEY_VAR"
max_retries = 0
timeout_secs = 5

[[llm.providers]]
name = "mock"
type = "mock"
"""


def assert_clean(text: str) -> None:
    assert ENV_KEY not in text, text
    assert INLINE_KEY not in text, text
    assert "SECRET" not in text, text


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEPH_TEST_KEY_VAR", ENV_KEY)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "secrets.toml"
    path.write_text(CONFIG)
    return path


def test_config_repr_str_and_dump(secret_env: None) -> None:
    config = loads_config(CONFIG, source="secrets.toml")
    assert_clean(repr(config))
    assert_clean(str(config))
    for provider in config.providers:
        assert_clean(repr(provider))
        assert_clean(str(provider))
        assert_clean(repr(provider.model_dump()))
        assert_clean(provider.model_dump_json())
    assert_clean(dump_toml(config))
    # the secret itself is still usable where it is needed
    inline = config.provider("inline")
    env = config.provider("from-env")
    assert inline is not None and env is not None
    secret = inline.secret()
    assert secret is not None and secret.get_secret_value() == INLINE_KEY
    from_env = env.secret()
    assert from_env is not None and from_env.get_secret_value() == ENV_KEY


async def test_registry_and_providers(secret_env: None) -> None:
    registry = Registry.from_toml_string(CONFIG, source="secrets.toml")
    for name in registry.names():
        provider = registry.get(name)
        assert_clean(repr(provider))
        assert_clean(str(provider))
        assert_clean(repr(vars(provider)))
    assert_clean(repr(registry))
    await registry.aclose()


def test_errors_are_redacted(secret_env: None) -> None:
    loads_config(CONFIG)  # registers the inline key
    Registry.from_toml_string(CONFIG).get("from-env")  # reads (and registers) the env key
    for key in (ENV_KEY, INLINE_KEY):
        error = AuthenticationError(f"HTTP 401: invalid key {key} (header Authorization: Bearer {key})", provider="x")
        assert_clean(str(error))
        assert_clean(repr(error))
        assert_clean(error.message)
        assert "[REDACTED]" in str(error)
        wrapped = LlmError(f"boom: {key!r}")
        assert_clean(str(wrapped))


def test_config_error_with_a_secret_in_a_bad_value() -> None:
    # A key pasted into the wrong field must not be echoed back in the problem list.
    text = CONFIG.replace(
        'timeout_secs = 5\n\n[[llm.providers]]\nname = "inline"',
        f'timeout_secs = "{ENV_KEY}"\n\n[[llm.providers]]\nname = "inline"',
        1,
    )
    with pytest.raises(ConfigError) as info:
        loads_config(text, source="bad.toml")
    assert "timeout_secs" in str(info.value)
    assert_clean(str(info.value))


def test_missing_key_error_names_the_variable_not_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZEPH_TEST_KEY_VAR", raising=False)
    registry = Registry.from_toml_string(CONFIG)
    with pytest.raises(ConfigError) as info:
        registry.get("claude")
    assert "ZEPH_TEST_KEY_VAR" in str(info.value)


async def test_failed_calls_and_debug_logs(secret_env: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    registry = Registry.from_toml_string(CONFIG)
    try:
        for name in ("from-env", "inline", "claude"):
            provider = registry.get(name)
            with pytest.raises(LlmError) as info:
                await provider.chat([Message.user("hello")], timeout=5)
            assert isinstance(info.value, (ProviderUnavailableError, LlmError))
            assert_clean(str(info.value))
            assert_clean(repr(info.value))
            cause: BaseException | None = info.value.__cause__
            while cause is not None:  # the chained SDK errors too
                assert_clean(str(cause))
                cause = cause.__cause__
    finally:
        await registry.aclose()
    assert caplog.records, "expected some debug logging"
    for record in caplog.records:
        assert_clean(record.getMessage())
    assert_clean(caplog.text)


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "ZEPH_PROVIDERS_CONFIG"}
    environ["PYTHONPATH"] = str(REPO) + os.pathsep + environ.get("PYTHONPATH", "")
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "zeph_providers", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("list",),
        ("list", "--json"),
        ("config", "show"),
        ("check",),
        ("status", "--json"),
        ("-vv", "chat", "from-env", "hi", "--timeout", "5"),
        ("-vv", "chat", "inline", "hi", "--timeout", "5"),
        ("-vv", "chat", "claude", "hi", "--timeout", "5"),
    ],
    ids=lambda args: "-".join(args),
)
def test_cli_output_in_process(
    config_path: Path,
    secret_env: None,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
) -> None:
    from zeph_providers.cli import main

    code = main(["--config", str(config_path), *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert_clean(captured.out)
    assert_clean(captured.err)
    if args[-1] != "5":
        assert code == 0, captured.err
        assert captured.out
    else:
        assert code == 1
        assert captured.err.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize("args", [("list",), ("config", "show")], ids=lambda args: "-".join(args))
def test_cli_output_subprocess(config_path: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    result = _cli("--config", str(config_path), *args, cwd=tmp_path, env={"ZEPH_TEST_KEY_VAR": ENV_KEY})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert_clean(result.stdout)
    assert_clean(result.stderr)


def test_cli_check_of_a_broken_file_with_a_key(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(CONFIG.replace("max_retries = 0", "max_retries = -1", 1) + "\n[oops]\n")
    result = _cli("--config", str(path), "check", cwd=tmp_path, env={"ZEPH_TEST_KEY_VAR": ENV_KEY})
    assert result.returncode == 1
    assert "max_retries" in result.stderr
    assert_clean(result.stdout + result.stderr)


def test_dump_of_dict_config_with_inline_key() -> None:
    config = parse_config({"llm": {"providers": [{"name": "c", "type": "claude", "api_key": INLINE_KEY}]}})
    assert_clean(dump_toml(config))
    assert_clean(repr(config.providers[0]))
