"""The llama.cpp engine's constrained-decoding helpers: phase logic and the GGUF header reader.

The header reader is checked on small GGUF files written by the `gguf` package's own writer.

llama.cpp is replaced by a scripted `call` (the seam `run_phases` is given): what each request
returns is written out, so rearming, the shared budget and the end conditions are checked exactly.
The same phases against the real model are in tests/local/test_llamacpp_constrained.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("xllamacpp")
pytest.importorskip("llguidance")

from zeph_providers.errors import ConfigError
from zeph_providers.local.engine import Constraint, GenerationParams, Prepared
from zeph_providers.local.llamacpp_constrained import (
    Phase,
    gguf_chat_template,
    read_gguf_template,
    rendering_templates,
    run_phases,
)

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


class Script:
    """Answers each request with the next scripted phase; records (prompt, constrained?, watched)."""

    def __init__(self, *phases: Phase) -> None:
        self.phases = list(phases)
        self.seen: list[tuple[str, bool, str | None, int]] = []

    def __call__(self, body: dict[str, Any], watch: str | None) -> Phase:
        self.seen.append((body["prompt"], "grammar" in body, watch, body["max_tokens"]))
        return self.phases.pop(0)


def _run(script: Script, constraint: Constraint, max_tokens: int = 100, prefill: str = "") -> Any:
    prepared = Prepared(prompt="P" + prefill, prefill=prefill, constraint=constraint)
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
    return run_phases(prepared, params, {"stream": True}, script, cancelled=lambda: False)


def test_free_then_value_then_free_without_rearm() -> None:
    script = Script(
        Phase("hi <t>", None, 10, 3, triggered=True),
        Phase('{"a": 1}', "stop", 13, 5),
        Phase(" bye <t> more", "stop", 18, 4),
    )
    result = _run(script, Constraint(SCHEMA, trigger="<t>"))
    assert [(constrained, watch) for _, constrained, watch, _ in script.seen] == [
        (False, "<t>"),
        (True, None),
        (False, None),  # not rearmed: the second "<t>" is free text
    ]
    assert [prompt for prompt, *_ in script.seen] == ["P", "Phi <t>", 'Phi <t>{"a": 1}']
    assert [budget for *_, budget in script.seen] == [100, 97, 92]
    assert (result.prompt_tokens, result.completion_tokens, result.finish_reason) == (10, 12, "stop")


def test_rearm_watches_again_after_each_value() -> None:
    script = Script(
        Phase("<t>", None, 10, 1, triggered=True),
        Phase('{"a": 1}', "stop", 11, 4),
        Phase("\n<t>", None, 15, 2, triggered=True),
        Phase('{"a": 2}', "stop", 17, 4),
        Phase("", "stop", 21, 1),
    )
    result = _run(script, Constraint(SCHEMA, trigger="<t>", rearm=True))
    assert [(constrained, watch) for _, constrained, watch, _ in script.seen] == [
        (False, "<t>"),
        (True, None),
        (False, "<t>"),
        (True, None),
        (False, "<t>"),
    ]
    assert result.completion_tokens == 12 and result.finish_reason == "stop"


def test_the_budget_is_shared_and_runs_out() -> None:
    script = Script(Phase("ab<t>", None, 10, 4, triggered=True), Phase('{"a": 12', "length", 14, 2))
    result = _run(script, Constraint(SCHEMA, trigger="<t>"), max_tokens=6)
    assert result.finish_reason == "length" and result.completion_tokens == 6
    assert [budget for *_, budget in script.seen] == [6, 2]


def test_trigger_on_the_last_token_is_length() -> None:
    script = Script(Phase("ab<t>", None, 10, 6, triggered=True))
    result = _run(script, Constraint(SCHEMA, trigger="<t>"), max_tokens=6)
    assert result.finish_reason == "length" and len(script.seen) == 1


def test_a_stop_string_inside_the_value_ends_the_reply() -> None:
    script = Script(Phase("<t>", None, 10, 1, triggered=True), Phase('{"a": ', "stop", 11, 2))
    result = _run(script, Constraint(SCHEMA, trigger="<t>", rearm=True))
    assert result.finish_reason == "stop" and len(script.seen) == 2


def test_a_prefill_ending_with_the_trigger_starts_constrained() -> None:
    script = Script(Phase('{"a": 1}', "stop", 10, 4), Phase("", "stop", 14, 1))
    _run(script, Constraint(SCHEMA, trigger="<t>"), prefill="<t>\n")
    assert [constrained for _, constrained, _, _ in script.seen] == [True, False]


def test_without_a_trigger_one_constrained_request() -> None:
    script = Script(Phase('{"a": 1}', "stop", 10, 4))
    result = _run(script, Constraint(SCHEMA))
    assert [constrained for _, constrained, _, _ in script.seen] == [True]
    assert result.completion_tokens == 4


def test_cancelled_phase_ends_the_reply() -> None:
    script = Script(Phase("<t>", None, 10, 1, triggered=True), Phase('{"a"', None, 11, 2, cancelled=True))
    result = _run(script, Constraint(SCHEMA, trigger="<t>"))
    assert len(script.seen) == 2 and result.completion_tokens == 3


# ----- the GGUF header reader --------------------------------------------------------------------


def _gguf(path: Path, template: str | None) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("some.number", 7)
    writer.add_array("some.floats", [1.0, 2.0])
    writer.add_token_list(["<s>", "</s>", "hello"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_add_bos_token(True)
    if template is not None:
        writer.add_chat_template(template)
    writer.add_string("after.template", "x")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


def test_reads_template_and_special_tokens_from_a_gguf_header(tmp_path: Path) -> None:
    header = read_gguf_template(
        _gguf(tmp_path / "m.gguf", "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    )
    assert header.source is not None and header.source.startswith("{{ bos_token }}")
    assert (header.bos_token, header.eos_token, header.add_bos_token) == ("<s>", "</s>", True)
    own, strip_bos = rendering_templates(tmp_path / "m.gguf", None)
    assert own is not None and own.name == "gguf" and strip_bos == "<s>"


def test_a_gguf_without_a_template_renders_chatml(tmp_path: Path) -> None:
    header = read_gguf_template(_gguf(tmp_path / "m.gguf", None))
    assert header.source is None
    assert gguf_chat_template(header).name == "chatml"


def test_an_unreadable_header(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(40))
    assert rendering_templates(bad, None, lenient=True) == (None, "")
    with pytest.raises(ConfigError, match="GGUF header") as info:
        rendering_templates(bad, None, provider="p")
    assert info.value.provider == "p"
