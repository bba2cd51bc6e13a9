"""The interactive chat: `zeph-providers chat [NAME]` with no prompt, on a terminal.

```
> Hello                  a turn: the reply streams; the history grows
> /system Be brief.      set (or, without text, drop) the system message
> /clear                 forget the history (and start a new logged conversation)
> /exit                  leave (also /quit and Ctrl-D)
```

Decisions:
- Each turn runs on one `asyncio.Runner` shared by the whole session, so providers (HTTP clients,
  the local model's worker) are built once and live across turns. `input()` runs outside the
  loop: the Runner's SIGINT handling is active only while a reply streams.
- Ctrl-C while a reply streams cancels that turn's task: the `async with stream` closes the
  stream (a local model stops generating), a newline ends the partial line, and the turn is
  left out of the history (and the log). Ctrl-C at the prompt clears the line, as a shell does.
- The history is in memory; each finished turn is also appended to the conversation log, so
  `chat -c` later continues where the session stopped.
- `readline` (when the platform has it) gives line editing and up-arrow recall.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, Any

from zeph_providers._cli_common import EXIT_OK, _dim, _err, _explain
from zeph_providers._cli_turns import conversation_messages, first_messages, loading_label, record, stream_reply

if TYPE_CHECKING:
    from zeph_providers._cli_store import Store
    from zeph_providers.registry import Registry
    from zeph_providers.types import Message, Part

PROMPT = "> "
HELP = (
    "/system TEXT sets the system message, /clear forgets the history, /exit (or Ctrl-D) leaves; "
    "Ctrl-C stops a reply"
)


class Repl:
    def __init__(
        self,
        args: argparse.Namespace,
        registry: Registry,
        name: str,
        options: dict[str, Any],
        store: Store | None,
        conversation: str | None,
        history: list[Message],
        parts: list[Part],
    ) -> None:
        self.registry = registry
        self.name = name
        self.options = options
        self.store = store
        self.conversation = conversation
        self.history = list(history)
        self.system: str | None = args.system
        self._system_sent: str | None = next((m.text for m in reversed(history) if m.role == "system"), None)
        self.parts = list(parts)  # `-a` files go with the first turn
        self._loaded = False

    def _say(self, text: str) -> None:
        sys.stderr.write(_dim(text, sys.stderr) + "\n")
        sys.stderr.flush()

    def run(self, runner: asyncio.Runner) -> int:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing for input())
        config = self.registry.config.provider(self.name)
        model = config.model_name if config is not None else ""
        resumed = f", continuing {len(self.history)} messages" if self.history else ""
        self._say(f"Chatting with {self.name} ({model or '-'}){resumed}. {HELP}.")
        while True:
            try:
                line = input(PROMPT)
            except EOFError:
                sys.stdout.write("\n")
                break
            except KeyboardInterrupt:
                sys.stdout.write("\n")
                continue
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                if self._command(text):
                    break
                continue
            shown: list[bool] = []
            try:
                runner.run(self._turn(line, shown))
            except KeyboardInterrupt:
                if not shown:  # a partial reply got its newline already
                    sys.stdout.write("\n")
                    sys.stdout.flush()
                self._say("[reply cancelled]")
            except Exception as exc:
                from zeph_providers.errors import LlmError, redact

                if isinstance(exc, LlmError):
                    _err(f"error: {_explain(exc, self.registry)}")
                else:
                    _err(f"error: unexpected {type(exc).__name__}: {redact(str(exc))}")
        sys.stdout.flush()
        return EXIT_OK

    def _command(self, text: str) -> bool:
        """Run a /command; True to leave."""
        command, _, rest = text.partition(" ")
        rest = rest.strip()
        if command in ("/exit", "/quit"):
            return True
        if command == "/system":
            self.system = rest or None
            self._say(f"system message set: {rest}" if rest else "system message removed")
        elif command == "/clear":
            self.history = []
            self.conversation = None
            self._system_sent = None
            self._say("history cleared")
        elif command == "/help":
            self._say(HELP)
        else:
            self._say(f"unknown command {command}; {HELP}")
        return False

    async def _turn(self, prompt: str, shown: list[bool]) -> None:
        from zeph_providers.types import Message

        provider = self.registry.get(self.name)
        new_system = self.system if self.system != self._system_sent else None
        added = first_messages(new_system, self.history, prompt, self.parts)
        if self.system is None and self._system_sent is not None:  # /system with no text
            self.history = [m for m in self.history if m.role != "system"]
            self._system_sent = None
        label = None if self._loaded else loading_label(self.registry, self.name)
        messages = conversation_messages(self.history, added)
        response = await stream_reply(provider, messages, self.options, label=label, shown=shown)
        self._loaded = True
        self.parts = []
        assistant = Message.assistant(response.text)
        if new_system is not None:
            self.history = [m for m in self.history if m.role != "system"]
            self._system_sent = new_system
        self.history.extend([*added, assistant])
        self.conversation = record(self.store, self.conversation, provider, [*added, assistant], prompt, response)
