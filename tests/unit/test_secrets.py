"""A recognisable API key never shows up in a repr, str, error, log record, CLI output or dump."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


# ----- everything printable from an error: cause and context chains, groups, notes -------------

CHAIN_KEY = "sk-zeph-chain-SECRET-987654321"


class _AttrError(Exception):
    """Like ollama's ResponseError: str() built from an attribute, not from args."""

    def __init__(self, error: str) -> None:
        self.error = error
        super().__init__("see .error")

    def __str__(self) -> str:
        return f"{self.error} (status code: 401)"


class _ComputedError(Exception):
    """str() computed from something we cannot rewrite."""

    def __init__(self, parts: tuple[str, ...]) -> None:
        self._parts = parts
        super().__init__()

    def __str__(self) -> str:
        return "".join(self._parts)


def _failing_call(kind: str) -> LlmError:
    from zeph_providers.errors import register_secret

    register_secret(CHAIN_KEY)
    try:
        try:
            raise ValueError(f"inner context {CHAIN_KEY}")
        except ValueError:
            if kind == "attr":
                raise _AttrError(f"invalid key {CHAIN_KEY}") from None
            if kind == "computed":
                raise _ComputedError(("bearer ", CHAIN_KEY[:10], CHAIN_KEY[10:])) from None
            sdk = RuntimeError(f"Error code: 401 - {{'error': 'bad key {CHAIN_KEY}'}}")
            sdk.add_note(f"request header Authorization: Bearer {CHAIN_KEY}")
            raise sdk  # noqa: B904 - context, not cause: both chains must be clean
    except Exception as exc:
        try:
            raise AuthenticationError("HTTP 401: invalid key", provider="p") from exc
        except AuthenticationError as err:
            return err


