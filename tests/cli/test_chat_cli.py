"""`chat` from scripts and pipes: the default provider, stdin, -c, logs, -a, --schema, did-you-mean, URLs."""

from __future__ import annotations

import json
import socket
import struct
import zlib
from pathlib import Path

import pytest

from tests.cli.conftest import Cli
from zeph_providers._cli_store import Store
from zeph_providers.types import DocumentPart

CONFIG = """\
[llm]
default = "second"

[[llm.providers]]
name = "mock"
type = "mock"
responses = ["Hello from the mock provider."]

[[llm.providers]]
name = "second"
type = "mock"
model = "mock-2"
responses = ["Second reply.", "Third reply."]
"""


@pytest.fixture
def cfg(cli: Cli) -> str:
    path = cli.home / "mock.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return str(path)


def _png(width: int = 2, height: int = 2) -> bytes:
    """A real PNG (red pixels), built by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _store(cli: Cli) -> Store:
    return Store(cli.data_dir / "logs.db")


def test_no_name_uses_the_default_provider(cli: Cli, cfg: str) -> None:
    result = cli("--config", cfg, "chat", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Second reply.\n"
    named = cli("--config", cfg, "chat", "mock", "hi")
    assert named.stdout == "Hello from the mock provider.\n"
    alone = cli("--config", cfg, "chat", "-p", "mock", "second")  # -p: "second" is the prompt
    assert alone.stdout == "Hello from the mock provider.\n"
    assert [e.prompt for e in _store(cli).exchanges()] == ["hi", "hi", "second"]


def test_a_lone_word_like_a_provider_name_is_the_prompt_with_a_note(cli: Cli, cfg: str) -> None:
    result = cli("--config", cfg, "chat", "mokc")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Second reply.\n"
    assert "'mokc' is not a provider, so it is the prompt (did you mean 'mock'?)" in result.stderr


def test_piped_stdin_is_appended_to_the_prompt(cli: Cli, cfg: str) -> None:
    result = cli("--config", cfg, "chat", "Summarise this", "--json", stdin="line one\nline two\n")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["usage"]["input_tokens"] == 2 + 4
    assert _store(cli).exchanges()[0].prompt == "Summarise this\n\nline one\nline two"
    only = cli("--config", cfg, "chat", "mock", stdin="just stdin\n")  # NAME alone + a pipe: stdin is the prompt
    assert only.stdout == "Hello from the mock provider.\n"
    assert _store(cli).exchanges()[-1].prompt == "just stdin"


def test_continue_sends_the_history_and_logs_lists_it(cli: Cli, cfg: str) -> None:
    assert cli("--config", cfg, "chat", "mock", "first question").returncode == 0
    again = cli("--config", cfg, "chat", "-c", "a follow up", "--json")
    assert again.returncode == 0, again.stderr
    payload = json.loads(again.stdout)
    assert payload["provider"] == "mock"  # the conversation's provider, not the default
    assert payload["usage"]["input_tokens"] == 2 + 5 + 3  # the history went with it
    fresh = cli("--config", cfg, "chat", "new topic")
    assert fresh.returncode == 0
    exchanges = _store(cli).exchanges()
    assert exchanges[0].conversation_id == exchanges[1].conversation_id != exchanges[2].conversation_id

    logs = cli("logs", "-n", "2")
    assert logs.returncode == 0, logs.stderr
    assert "> a follow up" in logs.stdout and "> new topic" in logs.stdout
    assert "first question" not in logs.stdout  # -n 2: the two most recent
    as_json = json.loads(cli("logs", "--json", "-n", "5").stdout)
    assert [e["prompt"] for e in as_json] == ["first question", "a follow up", "new topic"]
    conversations = cli("logs", "--conversations")
    assert conversations.stdout.splitlines()[0].split() == ["ID", "UPDATED", "PROVIDER", "MODEL", "TURNS"]
    by_id = cli("--config", cfg, "chat", "--cid", exchanges[0].conversation_id, "third", "--json")
    assert json.loads(by_id.stdout)["usage"]["input_tokens"] == 2 + 5 + 3 + 5 + 1


def test_nothing_to_continue_and_no_log(cli: Cli, cfg: str) -> None:
    result = cli("--config", cfg, "chat", "-c", "hi")
    assert result.returncode == 2
    assert "no conversation to continue yet" in result.stderr
    assert cli("--config", cfg, "chat", "hi", "--no-log").returncode == 0
    assert cli("--config", cfg, "chat", "hi", env={"ZEPH_PROVIDERS_NO_LOG": "1"}).returncode == 0
    assert _store(cli).exchanges() == []
    assert "no exchanges yet" in cli("logs").stdout


def test_the_log_never_holds_a_key(cli: Cli, tmp_path: Path) -> None:
    key = "sk-test-" + "x" * 32
    path = tmp_path / "keyed.toml"
    path.write_text(
        '[llm]\ndefault = "mock"\n[[llm.providers]]\nname = "mock"\ntype = "mock"\n'
        '[[llm.providers]]\nname = "gpt"\ntype = "openai"\napi_key_env = "ZEPH_TEST_CLI_KEY"\n'
    )
    result = cli("--config", str(path), "chat", f"my key is {key}", env={"ZEPH_TEST_CLI_KEY": key})
    assert result.returncode == 0, result.stderr
    raw = (cli.data_dir / "logs.db").read_bytes()
    assert key.encode() not in raw
    assert "[REDACTED]" in _store(cli).exchanges()[0].prompt


def test_attach_an_image_and_a_document(cli: Cli, cfg: str) -> None:
    png = _png()
    (cli.cwd / "dot.png").write_bytes(png)
    (cli.cwd / "notes.md").write_text("# Notes\nsome text\n", encoding="utf-8")
    result = cli("--config", cfg, "chat", "mock", "what is this?", "-a", "dot.png")
    assert result.returncode == 0, result.stderr
    store = _store(cli)
    history = store.history(store.exchanges()[0].conversation_id)
    assert history[0].text == "what is this?"
    (image,) = history[0].images
    assert image.mime_type == "image/png" and image.data == png
    # a text file goes as a DocumentPart; the mock (no `documents` capability) refuses it, typed
    refused = cli("--config", cfg, "chat", "mock", "read this", "-a", "notes.md")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: provider 'mock': does not support documents (document parts)"


def test_attachment_parts() -> None:
    from zeph_providers._cli_chat import attachment

    here = Path(__file__).parent
    document = attachment(str(here / "conftest.py"))
    assert isinstance(document, DocumentPart) and document.title == "conftest.py"
    assert document.text == (here / "conftest.py").read_text(encoding="utf-8")


def test_attach_refuses_what_it_cannot_send(cli: Cli, cfg: str) -> None:
    (cli.cwd / "blob.bin").write_bytes(b"\x00\xff\xfe\x81" * 8)
    bad = cli("--config", cfg, "chat", "mock", "x", "-a", "blob.bin")
    assert bad.returncode == 2
    assert "not an image, a PDF or UTF-8 text" in bad.stderr
    missing = cli("--config", cfg, "chat", "mock", "x", "-a", "nope.png")
    assert missing.returncode == 2 and "-a nope.png: cannot read it" in missing.stderr


def test_schema_from_a_pydantic_model_class(cli: Cli, tmp_path: Path) -> None:
    (cli.cwd / "shapes.py").write_text("from pydantic import BaseModel\n\nclass City(BaseModel):\n    city: str\n")
    path = tmp_path / "json.toml"
    path.write_text('[llm]\n[[llm.providers]]\nname = "mock"\ntype = "mock"\nresponses = [\'{"city": "Paris"}\']\n')
    result = cli("--config", str(path), "chat", "mock", "a city?", "--schema", "shapes:City", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["text"] == '{"city": "Paris"}'
    missing = cli("--config", str(path), "chat", "mock", "x", "--schema", "shapes:Town")
    assert missing.returncode == 2 and "--schema shapes:Town: cannot import it" in missing.stderr
    wrong = cli("--config", str(path), "chat", "mock", "x", "--schema", "json:dumps")
    assert wrong.returncode == 2 and "not a pydantic model class" in wrong.stderr


def test_sampling_flags_are_checked(cli: Cli, cfg: str) -> None:
    ok = cli("--config", cfg, "chat", "mock", "x", "--seed", "3", "--top-p", "0.5", "--stop", "a", "--stop", "b")
    assert ok.returncode == 0, ok.stderr
    bad = cli("--config", cfg, "chat", "mock", "x", "--top-p", "1.5")
    assert bad.returncode == 2 and "--top-p" in bad.stderr
    too_many = cli("--config", cfg, "chat", "mock", "a", "b")
    assert too_many.returncode == 2 and "quote the prompt" in too_many.stderr


def test_unknown_provider_gets_did_you_mean(cli: Cli, cfg: str) -> None:
    result = cli("--config", cfg, "chat", "secnod", "hi")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: no provider named 'secnod'; configured providers: 'mock', 'second' (did you mean 'second'?)"
    )
    models = cli("--config", cfg, "models", "moc")
    assert "(did you mean 'mock'?)" in models.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_errors_name_the_url(cli: Cli, tmp_path: Path) -> None:
    port = _closed_port()
    path = tmp_path / "down.toml"
    path.write_text(
        '[llm]\n[[llm.providers]]\nname = "down"\ntype = "compatible"\nmodel = "m"\n'
        f'base_url = "http://127.0.0.1:{port}/v1"\nmax_retries = 0\n'
    )
    result = cli("--config", str(path), "chat", "down", "hi")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line.startswith("error: provider 'down':") and "connect" in line
    assert line.endswith(f"(tried http://127.0.0.1:{port}/v1)")
    models = cli("--config", str(path), "models", "down")
    assert models.returncode == 1 and models.stderr.strip().endswith(f"(tried http://127.0.0.1:{port}/v1)")
    probe = cli("--config", str(path), "status", "--probe", "--probe-timeout", "30")
    assert probe.returncode == 0, probe.stderr
    assert "probe: error: provider 'down': " in probe.stdout and f"(tried http://127.0.0.1:{port}/v1)" in probe.stdout
