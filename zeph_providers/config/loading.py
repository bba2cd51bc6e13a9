"""Loading a config: TOML text or a dict -> a validated `LlmConfig`, or ONE `ConfigError`.

`parse_config` runs a fixed sequence of passes, each adding to one problem list:

1. shape: the document is a table with an `[llm]` table, nested no deeper than `MAX_DEPTH`;
2. interpolation: `${VAR}` / `${VAR:-default}` in every string;
3. `[llm]` keys: only `default`, `embedding`, `providers`;
4. providers: each entry's `type` looked up in the catalog, then validated by that type's model;
   duplicate names;
5. references: router members and `[llm].default` / `[llm].embedding` name declared providers;
6. router cycles (`a -> b -> a`), so `zeph-providers check` finds them offline.

Unknown keys get a "did you mean" hint; every problem names the file, the provider (index and
name) and the field; values quoted in messages are redacted and shortened.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from zeph_providers.config import catalog
from zeph_providers.config.models import GatewayConfig, LlmConfig, ProviderConfigBase, RouterConfig
from zeph_providers.errors import ConfigError, ConfigProblem, quote_value

__all__ = ["MAX_DEPTH", "load_config", "loads_config", "parse_config"]

MAX_DEPTH = 32
"""Deepest nesting of tables and arrays a config may have (a real one needs 4)."""

_LLM_KEYS = ["default", "embedding", "providers", "telemetry", "telemetry_content", "budget_usd", "gateway"]
_LLM_FLAGS = ("telemetry", "telemetry_content")
_LLM_SETTINGS = (*_LLM_FLAGS, "budget_usd")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{([^}]*)\}")

Path_ = tuple[str | int, ...]


@dataclass
class _Pass:
    """State shared by the passes of one `parse_config` call."""

    source: str | None
    problems: list[ConfigProblem] = field(default_factory=list)
    raw_providers: list[Any] = field(default_factory=list)
    providers: list[ProviderConfigBase] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # providers[i] came from raw_providers[positions[i]]

    def add(self, message: str, **where: Any) -> None:
        self.problems.append(ConfigProblem(message, **where))

    def fail(self, message: str) -> ConfigError:
        return ConfigError(message, problems=self.problems, source=self.source)


# ----- helpers ----------------------------------------------------------------------------


def _hint(unknown: str, known: list[str]) -> str:
    close = difflib.get_close_matches(unknown, known, n=1, cutoff=0.6) if len(unknown) <= 100 else []
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (valid keys: {', '.join(sorted(known))})"


def _field_names(model: type[BaseModel], loc: Path_) -> list[str]:
    """The valid keys at a nested location (for the "did you mean" hint)."""
    current: type[BaseModel] = model
    for part in loc:
        info = current.model_fields.get(str(part))
        annotation = getattr(info, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            current = annotation
        else:
            break
    return [name for name in current.model_fields if name != "source"]


def _depth(value: Any) -> int:
    """How deeply tables and arrays nest in `value` (iterative: no recursion to overflow)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        current, level = stack.pop()
        if isinstance(current, Mapping):
            children: Any = current.values()
        elif isinstance(current, (list, tuple)):
            children = current
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest


def _too_deep(source: str | None) -> ConfigError:
    return ConfigError(
        f"tables and arrays are nested more than {MAX_DEPTH} levels deep; a config needs at most a few",
        source=source or "<string>",
    )


