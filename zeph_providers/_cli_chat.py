"""`zeph-providers chat`: one reply, or (no prompt, on a terminal) the REPL in `_cli_repl`.

```
zeph-providers chat "Hi"                  the [llm].default provider (else the first one)
zeph-providers chat NAME "Hi"             a named provider
zeph-providers chat NAME                  NAME alone: the REPL on a terminal, else the prompt from stdin
cat notes.md | zeph-providers chat "Summarise this"     the prompt, a blank line, then stdin
zeph-providers chat -c "And then?"        continue the last conversation (with its provider)
zeph-providers chat -a photo.png "What is this?"        attach an image or a document
```

How the positionals read (one rule, documented in docs/cli.md): two of them are NAME PROMPT; one
is NAME when a provider of that name is configured, else the PROMPT for the default provider
(with a note on stderr when it looks like a mistyped provider name); `-p/--provider NAME` makes
every positional the prompt. More than two is a usage error (quote the prompt).

Stdin is read only when it is a pipe, a file or a socket (never a terminal, and not /dev/null),
so a command run from a script without input never waits on it.

Every finished exchange is recorded in the conversation log (`_cli_store`) unless `--no-log`.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import mimetypes
import os
import re
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zeph_providers._cli_common import (
    EXIT_OK,
    _close,
    _err,
    _open_registry,
    _out,
    _UsageError,
)

if TYPE_CHECKING:
    from zeph_providers.registry import Registry
    from zeph_providers.types import ChatResponse, Part

from zeph_providers._cli_turns import (
    continued,
    conversation_messages,
    first_messages,
    loading_label,
    open_store,
    record,
    stream_reply,
)

_MODEL_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


# ----- inputs -----------------------------------------------------------------------------


def stdin_is_piped() -> bool:
    """True when stdin is a pipe, file or socket (not a terminal, not a character device)."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


def stdin_is_terminal() -> bool:
    try:
        return sys.stdin.isatty()
    except (OSError, ValueError, AttributeError):
        return False


def _read_stdin() -> str:
    try:
        return sys.stdin.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise _UsageError(f"cannot read stdin: {exc}") from exc


def resolve_target(args: argparse.Namespace, registry: Registry) -> tuple[str | None, str | None]:
    """(provider name or None for "the default", prompt or None) from the positionals."""
    words: list[str] = list(args.words)
    if args.provider is not None:
        if len(words) > 1:
            raise _UsageError("with --provider, give the prompt as one argument (quote it)")
        return args.provider, words[0] if words else None
    if len(words) > 2:
        raise _UsageError(f"expected [NAME] [PROMPT], got {len(words)} arguments; quote the prompt")
    if len(words) == 2:
        return words[0], words[1]
    if len(words) == 1:
        if words[0] in registry:
            return words[0], None
        close = difflib.get_close_matches(words[0], registry.names(), n=1, cutoff=0.75)
        if close and " " not in words[0]:
            _err(f"note: {words[0]!r} is not a provider, so it is the prompt (did you mean {close[0]!r}?)")
        return None, words[0]
    return None, None


def combine_prompt(prompt: str | None) -> str | None:
    """The prompt with piped stdin appended (`-` for the prompt: stdin alone)."""
    if prompt == "-":
        text = _read_stdin()
        if not text.strip():
            raise _UsageError("stdin was empty")
        return text.rstrip("\n")
    if not stdin_is_piped():
        return prompt
    piped = _read_stdin().rstrip("\n")
    if not piped.strip():
        return prompt
    return f"{prompt}\n\n{piped}" if prompt else piped


