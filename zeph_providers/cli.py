"""The `zeph-providers` command: list, check, chat, embed, config init/show, status.

```
zeph-providers list [--json]            providers: name, type, model, capabilities (no secrets)
zeph-providers check                    validate the config offline; exit 1 with every problem
zeph-providers chat NAME PROMPT         stream a reply (PROMPT "-" reads stdin); --schema for JSON
                                        output, --tool (repeatable) and --tool-choice for tool calls
zeph-providers embed NAME TEXT...       print the vector(s) as JSON, or --dims for a summary
zeph-providers config init [PATH]       write a commented starter config (default ./zeph.toml)
zeph-providers config show              the loaded config as TOML (inline keys never written)
zeph-providers status [--json]          each provider's state (and router health, when it has one)
zeph-providers serve [--host --port]    the OpenAI/Anthropic-compatible gateway (docs/gateway.md)
```

The config comes from `--config PATH`, else `$ZEPH_PROVIDERS_CONFIG`, else `./zeph.toml`, else the
built-in offline default. Exit codes: 0 ok, 1 a library error (one `error: ...` line on stderr),
2 a usage error, 130 interrupted. Only the standard library is imported here at module level.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

__all__ = ["main"]

from zeph_providers._cli_common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    _close,
    _config_path,
    _dim,
    _err,
    _open_registry,
    _out,
    _register_known_secrets,
    _setup_logging,
)
from zeph_providers._cli_inspect import _cmd_list, _cmd_models, _cmd_status
from zeph_providers._cli_serve import add_serve_parser

log = logging.getLogger("zeph_providers.cli")

PROG = "zeph-providers"


class _UsageError(Exception):
    """A mistake in how the command was called (exit 2)."""


# ----- argument parsing ---------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 2.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2, got {value:g}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value:g}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object given inline or as @FILE."""
    source = text
    if text.startswith("@"):
        try:
            source = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]!r}: {exc.strerror or exc}") from None
    try:
        value = json.loads(source)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $ZEPH_PROVIDERS_CONFIG, then ./zeph.toml, then the built-in offline default)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log more (-v info, -vv debug) to stderr",
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Ollama, Claude, OpenAI-compatible and local models behind one provider protocol.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_list = commands.add_parser("list", parents=[common], help="list the configured providers")
    p_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_list.set_defaults(handler=_cmd_list)

    p_check = commands.add_parser("check", parents=[common], help="validate the config (offline)")
    p_check.set_defaults(handler=_cmd_check)

    p_chat = commands.add_parser("chat", parents=[common], help="stream a reply from one provider")
    p_chat.add_argument("name", metavar="NAME", help="provider name (see `list`)")
    p_chat.add_argument("prompt", metavar="PROMPT", help='the user message; "-" reads it from stdin')
    p_chat.add_argument("--system", metavar="TEXT", help="a system message")
    p_chat.add_argument("--max-tokens", type=_positive_int, metavar="N")
    p_chat.add_argument("--temperature", type=_temperature, metavar="T")
    p_chat.add_argument("--timeout", type=_seconds, metavar="SECS", help="deadline for the whole reply")
    p_chat.add_argument("--seed", type=int, metavar="N", help="sampling seed (where the backend takes one)")
    p_chat.add_argument(
        "--schema",
        type=_json_object,
        metavar="JSON|@FILE",
        help="answer with JSON matching this JSON schema (response_format)",
    )
    p_chat.add_argument(
        "--tool",
        type=_json_object,
        action="append",
        metavar="JSON|@FILE",
        help='a tool the model may call: {"name": ..., "description": ..., "parameters": {JSON schema}} (repeatable)',
    )
    p_chat.add_argument(
        "--tool-choice", metavar="CHOICE", help='"auto" (default), "required", "none", or the name of one tool'
    )
    p_chat.add_argument("--json", action="store_true", help="print the final response as JSON instead of streaming")
    p_chat.set_defaults(handler=_cmd_chat)

    p_embed = commands.add_parser("embed", parents=[common], help="embed text with one provider")
    p_embed.add_argument("name", metavar="NAME", help="provider name (see `list`)")
    p_embed.add_argument("texts", metavar="TEXT", nargs="+", help='text(s) to embed; "-" reads stdin')
    p_embed.add_argument("--dims", action="store_true", help="print a summary (count, dimensions) only")
    p_embed.set_defaults(handler=_cmd_embed)

    p_config = commands.add_parser("config", parents=[common], help="write or show a config")
    config_commands = p_config.add_subparsers(dest="config_command", metavar="ACTION")
    p_init = config_commands.add_parser("init", parents=[common], help="write a commented starter config")
    p_init.add_argument("path", metavar="PATH", nargs="?", default="zeph.toml", help="default: ./zeph.toml")
    p_init.add_argument("--force", action="store_true", help="overwrite an existing file")
    p_init.set_defaults(handler=_cmd_config_init)
    p_show = config_commands.add_parser("show", parents=[common], help="print the loaded config as TOML")
    p_show.set_defaults(handler=_cmd_config_show)
    p_config.set_defaults(handler=None, subparser=p_config)

    p_status = commands.add_parser("status", parents=[common], help="build every provider and show its state")
    p_status.add_argument("--json", action="store_true", help="print JSON instead of text")
    p_status.add_argument("--url", metavar="URL", help="ask a running gateway (`serve`) instead: its usage and costs")
    p_status.add_argument("--key-env", metavar="VAR", help="with --url: the environment variable holding a gateway key")
    p_status.set_defaults(handler=_cmd_status)

    p_models = commands.add_parser("models", parents=[common], help="list the models a provider serves")
    p_models.add_argument("name", metavar="NAME", help="provider name (see `list`)")
    p_models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_models.add_argument("--refresh", action="store_true", help="skip the 60 s model-list cache")
    p_models.set_defaults(handler=_cmd_models)

    add_serve_parser(commands, common)
    return parser