@pytest.mark.parametrize("kind", ["args", "attr", "computed"])
def test_traceback_of_a_failed_call_is_clean(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    import traceback

    err = _failing_call(kind)
    err.add_note(f"while calling with {CHAIN_KEY}")
    printed = "".join(traceback.format_exception(err))
    assert CHAIN_KEY[:8] in "sk-zeph-" and "[REDACTED]" in printed
    assert "SECRET" not in printed, printed
    assert "SECRET" not in repr(err.__cause__) and "SECRET" not in str(err.__cause__)
    group = ExceptionGroup("router", [err, _failing_call(kind)])
    assert "SECRET" not in "".join(traceback.format_exception(group))
    with caplog.at_level(logging.ERROR):
        try:
            raise err
        except AuthenticationError:
            logging.getLogger("app").exception("the call failed")
    assert "SECRET" not in caplog.text
    assert "the call failed" in caplog.text


def test_a_cause_attached_after_construction_is_clean_too() -> None:
    import traceback

    from zeph_providers.errors import register_secret

    register_secret(CHAIN_KEY)
    err = AuthenticationError("HTTP 401", provider="p")  # built outside any except block
    err.__cause__ = RuntimeError(f"echoed {CHAIN_KEY}")
    assert "SECRET" not in "".join(traceback.format_exception(err))


def test_uncaught_error_printed_by_the_interpreter_is_clean(tmp_path: Path) -> None:
    script = tmp_path / "boom.py"
    script.write_text(
        "from zeph_providers.errors import AuthenticationError, register_secret\n"
        f"KEY = {CHAIN_KEY!r}\n"
        "register_secret(KEY)\n"
        "try:\n"
        "    raise RuntimeError('server echoed ' + KEY)\n"
        "except RuntimeError as exc:\n"
        "    raise AuthenticationError('HTTP 401', provider='p') from exc\n"
    )
    environ = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=environ, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "AuthenticationError" in result.stderr and "RuntimeError" in result.stderr
    assert "SECRET" not in result.stderr, result.stderr


# ----- redact first, then cut; never part of a secret ------------------------------------------


def test_a_secret_cut_in_half_does_not_leak_its_prefix() -> None:
    from zeph_providers.errors import clip, redact, register_secret

    register_secret(CHAIN_KEY)
    body = "x" * 490 + CHAIN_KEY + " tail"
    cut = body[:500]  # what a backend that clips before redacting hands us
    assert CHAIN_KEY[:10] in cut
    error = AuthenticationError(f"HTTP 401: {cut}; check the API key", provider="p")
    assert CHAIN_KEY[:6] not in str(error), str(error)
    assert "[REDACTED]" in str(error)
    # and the other end: a cut that keeps only the tail of a key
    assert CHAIN_KEY[-8:] not in redact("..." + CHAIN_KEY[-12:] + " end")
    # clip() redacts first, then shortens, and never ends in half a placeholder
    for limit in range(480, 520):
        clipped = clip(body, limit)
        assert "sk-zeph" not in clipped and "SECRET" not in clipped
        assert "[REDACTED" not in clipped.replace("[REDACTED]", "")


def test_the_longest_secret_is_redacted_first() -> None:
    """A secret that contains another must be replaced whole, not leave its tail after the short one."""
    from zeph_providers.errors import redact, register_secret

    short, long = "zk-shortish-1234", "zk-shortish-1234-AND-THE-LONG-TAIL-99"
    register_secret(short)
    register_secret(long)
    assert redact(f"a={long} b={short}") == "a=[REDACTED] b=[REDACTED]"
    assert redact(f"{short}{long}") == "[REDACTED][REDACTED]"


# ----- logs: a helper for library users, active on every logger --------------------------------


def test_debug_logs_of_child_loggers_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    from zeph_providers.errors import register_secret
    from zeph_providers.redaction import RedactingFilter

    register_secret(CHAIN_KEY)
    for name in ("httpcore", "httpx", "openai", "anthropic"):  # the CLI quiets them; turn them up
        caplog.set_level(logging.DEBUG, logger=name)
    headers = [(b"authorization", f"Bearer {CHAIN_KEY}".encode())]
    logging.getLogger("httpcore.http11").debug("receive_response_headers.complete return_value=%r", headers)
    logging.getLogger("openai._base_client").debug("Request options: %s", {"headers": {"api-key": CHAIN_KEY}})
    logging.getLogger("anthropic._base_client").debug("x-api-key: " + CHAIN_KEY)
    try:
        raise RuntimeError(f"echo {CHAIN_KEY}")
    except RuntimeError:
        logging.getLogger("httpx").exception("failed")
    assert "receive_response_headers" in caplog.text and "Request options" in caplog.text
    assert "SECRET" not in caplog.text, caplog.text
    # the filter, on a handler or the root logger: never drops, never raises, scrubs
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s %d", (CHAIN_KEY, 3), None)
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == "key [REDACTED] 3"
    odd = logging.LogRecord("x", logging.INFO, __file__, 1, "bad %d", ("not a number",), None)
    assert RedactingFilter().filter(odd) is True


# ----- real backends against a server that echoes the key ---------------------------------------


ECHO_KEY = "sk-zeph-ECHOED-SECRET-24680"


@pytest.fixture
def echo_server() -> Any:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            auth = self.headers.get("authorization") or self.headers.get("x-api-key") or ""
            token = auth.removeprefix("Bearer ").strip()
            body = ("x" * 470 + " invalid key " + token + " please check it").encode()
            self.send_response(401)
            self.send_header("content-type", "text/plain")
            self.send_header("x-echo-key", token)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kind", ["compatible", "claude", "ollama"])
async def test_backend_error_echoing_the_key_is_clean_everywhere(
    kind: str, echo_server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import traceback

    monkeypatch.setenv("ZEPH_ECHO_KEY", ECHO_KEY)
    base = echo_server + ("/v1" if kind == "compatible" else "")
    registry = Registry.from_dict(
        {
            "llm": {
                "providers": [
                    {
                        "name": "p",
                        "type": kind,
                        "model": "m",
                        "base_url": base,
                        "api_key_env": "ZEPH_ECHO_KEY",
                        "max_retries": 0,
                    }
                ]
            }
        }
    )
    for name in ("", "httpcore", "httpcore2", "httpx", "httpx2", "openai", "anthropic"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    try:
        with pytest.raises(LlmError) as info:
            await registry.get("p").chat([Message.user("hi")], timeout=10)
    finally:
        await registry.aclose()
    err = info.value
    printed = "".join(traceback.format_exception(err)) + str(err) + repr(err)
    assert "SECRET" not in printed, printed
    assert "ECHOED" not in printed, printed[max(0, printed.find("ECHOED") - 300) : printed.find("ECHOED") + 100]
    logging.getLogger("app").error("failed", exc_info=err)
    assert "x-echo-key" in caplog.text or kind == "ollama"  # the echoed header was logged...
    assert "SECRET" not in caplog.text and "ECHOED" not in caplog.text  # ...without the key


def test_words_sharing_a_short_prefix_with_a_key_are_left_alone() -> None:
    """Redacting pieces of cut keys must not eat ordinary text ("ollama pull" vs an "ollama-..." key)."""
    from zeph_providers.errors import redact, register_secret

    register_secret("ollama-proxy-secret-0123456789")
    assert redact("run `ollama pull not-pulled`") == "run `ollama pull not-pulled`"
    assert redact("cut: ollama-proxy-sec") == "cut: [REDACTED]"


def test_words_containing_the_end_of_a_key_are_left_alone() -> None:
    """A key ending in "-for-llamacpp" must not eat the package name in "pip install xllamacpp"."""
    from zeph_providers.errors import redact, register_secret

    register_secret("sk-dummy-key-for-llamacpp")
    assert redact("needs the xllamacpp package: pip install xllamacpp") == (
        "needs the xllamacpp package: pip install xllamacpp"
    )
    assert redact("cut ...-for-llamacpp here") == "cut ...[REDACTED] here"
    assert redact("body: sk-dummy-key") == "body: [REDACTED]"
