"""The interactive chat on a real pseudo-terminal: turns with history, streaming, Ctrl-C, /commands, exits."""

from __future__ import annotations

from typing import Any

from tests.cli.conftest import Cli
from zeph_providers._cli_store import Store

LONG = "This reply is long and slow on purpose, so that it can be interrupted half way through. " * 3

CONFIG = f"""\
[llm]
default = "mock"

[[llm.providers]]
name = "mock"
type = "mock"
responses = ["First reply.", "Second reply."]

[[llm.providers]]
name = "slow"
type = "mock"
responses = [{LONG!r}, "Done."]
chunk_size = 2
delay_secs = 0.05
"""


def _config(cli: Cli) -> str:
    path = cli.cwd / "zeph.toml"
    path.write_text(CONFIG.replace("'", '"'), encoding="utf-8")
    return str(path)


def test_two_turns_keep_history_and_exit(cli: Cli, terminal: Any) -> None:
    _config(cli)
    term = terminal("chat")
    banner = term.expect("> ")
    assert "Chatting with mock" in banner and "/exit" in banner
    term.send("hello there\r")
    assert "First reply." in term.expect("> ")
    term.send("and again\r")
    assert "Second reply." in term.expect("> ")
    term.send("/exit\r")
    assert term.wait() == 0

    store = Store(cli.data_dir / "logs.db")
    exchanges = store.exchanges(limit=10)
    assert [e.prompt for e in exchanges] == ["hello there", "and again"]
    assert exchanges[0].conversation_id == exchanges[1].conversation_id
    # the mock counts the words of everything it is sent: the second turn carried the first
    assert exchanges[0].input_tokens == 2
    assert exchanges[1].input_tokens == 2 + 2 + 2  # hello there / First reply. / and again
    history = store.history(exchanges[0].conversation_id)
    assert [(m.role, m.text) for m in history] == [
        ("user", "hello there"),
        ("assistant", "First reply."),
        ("user", "and again"),
        ("assistant", "Second reply."),
    ]


def test_ctrl_c_cancels_the_reply_not_the_session(cli: Cli, terminal: Any) -> None:
    _config(cli)
    term = terminal("chat", "slow")
    term.expect("> ")
    term.send("tell me something long\r")
    partial = term.expect("is long")  # streaming: part of the reply is on screen while the rest is coming
    assert "Done." not in partial
    term.send("\x03")  # Ctrl-C, through the terminal: a real SIGINT
    after = term.expect("[reply cancelled]")
    assert LONG.strip() not in term.output  # it stopped before the end
    assert "\n" in after  # a newline ended the partial line
    term.expect("> ")
    term.send("still there?\r")
    assert "Done." in term.expect("> ")
    term.send("\x04")  # Ctrl-D leaves too
    assert term.wait() == 0

    exchanges = Store(cli.data_dir / "logs.db").exchanges(limit=10)
    assert [e.prompt for e in exchanges] == ["still there?"]  # the cancelled turn is not kept
    assert exchanges[0].input_tokens == 2  # ... nor sent again as history


def test_system_and_clear(cli: Cli, terminal: Any) -> None:
    _config(cli)
    term = terminal("chat", "mock")
    term.expect("> ")
    term.send("/system Be terse.\r")
    assert "system message set" in term.expect("> ")
    term.send("one\r")
    term.expect("First reply.")
    term.expect("> ")
    term.send("/clear\r")
    assert "history cleared" in term.expect("> ")
    term.send("two\r")
    term.expect("Second reply.")
    term.expect("> ")
    term.send("/bogus\r")
    assert "unknown command /bogus" in term.expect("> ")
    term.send("/exit\r")
    assert term.wait() == 0

    store = Store(cli.data_dir / "logs.db")
    conversations = store.conversations()
    assert len(conversations) == 2  # /clear started a new one
    first = store.history(conversations[1].id)
    expected = [("system", "Be terse."), ("user", "one"), ("assistant", "First reply.")]
    assert [(m.role, m.text) for m in first] == expected
    second = store.exchanges(conversation_id=conversations[0].id)
    # the system message stays after /clear; only the history went: Be terse. + two
    assert second[0].input_tokens == 3


def test_continue_in_the_repl(cli: Cli, terminal: Any) -> None:
    path = _config(cli)
    first = cli("--config", path, "chat", "hello there")
    assert first.returncode == 0, first.stderr
    term = terminal("chat", "-c")
    assert "continuing 2 messages" in term.expect("> ")
    term.send("more\r")
    term.expect("> ")
    term.send("/exit\r")
    assert term.wait() == 0
    exchanges = Store(cli.data_dir / "logs.db").exchanges()
    assert len(exchanges) == 2 and exchanges[0].conversation_id == exchanges[1].conversation_id
    assert exchanges[1].input_tokens == 2 + 2 + 1


def test_ctrl_c_in_a_one_shot_reply_exits_130_with_one_newline(cli: Cli, terminal: Any) -> None:
    _config(cli)
    term = terminal("chat", "slow", "tell me something long")
    term.expect("is long")
    term.send("\x03")
    assert term.wait() == 130
    tail = term.output[term.output.index("is long") :]
    assert tail.endswith("\r\n") and not tail.endswith("\r\n\r\n"), repr(tail)
    assert "Done." not in term.output
    assert Store(cli.data_dir / "logs.db").exchanges() == []  # nothing recorded for a cancelled reply
