"""Progress while people wait: a spinner on a terminal's stderr, nothing on a pipe, no third-party bars."""

from __future__ import annotations

import json
import os
import pty
import select
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import NEVER_HANG, Cli
from zeph_providers._cli_common import _Spinner


def _read_until(fd: int, text: str) -> str:
    seen = ""
    deadline = time.monotonic() + NEVER_HANG
    while text not in seen:
        assert time.monotonic() < deadline, seen
        if select.select([fd], [], [], 0.2)[0]:
            seen += os.read(fd, 4096).decode("utf-8", "replace")
    return seen


def _drain(fd: int) -> str:
    seen = ""
    while select.select([fd], [], [], 0.2)[0]:
        seen += os.read(fd, 4096).decode("utf-8", "replace")
    return seen


def test_spinner_draws_on_a_terminal_and_erases_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "w", buffering=1, encoding="utf-8")
    try:
        monkeypatch.setattr(sys, "stderr", terminal)
        spinner = _Spinner("loading the model")
        drawn = _read_until(master, "loading the model (")
        assert drawn.startswith("\r")
        print("zeph-providers: a note from the worker", file=sys.stderr)  # as the local worker prints
        noted = _read_until(master, "a note from the worker")
        assert "\r\x1b[Kzeph-providers: a note" in drawn + noted  # the spinner's line was erased first
        spinner.stop()
        assert sys.stderr is terminal  # restored
        screen = drawn + noted + _drain(master)
        last_draw = screen.rindex("loading the model (")
        assert "\r\x1b[K" in screen[last_draw:]  # its last frame was erased: nothing left on screen
    finally:
        terminal.close()
        os.close(master)


def test_no_spinner_off_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with (tmp_path / "err.txt").open("w") as plain:
        monkeypatch.setattr(sys, "stderr", plain)
        spinner = _Spinner("loading")
        assert sys.stderr is plain
        spinner.stop()
    assert (tmp_path / "err.txt").read_text() == ""


@pytest.mark.slow
def test_local_model_load_shows_progress_and_embed_output_stays_clean(cli: Cli, terminal: Any) -> None:
    """The built-in default's SmolLM2 (llama.cpp engine) on a pty; then `embed` (transformers encoder) on pipes."""
    term = terminal("chat", "local", "Say hi.", "--max-tokens", "4", "--no-log")
    assert term.wait() == 0
    assert "local: loading the model and starting the reply (" in term.output
    embedded = cli("embed", "local", "hello")
    assert embedded.returncode == 0, embedded.stderr
    vector = json.loads(embedded.stdout)  # stdout is the vector and nothing else
    assert isinstance(vector, list) and len(vector) == 384
    assert "loading" not in embedded.stderr and "%|" not in embedded.stderr  # no spinner, no progress bars