def _interpolate(value: Any, path: Path_, problems: list[tuple[Path_, str]]) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string, recording unset or malformed ones."""
    if isinstance(value, str):
        if "${" not in value:
            return value

        def substitute(match: re.Match[str]) -> str:
            name, fallback, bad = match.group(1), match.group(2), match.group(3)
            if bad is not None:
                shown = quote_value("${" + bad + "}")
                problems.append((path, f"malformed variable reference {shown}: use ${{NAME}} or ${{NAME:-default}}"))
                return ""
            found = os.environ.get(name)
            if found is not None:
                return found
            if fallback is not None:
                return fallback
            shown = name if len(name) <= 60 else name[:60] + "..."
            problems.append((path, f"environment variable {shown!r} is not set (referenced as ${{{shown}}})"))
            return ""

        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), problems) for i, v in enumerate(value)]
    return value


def _problems_from_validation(
    exc: ValidationError, model: type[BaseModel], *, index: int | None, name: str | None
) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(error["loc"])
        where = ".".join(str(p) for p in loc) or None
        if error["type"] == "extra_forbidden":
            key = str(loc[-1])
            message = f"unknown key {quote_value(key)}" + _hint(key, _field_names(model, loc[:-1]))
        elif error["type"] == "missing":
            message = "required field is missing"
        else:
            message = error["msg"]
            ctx_value = error.get("ctx", {}).get("expected")
            if ctx_value and "expected" not in message.lower():
                message += f" (expected {ctx_value})"
        problems.append(ConfigProblem(message, index=index, provider=name, field=where))
    return problems


def _entry_name(raw: Any) -> str | None:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    return name if isinstance(name, str) else None


# ----- the passes -------------------------------------------------------------------------


def _shape(data: Any, state: _Pass) -> Mapping[str, Any]:
    """Pass 1: a table holding an `[llm]` table, not absurdly deep."""
    if not isinstance(data, Mapping):
        raise ConfigError("the config must be a table", source=state.source)
    if _depth(data) > MAX_DEPTH:
        raise _too_deep(state.source)
    for key in data:
        if key != "llm":
            state.add(f"unknown top-level table {quote_value(key)}" + _hint(str(key), ["llm"]))
    llm = data.get("llm")
    if llm is None:
        state.add("missing the [llm] table (declare providers as [[llm.providers]])")
        raise state.fail("invalid configuration")
    if not isinstance(llm, Mapping):
        raise state.fail("[llm] must be a table")
    return llm


def _interpolated(llm: Mapping[str, Any], state: _Pass) -> dict[str, Any]:
    """Pass 2: `${VAR}` expansion; unset variables become problems naming the provider and field."""
    found: list[tuple[Path_, str]] = []
    expanded: dict[str, Any] = _interpolate(dict(llm), (), found)
    raw_providers = expanded.get("providers", [])
    for path, message in found:
        if len(path) > 1 and path[0] == "providers" and isinstance(path[1], int):
            index = path[1]
            entry = raw_providers[index] if isinstance(raw_providers, list) else {}
            where = ".".join(str(p) for p in path[2:]) or None
            state.add(message, index=index, provider=_entry_name(entry), field=where)
        else:
            state.add(message, field=".".join(str(p) for p in path) or None)
    return expanded


def _llm_keys(llm: Mapping[str, Any], state: _Pass) -> None:
    """Pass 3: the keys of `[llm]` itself."""
    for key in llm:
        if key not in _LLM_KEYS:
            state.add(f"unknown key {quote_value(key)} in [llm]" + _hint(str(key), _LLM_KEYS))
        elif key in _LLM_FLAGS and not isinstance(llm[key], bool):
            state.add(f"`{key}` must be true or false", field=key)
        elif key == "budget_usd":
            value = llm[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                state.add("`budget_usd` must be a number >= 0", field=key)
    raw = llm.get("providers", [])
    if not isinstance(raw, list):
        state.add("`providers` must be an array of tables ([[llm.providers]])", field="providers")
        raw = []
    state.raw_providers = raw


def _one_provider(index: int, raw: Any, state: _Pass) -> ProviderConfigBase | None:
    if not isinstance(raw, Mapping):
        state.add("each provider must be a table", index=index)
        return None
    name = _entry_name(raw)
    written = raw.get("type")
    if not isinstance(written, str):
        known = ", ".join(repr(t) for t in catalog.known_types())
        state.add(f"missing `type`; one of {known}", index=index, provider=name, field="type")
        return None
    try:
        resolved = catalog.resolve(written)
    except ConfigError as exc:  # a plugin that fails to import: report it with the others
        state.add(exc.message, index=index, provider=name, field="type")
        return None
    if resolved is None:
        known_types = catalog.known_types()
        close = difflib.get_close_matches(written, known_types, n=1, cutoff=0.5) if len(written) <= 100 else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        state.add(
            f"unknown provider type {quote_value(written)}{hint}; known types: " + ", ".join(known_types),
            index=index,
            provider=name,
            field="type",
        )
        return None
    model = resolved.entry.config_model
    fields = dict(raw)
    for key, value in resolved.presets.items():
        if key in fields and fields[key] != value:
            state.add(
                f"type {written!r} means {key} = {value!r}; use type {resolved.entry.type!r} for another {key}",
                index=index,
                provider=name,
                field=key,
            )
            return None
        fields[key] = value
    fields["type"] = model.type_name or resolved.entry.type
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        state.problems.extend(_problems_from_validation(exc, model, index=index, name=name))
        return None


def _providers(state: _Pass) -> None:
    """Pass 4: each `[[llm.providers]]` entry through its type's model; names unique."""
    seen: dict[str, int] = {}
    for index, raw in enumerate(state.raw_providers):
        provider = _one_provider(index, raw, state)
        if provider is None:
            continue
        state.providers.append(provider)
        state.positions.append(index)
        if provider.name in seen:
            first = seen[provider.name]
            state.add(
                f"duplicate provider name {quote_value(provider.name)} (first declared at providers[{first}])",
                index=index,
                provider=provider.name,
                field="name",
            )
        else:
            seen[provider.name] = index


