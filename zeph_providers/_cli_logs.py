"""`zeph-providers logs`: the most recent exchanges (or conversations) from the conversation log.

The log holds no secrets (see `_cli_store`); what is printed is redacted once more on the way out.
"""

from __future__ import annotations

import argparse

from zeph_providers._cli_common import EXIT_OK, _dumps, _out, _short, _table


def cmd_logs(args: argparse.Namespace) -> int:
    from zeph_providers._cli_store import Store
    from zeph_providers.errors import redact

    store = Store()
    if args.path:
        _out(str(store.path))
        return EXIT_OK
    if args.conversations:
        conversations = store.conversations(limit=args.count)
        if args.json:
            _out(_dumps([c.__dict__ for c in conversations]))
            return EXIT_OK
        if not conversations:
            _out(f"no conversations yet (log: {store.path})")
            return EXIT_OK
        rows = [[c.id, c.updated, c.provider, c.model, str(c.turns)] for c in conversations]
        _out(redact(_table(["id", "updated", "provider", "model", "turns"], rows)))
        return EXIT_OK
    exchanges = store.exchanges(limit=args.count, conversation_id=args.cid)
    if args.json:
        _out(_dumps([e.as_dict() for e in exchanges]))
        return EXIT_OK
    if not exchanges:
        _out(f"no exchanges yet (log: {store.path})")
        return EXIT_OK
    for exchange in exchanges:
        tokens = f"{exchange.input_tokens} in, {exchange.output_tokens} out"
        where = f"conversation {exchange.conversation_id}  {exchange.provider} ({exchange.model})"
        _out(redact(f"# {exchange.created}  {where}, {tokens}"))
        _out(redact("> " + _short(exchange.prompt, 400)))
        _out(redact(exchange.response))
        _out()
    return EXIT_OK
