"""Finds and loads local model weights: a Hugging Face repo, a folder, a .gguf file or a package file.

Sources (`repo_id` / `model_path` / `embedding_repo`) are parsed and fetched in `local.sources`
(no torch there); their names are re-exported here for the old import path.

A GGUF model is de-quantised once and cached as safetensors under `ZEPH_PROVIDERS_CACHE` (default:
the user cache dir / "zeph-providers"), keyed on the file's path, size and mtime, so later loads
take seconds instead of half a minute.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from typing import TYPE_CHECKING, Any

from zeph_providers.errors import (
    ConfigError,
    LlmError,
)
from zeph_providers.local.sources import (
    PACKAGE_PREFIX,
    ModelSource,
    config_source,
    materialize,
    parse_source,
)

if TYPE_CHECKING:
    from zeph_providers.config import LocalConfig

__all__ = [
    "PACKAGE_PREFIX",
    "LoadedModel",
    "ModelSource",
    "config_source",
    "cache_root",
    "gguf_cache_dir",
    "load_causal_lm",
    "materialize",
    "parse_source",
    "resolve_device",
    "resolve_dtype",
]

log = logging.getLogger("zeph_providers.local")



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