def _references(llm: Mapping[str, Any], state: _Pass) -> None:
    """Pass 5: router members and `[llm].default` / `[llm].embedding` name declared providers."""
    names = {p.name for p in state.providers}
    declared = names | {n for n in map(_entry_name, state.raw_providers) if n is not None}
    for position, provider in zip(state.positions, state.providers, strict=True):
        if not isinstance(provider, RouterConfig):
            continue
        for member in provider.providers:
            if member == provider.name:
                state.add("a router cannot contain itself", index=position, provider=provider.name, field="providers")
            elif member not in declared:
                state.add(
                    f"names unknown provider {quote_value(member)}" + _hint(member, sorted(n for n in declared if n)),
                    index=position,
                    provider=provider.name,
                    field="providers",
                )
    for key in ("default", "embedding"):
        value = llm.get(key)
        if value is not None and (not isinstance(value, str) or value not in declared):
            state.add(
                f"[llm].{key} = {quote_value(value)} names no declared provider; declared: " + ", ".join(sorted(names)),
                field=key,
            )


def router_cycles(providers: list[ProviderConfigBase]) -> list[list[str]]:
    """Each cycle among routers once, as a path that ends where it starts (`[a, b, a]`)."""
    routers = {p.name: p.providers for p in providers if isinstance(p, RouterConfig)}
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    done: set[str] = set()
    for start in routers:
        if start in done:
            continue
        # iterative DFS keeping the current path
        path: list[str] = [start]
        iters = [iter(routers[start])]
        while iters:
            member = next(iters[-1], None)
            if member is None:
                iters.pop()
                done.add(path.pop())
                continue
            if member == path[-1] or member not in routers:
                continue  # self-membership is reported on its own; non-routers end the walk
            if member in path:
                cycle = path[path.index(member) :]
                turn = cycle.index(min(cycle))
                key = tuple(cycle[turn:] + cycle[:turn])
                if key not in seen:
                    seen.add(key)
                    cycles.append([*cycle, member])
                continue
            if member in done:
                continue
            path.append(member)
            iters.append(iter(routers[member]))
    return cycles


def _cycles(state: _Pass) -> None:
    """Pass 6: routers that contain each other would recurse forever at the first call."""
    index_of = {p.name: i for i, p in zip(state.positions, state.providers, strict=True)}
    for cycle in router_cycles(state.providers):
        state.add(
            "routers form a cycle: " + " -> ".join(cycle),
            index=index_of.get(cycle[0]),
            provider=cycle[0],
            field="providers",
        )


def _gateway(llm: Mapping[str, Any], state: _Pass) -> GatewayConfig | None:
    """Pass 7: `[llm.gateway]` (the `serve` command's keys), its keys naming declared providers."""
    raw = llm.get("gateway")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        state.add("[llm.gateway] must be a table", field="gateway")
        return None
    try:
        gateway = GatewayConfig.model_validate(dict(raw))
    except ValidationError as exc:
        for problem in _problems_from_validation(exc, GatewayConfig, index=None, name=None):
            state.add(problem.message, field="gateway." + problem.field if problem.field else "gateway")
        return None
    names = {p.name for p in state.providers}
    for key in gateway.keys:
        for member in key.providers or ():
            if member not in names:
                state.add(
                    f"gateway key {quote_value(key.name)} names unknown provider {quote_value(member)}",
                    field="gateway.keys",
                )
    return gateway


def parse_config(data: Mapping[str, Any], *, source: str | None = None) -> LlmConfig:
    """Validate a parsed TOML document (or an equivalent dict) into an `LlmConfig`."""
    state = _Pass(source)
    try:
        llm = _interpolated(_shape(data, state), state)
        _llm_keys(llm, state)
        _providers(state)
        _references(llm, state)
        _cycles(state)
        gateway = _gateway(llm, state)
    except RecursionError:
        raise _too_deep(source) from None
    if state.problems:
        count = len(state.problems)
        raise state.fail(f"invalid configuration ({count} problem{'s' if count != 1 else ''})")
    settings = {key: llm[key] for key in _LLM_SETTINGS if key in llm}
    if gateway is not None:
        settings["gateway"] = gateway
    return LlmConfig(
        default=llm.get("default"), embedding=llm.get("embedding"), providers=state.providers, source=source, **settings
    )


def load_config(path: str | os.PathLike[str]) -> LlmConfig:
    """Read and validate a TOML config file."""
    file = Path(path)
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("config file not found; create one with `zeph-providers config init`", source=source) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config file: {exc}", source=source) from exc
    return loads_config(text, source=source)


def loads_config(text: str, *, source: str | None = None) -> LlmConfig:
    """Validate a TOML document given as a string."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TOML syntax error: {exc}", source=source or "<string>") from exc
    except RecursionError:
        raise _too_deep(source) from None
    return parse_config(data, source=source)