def attachment(path_text: str) -> Part:
    """An image (`ImagePart`) or a document (`DocumentPart`: PDF bytes, else UTF-8 text) from a file."""
    from zeph_providers.types import DocumentPart, ImagePart

    path = Path(path_text)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _UsageError(f"-a {path_text}: cannot read it ({exc.strerror or exc})") from None
    mime = mimetypes.guess_type(path.name)[0] or ""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        mime = "image/png"
    elif data.startswith(b"\xff\xd8\xff"):
        mime = "image/jpeg"
    elif data.startswith(b"%PDF-"):
        mime = "application/pdf"
    if mime.startswith("image/"):
        return ImagePart(data=data, mime_type=mime)
    if mime == "application/pdf":
        return DocumentPart(data=data, mime_type=mime, title=path.name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _UsageError(
            f"-a {path_text}: not an image, a PDF or UTF-8 text ({mime or 'unknown type'}); "
            "nothing else can be attached"
        ) from None
    return DocumentPart(text=text, title=path.name)


def json_object(text: str, flag: str) -> dict[str, Any]:
    """A JSON object given inline or as @FILE."""
    source = text
    if text.startswith("@"):
        try:
            source = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise _UsageError(f"{flag}: cannot read {text[1:]!r}: {exc.strerror or exc}") from None
    try:
        value = json.loads(source)
    except ValueError as exc:
        raise _UsageError(f"{flag}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _UsageError(f"{flag}: expected a JSON object")
    return value


def response_schema(text: str) -> Any:
    """`--schema`: a JSON schema (inline or @FILE), or `module:Model`, a pydantic model class."""
    if not _MODEL_PATH.match(text):
        return json_object(text, "--schema")
    import importlib

    from pydantic import BaseModel

    module_name, _, attribute = text.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `module:Model` from the current folder, as `python -m` finds it
    try:
        value: Any = importlib.import_module(module_name)
        for piece in attribute.split("."):
            value = getattr(value, piece)
    except (ImportError, AttributeError) as exc:
        raise _UsageError(f"--schema {text}: cannot import it ({type(exc).__name__}: {exc})") from None
    if not (isinstance(value, type) and issubclass(value, BaseModel)):
        raise _UsageError(f"--schema {text}: not a pydantic model class")
    return value


def tool_definition(value: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from zeph_providers.types import ToolDefinition

    try:
        return ToolDefinition.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'tool'}: {e['msg']}" for e in exc.errors())
        raise _UsageError(f"--tool {json.dumps(value)[:80]}: {problems}") from None


def call_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name in ("max_tokens", "temperature", "top_p", "timeout", "seed", "tool_choice"):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    if args.stop:
        options["stop"] = list(args.stop)
    if args.schema is not None:
        options["response_format"] = response_schema(args.schema)
    if args.tool:
        options["tools"] = [tool_definition(json_object(tool, "--tool")) for tool in args.tool]
    return options




def _chat(args: argparse.Namespace, registry: Registry, runner: asyncio.Runner) -> int:
    from zeph_providers.types import Message

    name, prompt = resolve_target(args, registry)
    options = call_options(args)
    parts = [attachment(path) for path in args.attach or ()]
    prompt = combine_prompt(prompt)
    store = open_store(args)
    conversation, previous_provider, history = continued(args, store)
    if name is None and previous_provider is not None and previous_provider in registry:
        name = previous_provider
    name = name or registry.config.default or (registry.names()[0] if registry.names() else None)
    if name is None:
        raise _UsageError("the config declares no provider")
    if prompt is None:
        if args.json:
            raise _UsageError("--json needs a prompt")
        if not stdin_is_terminal():
            raise _UsageError("no prompt: give one, pipe it on stdin, or run on a terminal for the REPL")
        from zeph_providers._cli_repl import Repl

        return Repl(args, registry, name, options, store, conversation, history, parts).run(runner)

    shown: list[bool] = []

    async def once() -> ChatResponse:
        provider = registry.get(name)
        added = first_messages(args.system, history, prompt, parts)
        messages = conversation_messages(history, added)
        label = loading_label(registry, name)
        response = await stream_reply(provider, messages, options, quiet=args.json, label=label, shown=shown)
        record(store, conversation, provider, [*added, Message.assistant(response.text)], prompt, response)
        return response

    try:
        response = runner.run(once())
    except KeyboardInterrupt as exc:
        exc.line_ended = bool(shown)  # type: ignore[attr-defined]  # the partial reply got its newline
        raise
    if args.json:
        _out(response.model_dump_json(indent=2))
    return EXIT_OK


def cmd_chat(args: argparse.Namespace) -> int:
    from zeph_providers._cli_common import _explain
    from zeph_providers.errors import LlmError

    with asyncio.Runner() as runner:
        registry = _open_registry(args)
        try:
            return _chat(args, registry, runner)
        except LlmError as exc:
            exc.cli_message = _explain(exc, registry)  # type: ignore[attr-defined]
            raise
        finally:
            runner.run(_close(registry))