def _version() -> str:
    from zeph_providers import __version__

    return __version__


# ----- shared helpers -----------------------------------------------------------------------


def _read_stdin_if_dash(value: str) -> str:
    if value != "-":
        return value
    try:
        text = sys.stdin.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise _UsageError(f"cannot read stdin: {exc}") from exc
    if not text.strip():
        raise _UsageError("stdin was empty")
    return text.rstrip("\n")


# ----- list / status ------------------------------------------------------------------------


# ----- check / config -----------------------------------------------------------------------


def _cmd_check(args: argparse.Namespace) -> int:
    from zeph_providers.registry import Registry

    registry = Registry.discover(_config_path(args))
    config = registry.config
    _register_known_secrets(config)
    names = config.names()
    plural = "s" if len(names) != 1 else ""
    _out(f"OK: {len(names)} provider{plural} ({', '.join(names)}) in {config.source}")
    for provider in config.providers:
        env = getattr(provider, "key_env", None)
        needs_key = getattr(provider, "key_required", False) and getattr(provider, "api_key", None) is None
        if needs_key and env and not os.environ.get(env):
            _err(f"note: {provider.name!r} reads its API key from ${env}, which is not set")
    return EXIT_OK


def _cmd_config_init(args: argparse.Namespace) -> int:
    from zeph_providers.defaults import STARTER_CONFIG_TOML
    from zeph_providers.errors import ConfigError

    path = Path(args.path)
    if path.is_dir():
        path = path / "zeph.toml"
    if path.exists() and not args.force:
        raise ConfigError("already exists; pass --force to overwrite it", source=str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(STARTER_CONFIG_TOML, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the config: {exc.strerror or exc}", source=str(path)) from exc
    _out(f"wrote {path}; check it with: {PROG} --config {path} check")
    return EXIT_OK


def _cmd_config_show(args: argparse.Namespace) -> int:
    from zeph_providers.config import dump_toml
    from zeph_providers.errors import redact

    registry = _open_registry(args)
    _out(f"# source: {registry.config.source}")
    _out(redact(dump_toml(registry.config)), end="")
    return EXIT_OK


# ----- chat / embed -------------------------------------------------------------------------


async def _chat(args: argparse.Namespace) -> int:
    from zeph_providers.types import ContentChunk, Message, ThinkingChunk, ToolUseChunk

    prompt = _read_stdin_if_dash(args.prompt)
    messages = []
    if args.system:
        messages.append(Message.system(args.system))
    messages.append(Message.user(prompt))
    options: dict[str, Any] = {}
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        options["temperature"] = args.temperature
    if args.timeout is not None:
        options["timeout"] = args.timeout
    if args.seed is not None:
        options["seed"] = args.seed
    if args.schema is not None:
        options["response_format"] = args.schema
    if args.tool:
        options["tools"] = [_tool_definition(tool) for tool in args.tool]
    if args.tool_choice is not None:
        options["tool_choice"] = args.tool_choice

    registry = _open_registry(args)
    try:
        provider = registry.get(args.name)
        stream = provider.chat_stream(messages, **options)
        wrote_text = False
        in_thinking = False
        async with stream:
            async for chunk in stream:
                if args.json:
                    continue
                if isinstance(chunk, ContentChunk):
                    if in_thinking:
                        sys.stderr.write("\n")
                        sys.stderr.flush()
                        in_thinking = False
                    sys.stdout.write(chunk.text)
                    sys.stdout.flush()
                    wrote_text = wrote_text or bool(chunk.text)
                elif isinstance(chunk, ThinkingChunk):
                    sys.stderr.write(_dim(chunk.text, sys.stderr))
                    sys.stderr.flush()
                    in_thinking = in_thinking or bool(chunk.text)
                elif isinstance(chunk, ToolUseChunk):
                    call = chunk.tool_call
                    line = f"[tool call {call.name}({json.dumps(call.arguments)}) id={call.id}]"
                    _out(_dim(line, sys.stderr), stream=sys.stderr)
        response = stream.response
    finally:
        await _close(registry)
    if args.json:
        _out(response.model_dump_json(indent=2))
    else:
        if in_thinking:
            sys.stderr.write("\n")
        if wrote_text:
            _out()
        if response.finish_reason == "length":
            _err(f"note: the reply was cut at the token limit ({response.usage.output_tokens} tokens)")
        log.info(
            "finish=%s input_tokens=%d output_tokens=%d",
            response.finish_reason,
            response.usage.input_tokens,
            response.usage.output_tokens,
        )
    return EXIT_OK


def _tool_definition(value: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from zeph_providers.types import ToolDefinition

    try:
        return ToolDefinition.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'tool'}: {e['msg']}" for e in exc.errors())
        raise _UsageError(f"--tool {json.dumps(value)[:80]}: {problems}") from None


def _cmd_chat(args: argparse.Namespace) -> int:
    return asyncio.run(_chat(args))


async def _embed(args: argparse.Namespace) -> int:
    texts = [_read_stdin_if_dash(text) for text in args.texts]
    registry = _open_registry(args)
    try:
        provider = registry.get(args.name)
        vectors = await provider.embed_batch(texts)
    finally:
        await _close(registry)
    if args.dims:
        dims = sorted({len(v) for v in vectors})
        shown = ", ".join(str(d) for d in dims)
        _out(f"{len(vectors)} vector{'s' if len(vectors) != 1 else ''} of {shown} dimensions from {provider.name!r}")
    elif len(vectors) == 1:
        _out(json.dumps(vectors[0]))
    else:
        _out(json.dumps(vectors))
    return EXIT_OK


def _cmd_embed(args: argparse.Namespace) -> int:
    return asyncio.run(_embed(args))


# ----- entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 error, 2 usage, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, --version and argparse's own usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _setup_logging(getattr(args, "verbose", 0) or 0)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        target = getattr(args, "subparser", parser)
        target.print_help(sys.stderr)
        return EXIT_USAGE
    from zeph_providers.errors import LlmError, redact

    try:
        return handler(args)
    except KeyboardInterrupt:
        _flush_quietly()
        return EXIT_INTERRUPTED
    except _UsageError as exc:
        _err(f"{PROG}: error: {exc}")
        return EXIT_USAGE
    except LlmError as exc:
        _flush_quietly()
        _err(f"error: {exc}")
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`| head`); stop quietly without a second error at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as exc:
        # No traceback: it could quote a secret from a local's repr; the type and message suffice.
        _flush_quietly()
        _err(f"error: unexpected {type(exc).__name__}: {redact(str(exc))}")
        return EXIT_ERROR


def _flush_quietly() -> None:
    try:
        sys.stdout.write("")
        sys.stdout.flush()
    except Exception:
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
