"""The turn helpers `chat` and the REPL share: stream one reply, log it, build the history.

Apart from `_cli_chat` (argument handling, the one-shot reply) so that `_cli_repl` can use them
without importing the command that starts it (no import circle).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from zeph_providers._cli_common import _dim, _err, _out, _progress, _UsageError

if TYPE_CHECKING:
    import argparse

    from zeph_providers._cli_store import Store
    from zeph_providers.protocol import LlmProvider
    from zeph_providers.registry import Registry
    from zeph_providers.types import ChatResponse, Message, Part

# ----- one reply, streamed --------------------------------------------------------------------


async def stream_reply(
    provider: LlmProvider,
    messages: list[Message],
    options: dict[str, Any],
    *,
    quiet: bool = False,
    label: str | None = None,
    shown: list[bool] | None = None,
) -> ChatResponse:
    """Stream one reply to stdout (thinking and tool calls to stderr); `quiet` prints nothing.

    A spinner (`label`, terminals only) runs until the first chunk arrives. Cancelling (Ctrl-C)
    leaves the `async with`, which closes the stream, so a local model stops generating; the
    partial line still gets its newline. `shown` (when given) gets True once text was printed.
    """
    from zeph_providers.types import ContentChunk, ThinkingChunk, ToolUseChunk

    in_thinking = False
    wrote_text = False
    with _progress(label or "waiting for the reply") as spinner:
        if label is None:
            spinner.stop()
        stream = provider.chat_stream(messages, **options)
        try:
            async with stream:
                async for chunk in stream:
                    spinner.stop()
                    if quiet:
                        continue
                    if isinstance(chunk, ContentChunk):
                        if in_thinking:
                            sys.stderr.write("\n")
                            sys.stderr.flush()
                            in_thinking = False
                        sys.stdout.write(chunk.text)
                        sys.stdout.flush()
                        wrote_text = wrote_text or bool(chunk.text)
                        if shown is not None and wrote_text:
                            shown[:] = [True]
                    elif isinstance(chunk, ThinkingChunk):
                        sys.stderr.write(_dim(chunk.text, sys.stderr))
                        sys.stderr.flush()
                        in_thinking = in_thinking or bool(chunk.text)
                    elif isinstance(chunk, ToolUseChunk):
                        call = chunk.tool_call
                        line = f"[tool call {call.name}({json.dumps(call.arguments)}) id={call.id}]"
                        _out(_dim(line, sys.stderr), stream=sys.stderr)
        finally:
            if in_thinking:
                sys.stderr.write("\n")
            if wrote_text:
                _out()
    response = stream.response
    if not quiet and response.finish_reason == "length":
        _err(f"note: the reply was cut at the token limit ({response.usage.output_tokens} tokens)")
    return response


def loading_label(registry: Registry, name: str) -> str | None:
    """What the spinner says before a provider's first reply: local models load on first use."""
    config = registry.config.provider(name)
    if config is not None and config.type == "local":
        return f"{name}: loading the model and starting the reply"
    return None


def open_store(args: argparse.Namespace) -> Store | None:
    from zeph_providers._cli_store import Store, logging_disabled

    if getattr(args, "no_log", False) or logging_disabled():
        return None
    return Store()


def record(store: Store | None, conversation: str | None, provider: LlmProvider, added: list[Message],
           prompt: str, response: ChatResponse) -> str | None:
    """Log one exchange (creating the conversation on the first); a failing store only warns."""
    if store is None:
        return conversation
    import sqlite3

    try:
        if conversation is None:
            conversation = store.new_conversation(provider.name, provider.model)
        store.record(
            conversation,
            provider=provider.name,
            model=response.model or provider.model,
            prompt=prompt,
            response=response.text,
            messages=added,
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
        )
    except (sqlite3.Error, OSError) as exc:
        _err(f"warning: the conversation log at {store.path} failed ({type(exc).__name__}: {exc}); not recorded")
    return conversation


def continued(args: argparse.Namespace, store: Store | None) -> tuple[str | None, str | None, list[Message]]:
    """(conversation id, its provider, its messages) for `-c` / `--cid`; (None, None, []) otherwise."""
    wanted: str | None = getattr(args, "cid", None)
    if not (args.cont or wanted):
        return None, None, []
    if store is None:
        raise _UsageError("--continue needs the conversation log, which --no-log / $ZEPH_PROVIDERS_NO_LOG turn off")
    found = store.conversation(wanted) if wanted else store.last_conversation()
    if found is None:
        raise _UsageError(f"no conversation {wanted!r} in the log" if wanted else "no conversation to continue yet")
    return found.id, found.provider, store.history(found.id)


# ----- the command ----------------------------------------------------------------------------


def first_messages(system: str | None, history: list[Message], prompt: str, parts: list[Part]) -> list[Message]:
    """What a turn adds: the system message (when given), then the user message with attachments."""
    from zeph_providers.types import Message

    added: list[Message] = [Message.system(system)] if system else []
    user = Message.user(prompt)
    if parts:
        user = Message(role=user.role, parts=(*user.parts, *parts))
    return [*added, user]


def conversation_messages(history: list[Message], added: list[Message]) -> list[Message]:
    """The request: one system message first (a new one replaces the old), then history, then the turn."""
    systems = [m for m in added if m.role == "system"] or [m for m in history if m.role == "system"][-1:]
    return [*systems, *(m for m in history if m.role != "system"), *(m for m in added if m.role != "system")]
