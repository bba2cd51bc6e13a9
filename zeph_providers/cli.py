"""The `zeph-providers` command: list, check, chat, logs, embed, models, status, config init/show/schema/path.

```
zeph-providers list [--json] [--capabilities]   providers from the config alone (builds nothing, no SDK)
zeph-providers check                    validate the config offline; exit 1 with every problem
zeph-providers chat [NAME] [PROMPT]     stream a reply (default provider without NAME; piped stdin is
                                        appended; no prompt on a terminal: the REPL, `_cli_repl`);
                                        -c/--continue, -a FILE, --schema, --tool, --seed, --top-p, --stop
zeph-providers logs [-n N]              the conversation log (`_cli_store`, SQLite in the user data dir)
zeph-providers embed NAME TEXT...       print the vector(s) as JSON, or --dims for a summary
zeph-providers models NAME              the models a provider's server offers
zeph-providers status [--probe]         each provider's state in THIS process; --probe: a cheap request each
zeph-providers config init [PATH|--user]   write a commented starter config (default ./zeph.toml)
zeph-providers config show              the loaded config as TOML (inline keys never written)
zeph-providers config schema            the config's JSON Schema (`_cli_schema`; docs/zeph.schema.json)
zeph-providers config path              which config file the commands use
zeph-providers status --url URL         a running gateway's usage and costs (`serve`)
zeph-providers serve [--host --port]    the OpenAI/Anthropic-compatible gateway (docs/gateway.md)
```

The config comes from `--config PATH`, else `$ZEPH_PROVIDERS_CONFIG`, else `./zeph.toml`, else the
per-user file (`zeph_providers._paths.user_config_file`), else the built-in offline default
(`Registry.discover`). Exit codes: 0 ok, 1 a library error (one `error: ...` line on stderr, with
"did you mean" for an unknown provider and the URL tried for a connection failure), 2 a usage
error, 130 interrupted (a newline after the ^C). Only the standard library is imported here at
module level; each command imports what it needs when it runs. The CLI turns off Hugging Face
and transformers progress bars (environment defaults set before they import).
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
from typing import TYPE_CHECKING

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
    _err,
    _explain,
    _open_registry,
    _out,
    _progress,
    _register_known_secrets,
    _setup_logging,
    _UsageError,
    number_type,
)
from zeph_providers._cli_inspect import _cmd_list, _cmd_models, _cmd_status
from zeph_providers._cli_serve import add_serve_parser

log = logging.getLogger("zeph_providers.cli")

PROG = "zeph-providers"


# ----- argument parsing ---------------------------------------------------------------------


_positive_int = number_type(int, "a whole number", lambda v: v >= 1, "at least 1")
_temperature = number_type(float, "a number", lambda v: 0.0 <= v <= 2.0, "between 0 and 2")
_seconds = number_type(float, "a number of seconds", lambda v: v > 0, "positive")
_top_p = number_type(float, "a number", lambda v: 0.0 < v <= 1.0, "above 0 and at most 1")


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
    p_list.add_argument(
        "--capabilities", action="store_true", help="also build each provider to show its capabilities (slower)"
    )
    p_list.set_defaults(handler=_cmd_list)

    p_check = commands.add_parser("check", parents=[common], help="validate the config (offline)")
    p_check.set_defaults(handler=_cmd_check)

    # `chat` has its own -c (--continue, as in simonw/llm): its --config is long-only there.
    chat_common = argparse.ArgumentParser(add_help=False)
    chat_common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="config file")
    chat_common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="log more")
    p_chat = commands.add_parser(
        "chat",
        parents=[chat_common],
        help="stream a reply (no prompt on a terminal: an interactive chat)",
        description=(
            "Two positionals are NAME PROMPT; one is NAME when such a provider is configured, else the PROMPT "
            "for [llm].default. Piped stdin is appended to the prompt. With no prompt on a terminal: the REPL."
        ),
    )
    p_chat.add_argument("words", metavar="[NAME] [PROMPT]", nargs="*", help='provider and/or prompt; "-" reads stdin')
    p_chat.add_argument("-p", "--provider", metavar="NAME", help="the provider; every positional is then the prompt")
    p_chat.add_argument("-c", "--continue", dest="cont", action="store_true", help="continue the last conversation")
    p_chat.add_argument("--cid", metavar="ID", help="continue this conversation (ids: `logs`)")
    p_chat.add_argument("-a", "--attach", action="append", metavar="FILE", help="attach an image or a document")
    p_chat.add_argument("--system", metavar="TEXT", help="a system message")
    p_chat.add_argument("--max-tokens", type=_positive_int, metavar="N")
    p_chat.add_argument("--temperature", type=_temperature, metavar="T")
    p_chat.add_argument("--top-p", type=_top_p, metavar="P", help="nucleus sampling (0 < P <= 1)")
    p_chat.add_argument("--stop", action="append", metavar="TEXT", help="a stop sequence (repeatable)")
    p_chat.add_argument("--timeout", type=_seconds, metavar="SECS", help="deadline for the whole reply")
    p_chat.add_argument("--seed", type=int, metavar="N", help="sampling seed (where the backend takes one)")
    p_chat.add_argument(
        "--schema",
        metavar="JSON|@FILE|MODULE:CLASS",
        help="answer with JSON matching this JSON schema or pydantic model class (response_format)",
    )
    p_chat.add_argument(
        "--tool",
        action="append",
        metavar="JSON|@FILE",
        help='a tool the model may call: {"name": ..., "description": ..., "parameters": {JSON schema}} (repeatable)',
    )
    p_chat.add_argument(
        "--tool-choice", metavar="CHOICE", help='"auto" (default), "required", "none", or the name of one tool'
    )
    p_chat.add_argument("--json", action="store_true", help="print the final response as JSON instead of streaming")
    p_chat.add_argument("--no-log", action="store_true", help="do not record this exchange in the conversation log")
    p_chat.set_defaults(handler=_cmd_chat)

    p_logs = commands.add_parser("logs", parents=[common], help="recent exchanges from the conversation log")
    p_logs.add_argument("-n", "--count", type=_positive_int, default=10, metavar="N", help="how many (default 10)")
    p_logs.add_argument("--cid", metavar="ID", help="only this conversation")
    p_logs.add_argument("--conversations", action="store_true", help="list conversations instead of exchanges")
    p_logs.add_argument("--json", action="store_true", help="print JSON")
    p_logs.add_argument("--path", action="store_true", help="print where the log is kept")
    p_logs.set_defaults(handler=_cmd_logs)

    p_embed = commands.add_parser("embed", parents=[common], help="embed text with one provider")
    p_embed.add_argument("name", metavar="NAME", help="provider name (see `list`)")
    p_embed.add_argument("texts", metavar="TEXT", nargs="+", help='text(s) to embed; "-" reads stdin')
    p_embed.add_argument("--dims", action="store_true", help="print a summary (count, dimensions) only")
    p_embed.set_defaults(handler=_cmd_embed)

    p_config = commands.add_parser("config", parents=[common], help="write or show a config")
    config_commands = p_config.add_subparsers(dest="config_command", metavar="ACTION")
    p_init = config_commands.add_parser("init", parents=[common], help="write a commented starter config")
    p_init.add_argument("path", metavar="PATH", nargs="?", default=None, help="default: ./zeph.toml")
    p_init.add_argument("--user", action="store_true", help="write the per-user config file instead")
    p_init.add_argument("--force", action="store_true", help="overwrite an existing file")
    p_init.set_defaults(handler=_cmd_config_init)
    p_show = config_commands.add_parser("show", parents=[common], help="print the loaded config as TOML")
    p_show.set_defaults(handler=_cmd_config_show)
    p_schema = config_commands.add_parser("schema", parents=[common], help="print the config's JSON Schema")
    p_schema.set_defaults(handler=_cmd_config_schema)
    p_where = config_commands.add_parser("path", parents=[common], help="print which config file is used")
    p_where.set_defaults(handler=_cmd_config_path)
    p_config.set_defaults(handler=None, subparser=p_config)

    p_status = commands.add_parser("status", parents=[common], help="build every provider and show its state")
    p_status.add_argument("--json", action="store_true", help="print JSON instead of text")
    p_status.add_argument("--url", metavar="URL", help="ask a running gateway (`serve`) instead: its usage and costs")
    p_status.add_argument("--key-env", metavar="VAR", help="with --url: the environment variable holding a gateway key")
    p_status.add_argument(
        "--probe", action="store_true", help="send each provider a cheap request (its model list, else a 1-token chat)"
    )
    p_status.add_argument(
        "--probe-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECS",
        help="bound per provider, a local model's first load included (default 30)",
    )
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
        elif getattr(provider, "keyless", False):
            _err(f"note: {provider.name!r} is keyless: no API key is sent (set api_key_env if its server needs one)")
        elif env and getattr(provider, "api_key", None) is None and not os.environ.get(env):
            _err(f"note: {provider.name!r} reads its API key from ${env}, which is not set (an error when it is built)")
    return EXIT_OK


def _cmd_config_init(args: argparse.Namespace) -> int:
    from zeph_providers._paths import user_config_file
    from zeph_providers.defaults import STARTER_CONFIG_TOML
    from zeph_providers.errors import ConfigError

    if args.user and args.path is not None:
        raise _UsageError("give a PATH or --user, not both")
    path = user_config_file() if args.user else Path(args.path or "zeph.toml")
    if path.is_dir():
        path = path / "zeph.toml"
    if path.exists() and not args.force:
        raise ConfigError("already exists; pass --force to overwrite it", source=str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(STARTER_CONFIG_TOML, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the config: {exc.strerror or exc}", source=str(path)) from exc
    if args.user:
        _out(f"wrote {path}; every command now uses it when there is no ./zeph.toml; check it with: {PROG} check")
    else:
        _out(f"wrote {path}; check it with: {PROG} --config {path} check")
    return EXIT_OK


def _cmd_config_schema(args: argparse.Namespace) -> int:
    from zeph_providers._cli_schema import schema_text

    _out(schema_text(), end="")
    return EXIT_OK


def _cmd_config_path(args: argparse.Namespace) -> int:
    from zeph_providers._paths import user_config_file
    from zeph_providers.registry import Registry

    found = Registry.discover_path(_config_path(args))
    _out(str(found) if found is not None else "<built-in default>")
    _out(f"# per-user file: {user_config_file()}", stream=sys.stderr)
    return EXIT_OK


def _cmd_config_show(args: argparse.Namespace) -> int:
    from zeph_providers.config import dump_toml
    from zeph_providers.errors import redact

    registry = _open_registry(args)
    _out(f"# source: {registry.config.source}")
    _out(redact(dump_toml(registry.config)), end="")
    return EXIT_OK


# ----- chat / embed -------------------------------------------------------------------------


def _cmd_chat(args: argparse.Namespace) -> int:
    from zeph_providers._cli_chat import cmd_chat

    return cmd_chat(args)


def _cmd_logs(args: argparse.Namespace) -> int:
    from zeph_providers._cli_logs import cmd_logs

    return cmd_logs(args)


async def _embed(args: argparse.Namespace) -> int:
    from zeph_providers.errors import LlmError

    texts = [_read_stdin_if_dash(text) for text in args.texts]
    registry = _open_registry(args)
    try:
        provider = registry.get(args.name)
        config = registry.config.provider(args.name)
        label = f"loading the encoder of {args.name!r}" if config is not None and config.type == "local" else None
        with _progress(label or "") as spinner:
            if label is None:
                spinner.stop()
            vectors = await provider.embed_batch(texts)
    except LlmError as exc:
        exc.cli_message = _explain(exc, registry)  # type: ignore[attr-defined]
        raise
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
    _quiet_third_party_progress()
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        target = getattr(args, "subparser", parser)
        target.print_help(sys.stderr)
        return EXIT_USAGE
    from zeph_providers.errors import LlmError, redact

    try:
        return handler(args)
    except KeyboardInterrupt as exc:
        _flush_quietly()
        if sys.stderr.isatty() and not getattr(exc, "line_ended", False):
            sys.stderr.write("\n")  # the shell prompt must not land after the "^C"
        return EXIT_INTERRUPTED
    except _UsageError as exc:
        _err(f"{PROG}: error: {exc}")
        return EXIT_USAGE
    except LlmError as exc:
        _flush_quietly()
        _err(f"error: {getattr(exc, 'cli_message', None) or _explain(exc, None)}")
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


def _quiet_third_party_progress() -> None:
    """No Hugging Face / transformers progress bars or advice in the CLI's output (set before they import)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _flush_quietly() -> None:
    try:
        sys.stdout.write("")
        sys.stdout.flush()
    except Exception:
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
