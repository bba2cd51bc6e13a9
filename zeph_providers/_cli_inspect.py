"""`zeph-providers list`, `status` and `models`: what is configured, each provider's state, the models it serves.

`models NAME` prints `await provider.list_models()` (a router: the union of its members' lists)
and the configured model's context window (`fetch_context_window()`; Ollama asks `/api/show`).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zeph_providers._cli_common import (
    EXIT_OK,
    _close,
    _dumps,
    _json_default,
    _open_registry,
    _out,
    _short,
    _table,
)

if TYPE_CHECKING:
    from zeph_providers.config import ProviderConfigBase
    from zeph_providers.protocol import LlmProvider
    from zeph_providers.registry import Registry


def _describe(registry: Registry, config: ProviderConfigBase) -> dict[str, Any]:
    """Build one provider (cheap: remote clients are lazy and local models load on first use)."""
    from zeph_providers.errors import LlmError, redact

    row: dict[str, Any] = {
        "name": config.name,
        "type": config.type,
        "model": config.model_name,
        "capabilities": None,
        "default": registry.config.default == config.name,
        "embedding": registry.config.embedding == config.name,
        "note": None,
    }
    try:
        provider = registry.get(config.name)
    except LlmError as exc:
        row["note"] = "not built: " + _short(exc.message)
        return row
    except Exception as exc:
        row["note"] = "not built: " + _short(redact(f"{type(exc).__name__}: {exc}"))
        return row
    row["model"] = provider.model or row["model"]
    row["capabilities"] = provider.capabilities.names()
    row["provider"] = provider
    return row


def _name_label(row: dict[str, Any]) -> str:
    marks = [m for m, on in (("default", row["default"]), ("embedding", row["embedding"])) if on]
    return str(row["name"]) + (f" ({', '.join(marks)})" if marks else "")


async def _list(args: argparse.Namespace) -> int:
    registry = _open_registry(args)
    try:
        rows = [_describe(registry, config) for config in registry.config.providers]
    finally:
        await _close(registry)
    if args.json:
        payload = {
            "source": registry.config.source,
            "default": registry.config.default,
            "embedding": registry.config.embedding,
            "providers": [{k: v for k, v in row.items() if k != "provider"} for row in rows],
        }
        _out(_dumps(payload))
        return EXIT_OK
    table_rows = []
    notes = []
    for row in rows:
        caps = ", ".join(row["capabilities"]) if row["capabilities"] is not None else "?"
        table_rows.append([_name_label(row), row["type"], row["model"] or "-", caps or "-"])
        if row["note"]:
            notes.append(f"  {row['name']}: {row['note']}")
    from zeph_providers.errors import redact

    _out(redact(_table(["name", "type", "model", "capabilities"], table_rows)))
    if notes:
        _out()
        _out(redact("notes:\n" + "\n".join(notes)))
    _out(f"\n{len(rows)} provider{'s' if len(rows) != 1 else ''} from {registry.config.source}")
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    return asyncio.run(_list(args))


async def _provider_status(provider: LlmProvider) -> dict[str, Any] | None:
    status: Callable[[], Any] | None = getattr(provider, "status", None)
    if status is None or not callable(status):
        return None
    value = status()
    if inspect.isawaitable(value):
        value = await value
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        result = dump()
        if isinstance(result, dict):
            return result
    return {"status": value}


async def _status(args: argparse.Namespace) -> int:
    from zeph_providers.errors import redact

    registry = _open_registry(args)
    entries: list[dict[str, Any]] = []
    try:
        for config in registry.config.providers:
            row = _describe(registry, config)
            provider = row.pop("provider", None)
            entry: dict[str, Any] = {"name": row["name"], "type": row["type"], "model": row["model"]}
            if provider is None:
                entry["state"] = row["note"]
            else:
                entry["state"] = "ready"
                try:
                    detail = await _provider_status(provider)
                except Exception as exc:
                    detail = {"error": _short(redact(f"{type(exc).__name__}: {exc}"))}
                if detail is not None:
                    entry["status"] = detail
            entries.append(entry)
    finally:
        await _close(registry)
    if args.json:
        _out(_dumps({"source": registry.config.source, "providers": entries}))
        return EXIT_OK
    lines = []
    for entry in entries:
        lines.append(f"{entry['name']} ({entry['type']}, {entry['model'] or '-'}): {entry['state']}")
        for key, value in (entry.get("status") or {}).items():
            rendered = value if isinstance(value, str) else json.dumps(value, default=_json_default)
            lines.append(f"    {key}: {rendered}")
    _out(redact("\n".join(lines)))
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    if getattr(args, "url", None):
        from zeph_providers._cli_serve import remote_status

        return remote_status(args)
    return asyncio.run(_status(args))


async def _models(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from zeph_providers.errors import redact

    registry = _open_registry(args)
    try:
        provider: Any = registry.get(args.name)
        models = await provider.list_models(refresh=args.refresh)
        fetch = getattr(provider, "fetch_context_window", None)
        window = await fetch() if fetch is not None else None
    finally:
        await _close(registry)
    if args.json:
        payload = {
            "provider": args.name,
            "model": provider.model,
            "context_window": window,
            "models": [m.model_dump(mode="json") for m in models],
        }
        _out(_dumps(payload))
        return EXIT_OK
    rows = []
    for m in models:
        created = datetime.fromtimestamp(m.created, UTC).strftime("%Y-%m-%d") if m.created is not None else "-"
        window_text = f"{m.context_window:,}" if m.context_window is not None else "-"
        marks = " *" if m.id == provider.model else ""
        rows.append([m.id + marks, m.provider, window_text, created, m.owned_by or m.display_name or "-"])
    _out(redact(_table(["id", "provider", "context", "created", "owner / name"], rows)))
    shown = f"{window:,} tokens" if window is not None else "unknown"
    _out(f"\n{len(models)} model{'s' if len(models) != 1 else ''}; {provider.model!r} (*): context window {shown}")
    return EXIT_OK


def _cmd_models(args: argparse.Namespace) -> int:
    return asyncio.run(_models(args))
