"""`zeph-providers config schema`: a JSON Schema for the TOML config, for editors (taplo / Even Better TOML).

Generated from the pydantic models, so it cannot drift from what `load_config` accepts:

- the document shape `{"llm": {...}}`; `[llm]` is `LlmConfig` with `providers` as the built-in
  types' models in a union (`anyOf`) told apart by `type` (each branch requires `type`; the aliases
  a config may write, `candle`/`transformers` and `anthropic`, are in that branch's enum);
- descriptions from the field docstrings (the attribute docstrings under each field, read from
  the source with `ast`, as `scripts/gen_config_docs.py` reads them), classes' own docstrings;
- what the loader adds on top stays out: `${VAR}` interpolation, unique names, router
  references and cycles (`zeph-providers check` reports those).

The committed copy is docs/zeph.schema.json; a test keeps it equal to this output. Point an
editor at it with a first line `#:schema ./docs/zeph.schema.json` (taplo) or through the
editor's schema association settings.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import json
from functools import cache
from pathlib import Path
from typing import Any, Union

__all__ = ["SCHEMA_URI", "config_schema", "schema_text"]

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"


@cache
def _source_docs(path: str) -> dict[tuple[str, str], str]:
    """(class, field) -> the docstring under the field, for every class in one source file."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    docs: dict[tuple[str, str], str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for field, following in itertools.pairwise(node.body):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[(node.name, field.target.id)] = " ".join(following.value.value.split())
    return docs


def _field_doc(model: type, name: str) -> str | None:
    for cls in model.__mro__:
        try:
            path = inspect.getsourcefile(cls)
        except TypeError:
            continue
        if path is None:
            continue
        doc = _source_docs(path).get((cls.__name__, name))
        if doc:
            return doc
    return None


def _own_doc(model: type) -> str | None:
    doc = model.__dict__.get("__doc__")
    return " ".join(doc.split()) if isinstance(doc, str) and doc.strip() else None


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a config file."""
    from pydantic import BaseModel, Field, create_model

    from zeph_providers.config import LlmConfig, catalog

    entries = list(catalog.BUILTIN.values())
    # A plain union: pydantic refuses a discriminator on LocalConfig's `type` (it has a "before"
    # validator, for `candle`); each branch's required `type` enum selects it just as well.
    union: Any = Union[tuple(e.config_model for e in entries)]  # noqa: UP007
    document_model = create_model(
        "LlmConfig",
        __base__=LlmConfig,
        __doc__=LlmConfig.__doc__,
        providers=(list[union], Field(default_factory=list)),
    )
    llm = document_model.model_json_schema(mode="validation")
    defs: dict[str, Any] = llm.pop("$defs", {})
    defs["LlmConfig"] = llm

    models: dict[str, type[BaseModel]] = {"LlmConfig": LlmConfig}
    pending: list[type[BaseModel]] = [e.config_model for e in entries]
    while pending:  # every model reachable from the providers (GenerationConfig, PricingConfig, ...)
        model = pending.pop()
        if model.__name__ in models:
            continue
        models[model.__name__] = model
        for info in model.model_fields.values():
            for candidate in _models_in(info.annotation):
                pending.append(candidate)

    aliases: dict[str, list[str]] = {e.type: [e.type, *e.aliases] for e in entries}
    for name, definition in defs.items():
        properties: dict[str, Any] = definition.get("properties", {})
        properties.pop("source", None)
        if name not in models:
            continue
        model = models[name]
        own = _own_doc(model)
        if own:
            definition["description"] = own
        else:
            definition.pop("description", None)
        for field, prop in properties.items():
            doc = _field_doc(model, field)
            if doc and "description" not in prop:
                prop["description"] = doc
        type_name = getattr(model, "type_name", "")
        if type_name in aliases and "type" in properties:
            written = aliases[type_name]
            properties["type"] = {
                "description": f"The backend: {', '.join(repr(w) for w in written)}.",
                "enum": written,
                "type": "string",
            }
            required = definition.setdefault("required", [])
            if "type" not in required:
                required.insert(0, "type")
    providers = defs["LlmConfig"]["properties"]["providers"]
    providers["description"] = "One `[[llm.providers]]` table per provider; `type` selects its fields."
    defs["LlmConfig"]["description"] = "The `[llm]` table: the providers and what applies to all of them."
    return {
        "$schema": SCHEMA_URI,
        "title": "zeph-providers configuration",
        "description": (
            "A zeph.toml file: one [llm] table and one [[llm.providers]] table per provider. "
            "Generated by `zeph-providers config schema`."
        ),
        "type": "object",
        "properties": {"llm": {"$ref": "#/$defs/LlmConfig"}},
        "required": ["llm"],
        "$defs": dict(sorted(defs.items())),
    }


def _models_in(annotation: Any) -> list[Any]:
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[Any] = []
    for arg in get_args(annotation):
        found.extend(_models_in(arg))
    return found


def schema_text() -> str:
    """The schema as the committed docs/zeph.schema.json holds it."""
    return json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"
