"""Helpers for the CLI tests: the command in a subprocess (pipes) or on a real pseudo-terminal.

Every run gets its own per-user config folder and data folder (`ZEPH_PROVIDERS_CONFIG_HOME`,
`ZEPH_PROVIDERS_DATA_DIR`), so nothing reads or writes the real home folder.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NEVER_HANG = 120.0  # a bound that only stops a hang; no test asserts on time


def cli_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in {"ZEPH_PROVIDERS_CONFIG", "ZEPH_PROVIDERS_NO_LOG"}}
    environ["PYTHONPATH"] = str(REPO) + os.pathsep + environ.get("PYTHONPATH", "")
    environ["ZEPH_PROVIDERS_CONFIG_HOME"] = str(home / "user-config")
    environ["ZEPH_PROVIDERS_DATA_DIR"] = str(home / "user-data")
    environ["NO_COLOR"] = "1"
    environ.update(extra or {})
    return environ


class Cli:
    """`python -m zeph_providers ...` in `cwd`, with private user folders under `home`."""

    def __init__(self, cwd: Path, home: Path) -> None:
        self.cwd = cwd
        self.home = home

    @property
    def data_dir(self) -> Path:
        return self.home / "user-data"

    @property
    def config_home(self) -> Path:
        return self.home / "user-config"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return cli_env(self.home, extra)

    def __call__(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "zeph_providers", *args],
            cwd=self.cwd,
            env=self.env(env),
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            text=True,
            timeout=NEVER_HANG,
            check=False,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(work, tmp_path)


@pytest.fixture
def write(tmp_path: Path) -> object:
    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


class Terminal:
    """The command on a pseudo-terminal (its controlling terminal: Ctrl-C is a real SIGINT)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec at once, nothing else
            os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, "-m", "zeph_providers", *args], env)
        self.pid = pid
        self.fd = fd
        self.output = ""
        self._seen = 0
        self.exit_code: int | None = None

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], wait)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not data:
            return False
        self.output += data.decode("utf-8", "replace")
        return True

    def expect(self, text: str, timeout: float = NEVER_HANG) -> str:
        """Read until `text` appears after what earlier expects consumed; returns the output in between."""
        deadline = time.monotonic() + timeout
        while text not in self.output[self._seen :]:
            if time.monotonic() > deadline or not self._read(0.2):
                raise AssertionError(f"never saw {text!r}; output so far:\n{self.output}")
        end = self.output.index(text, self._seen) + len(text)
        between = self.output[self._seen : end]
        self._seen = end
        return between

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode("utf-8"))

    def wait(self, timeout: float = NEVER_HANG) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.1)
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                while self._read(0.05) and select.select([self.fd], [], [], 0)[0]:
                    pass
                self.exit_code = os.waitstatus_to_exitcode(status)
                assert "Traceback" not in self.output, self.output
                return self.exit_code
        raise AssertionError(f"the command did not exit; output:\n{self.output}")

    def close(self) -> None:
        if self.exit_code is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)


@pytest.fixture
def terminal(cli: Cli) -> Iterator[object]:
    opened: list[Terminal] = []

    def start(*args: str) -> Terminal:
        term = Terminal(list(args), cli.cwd, cli.env())
        opened.append(term)
        return term

    yield start
    for term in opened:
        term.close()
