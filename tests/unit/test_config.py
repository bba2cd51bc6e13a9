"""Config loading: every malformed file gives one ConfigError naming the file, provider and field."""

from __future__ import annotations

import contextlib
import re
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zeph_providers.config import (
    CandleConfig,
    ClaudeConfig,
    GenerationConfig,
    LocalConfig,
    MockConfig,
    OllamaConfig,
    RouterConfig,
    config_to_dict,
    dump_toml,
    load_config,
    loads_config,
    parse_config,
)
from zeph_providers.errors import ConfigError, LlmError

WriteConfig = Callable[..., Path]

# A valid first provider, so that the broken one sits at index 1 and both index and name matter.
HEAD = """\
[llm]

[[llm.providers]]
name = "ok"
type = "mock"
"""


def _case(body: str) -> str:
    return HEAD + "\n" + textwrap.dedent(body)


# (id, provider TOML at index 1, provider name, field, fragment of the message)
PROVIDER_CASES: list[tuple[str, str, str | None, str, str]] = [
    (
        "unknown-type",
        """
        [[llm.providers]]
        name = "brain"
        type = "gpt4"
        model = "x"
        """,
        "brain",
        "type",
        "unknown provider type 'gpt4'",
    ),
    (
        "unknown-type-hint",
        """
        [[llm.providers]]
        name = "brain"
        type = "olama"
        model = "x"
        """,
        "brain",
        "type",
        "did you mean 'ollama'?",
    ),
    (
        "missing-type",
        """
        [[llm.providers]]
        name = "brain"
        model = "x"
        """,
        "brain",
        "type",
        "missing `type`",
    ),
    (
        "missing-model",
        """
        [[llm.providers]]
        name = "brain"
        type = "ollama"
        """,
        "brain",
        "model",
        "required field is missing",
    ),
    (
        "compatible-missing-base-url",
        """
        [[llm.providers]]
        name = "vllm"
        type = "compatible"
        model = "m"
        """,
        "vllm",
        "base_url",
        "required field is missing",
    ),
    (
        "unknown-key-hint",
        """
        [[llm.providers]]
        name = "gpt"
        type = "openai"
        temprature = 0.5
        """,
        "gpt",
        "temprature",
        "did you mean 'temperature'?",
    ),
    (
        "unknown-nested-key-hint",
        """
        [[llm.providers]]
        name = "loc"
        type = "candle"
        repo_id = "org/model"
        [llm.providers.generation]
        max_tokns = 10
        """,
        "loc",
        "generation.max_tokns",
        "did you mean 'max_tokens'?",
    ),
    (
        "duplicate-name",
        """
        [[llm.providers]]
        name = "ok"
        type = "mock"
        """,
        "ok",
        "name",
        "duplicate provider name 'ok' (first declared at providers[0])",
    ),
    (
        "router-unknown-member",
        """
        [[llm.providers]]
        name = "smart"
        type = "router"
        providers = ["ok", "claud"]
        """,
        "smart",
        "providers",
        "names unknown provider 'claud'",
    ),
    (
        "router-contains-itself",
        """
        [[llm.providers]]
        name = "smart"
        type = "router"
        providers = ["ok", "smart"]
        """,
        "smart",
        "providers",
        "cannot contain itself",
    ),
    (
        "router-empty",
        """
        [[llm.providers]]
        name = "smart"
        type = "router"
        providers = []
        """,
        "smart",
        "providers",
        "at least 1",
    ),
    (
        "router-bad-strategy",
        """
        [[llm.providers]]
        name = "smart"
        type = "router"
        providers = ["ok"]
        strategy = "random"
        """,
        "smart",
        "strategy",
        "'fallback'",
    ),
    (
        "unset-variable",
        """
        [[llm.providers]]
        name = "gpt"
        type = "openai"
        model = "${ZEPH_TEST_UNSET_MODEL_VAR}"
        """,
        "gpt",
        "model",
        "environment variable 'ZEPH_TEST_UNSET_MODEL_VAR' is not set",
    ),
    (
        "malformed-variable",
        """
        [[llm.providers]]
        name = "vllm"
        type = "compatible"
        model = "m"
        base_url = "${1-BAD}"
        """,
        "vllm",
        "base_url",
        "malformed variable reference",
    ),
    (
        "wrong-type-int",
        """
        [[llm.providers]]
        name = "loc"
        type = "candle"
        repo_id = "org/model"
        queue_capacity = "four"
        """,
        "loc",
        "queue_capacity",
        "valid integer",
    ),
    (
        "wrong-type-list",
        """
        [[llm.providers]]
        name = "m2"
        type = "mock"
        responses = "just one"
        """,
        "m2",
        "responses",
        "valid list",
    ),
    (
        "wrong-type-bool",
        """
        [[llm.providers]]
        name = "gpt"
        type = "openai"
        allow_insecure_http = "sometimes"
        """,
        "gpt",
        "allow_insecure_http",
        "valid boolean",
    ),
    (
        "generation-temperature-range",
        """
        [[llm.providers]]
        name = "loc"
        type = "candle"
        repo_id = "org/model"
        [llm.providers.generation]
        temperature = 5.0
        """,
        "loc",
        "generation.temperature",
        "less than or equal to 2",
    ),
    (
        "generation-repeat-penalty-range",
        """
        [[llm.providers]]
        name = "loc"
        type = "candle"
        repo_id = "org/model"
        [llm.providers.generation]
        repeat_penalty = 0.5
        """,
        "loc",
        "generation.repeat_penalty",
        "greater than or equal to 1",
    ),
    (
        "generation-max-tokens-range",
        """
        [[llm.providers]]
        name = "loc"
        type = "candle"
        repo_id = "org/model"
        [llm.providers.generation]
        max_tokens = 0
        """,
        "loc",
        "generation.max_tokens",
        "greater than or equal to 1",
    ),
    (
        "generation-top-p-range",
        """
        [[llm.providers]]
        name = "loc"
        type = "candle"
        repo_id = "org/model"
        [llm.providers.generation]
        top_p = 1.5
        """,
        "loc",
        "generation.top_p",
        "less than or equal to 1",
    ),
    (
        "negative-timeout",
        """
        [[llm.providers]]
        name = "claude"
        type = "claude"
        timeout_secs = -1
        """,
        "claude",
        "timeout_secs",
        "greater than 0",
    ),
    (
        "bad-url-scheme",
        """
        [[llm.providers]]
        name = "vllm"
        type = "compatible"
        model = "m"
        base_url = "ftp://example.com/v1"
        """,
        "vllm",
        "base_url",
        "http:// or https:// URL",
    ),
    (
        "bad-device",
        """
        [[llm.providers]]
        name = "loc"
        type = "candle"
        repo_id = "org/model"
        device = "tpu"
        """,
        "loc",
        "device",
        "'cpu'",
    ),
    (
        "bad-chat-template",
        """
        [[llm.providers]]
        name = "loc"
        type = "local"
        repo_id = "org/model"
        chat_template = "vicuna"
        """,
        "loc",
        "chat_template",
        "'chatml'",
    ),
    (
        "bad-name-characters",
        """
        [[llm.providers]]
        name = "my model"
        type = "mock"
        """,
        "my model",
        "name",
        "should match pattern",
    ),
    (
        "max-concurrent-zero",
        """
        [[llm.providers]]
        name = "gpt"
        type = "openai"
        max_concurrent = 0
        """,
        "gpt",
        "max_concurrent",
        "greater than or equal to 1",
    ),
    (
        "thinking-budget-too-small",
        """
        [[llm.providers]]
        name = "claude"
        type = "anthropic"
        thinking_budget_tokens = 10
        """,
        "claude",
        "thinking_budget_tokens",
        "greater than or equal to 1024",
    ),
    (
        "missing-name",
        """
        [[llm.providers]]
        type = "mock"
        """,
        None,
        "name",
        "required field is missing",
    ),
]


@pytest.mark.parametrize(
    ("body", "name", "field", "fragment"),
    [pytest.param(body, name, field, fragment, id=case_id) for case_id, body, name, field, fragment in PROVIDER_CASES],
)
def test_malformed_provider_names_file_provider_and_field(
    write_config: WriteConfig, body: str, name: str | None, field: str, fragment: str
) -> None:
    path = write_config(_case(body))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    text = str(error)
    assert str(path) in text, text
    assert error.source == str(path)
    location = "providers[1]" + (f" ({name!r})" if name else "")
    assert location in text, text
    assert f"field {field!r}" in text, text
    assert fragment in text, text
    # the structured form says the same thing
    matching = [p for p in error.problems if p.index == 1 and p.field == field]
    assert matching, error.problems
    assert all(p.provider == name for p in matching)
    assert isinstance(error, LlmError)
    assert error.__cause__ is None or not isinstance(error.__cause__, ConfigError)


def test_every_builtin_type_has_a_malformed_case() -> None:
    """The case table covers every built-in backend type (a new type without a case fails here)."""
    import re

    from zeph_providers.config import catalog

    covered = {t for _, text, *_ in PROVIDER_CASES for t in re.findall(r'^\s*type = "([a-z_.]+)"', text, re.M)}
    canonical = set()
    for written in covered:
        found = catalog.resolve(written)
        if found is not None:
            canonical.add(found.entry.type)
    missing = set(catalog.BUILTIN) - canonical
    assert not missing, f"no malformed-config case for: {sorted(missing)}"


def test_toml_syntax_error_gives_line_and_column(write_config: WriteConfig) -> None:
    path = write_config(
        """\
        [llm]

        [[llm.providers]]
        name = "broken
        type = "mock"
        """
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert str(path) in text
    assert "TOML syntax error" in text
    assert re.search(r"line 4, column \d+", text), text
    assert isinstance(info.value.__cause__, tomllib.TOMLDecodeError)


def test_every_problem_is_listed_not_only_the_first(write_config: WriteConfig) -> None:
    path = write_config(
        """\
        [llm]
        defualt = "a"

        [[llm.providers]]
        name = "a"
        type = "openai"
        temprature = 0.1

        [[llm.providers]]
        name = "b"
        type = "candle"
        repo_id = "x/y"
        queue_capacity = 0

        [[llm.providers]]
        name = "c"
        type = "router"
        providers = ["a", "nope"]
        """
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    text = str(error)
    assert "(4 problems)" in text, text
    assert len(error.problems) == 4
    assert "unknown key 'defualt' in [llm] (did you mean 'default'?)" in text
    assert "providers[0] ('a'), field 'temprature'" in text
    assert "providers[1] ('b'), field 'queue_capacity'" in text
    assert "providers[2] ('c'), field 'providers'" in text
    assert text.count("\n  - ") == 4


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[lm]\nx = 1\n[llm]\n", "unknown top-level table 'lm' (did you mean 'llm'?)"),
        ("[other]\nx = 1\n", "missing the [llm] table"),
        ("llm = 3\n", "[llm] must be a table"),
        ('[llm]\nproviders = "x"\n', "`providers` must be an array of tables"),
        ("[llm]\nproviders = [1]\n", "providers[0]: each provider must be a table"),
        (
            '[llm]\ndefault = "ghost"\n[[llm.providers]]\nname = "a"\ntype = "mock"\n',
            "field 'default': [llm].default = 'ghost' names no declared provider; declared: a",
        ),
        (
            '[llm]\nembedding = "ghost"\n[[llm.providers]]\nname = "a"\ntype = "mock"\n',
            "field 'embedding': [llm].embedding = 'ghost'",
        ),
    ],
)
def test_document_level_problems_name_the_file(write_config: WriteConfig, text: str, fragment: str) -> None:
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": "), message
    assert fragment in message, message


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "config init" in str(info.value)


def test_both_model_sources_rejected(write_config: WriteConfig) -> None:
    path = write_config(_case('[[llm.providers]]\nname = "loc"\ntype = "candle"\nrepo_id = "a/b"\nmodel_path = "/m"\n'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "providers[1] ('loc')" in text
    assert "repo_id" in text and "model_path" in text


def test_candle_without_source_rejected() -> None:
    with pytest.raises(ConfigError, match="repo_id"):
        parse_config({"llm": {"providers": [{"name": "x", "type": "candle"}]}})


# ----- aliases, interpolation, defaults ---------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "canonical", "engine"),
    [("local", "local", "auto"), ("transformers", "local", "transformers"), ("candle", "local", "auto")],
)
def test_local_aliases(alias: str, canonical: str, engine: str) -> None:
    config = parse_config({"llm": {"providers": [{"name": "x", "type": alias, "repo_id": "a/b"}]}})
    provider = config.providers[0]
    assert isinstance(provider, CandleConfig)
    assert isinstance(provider, LocalConfig) and CandleConfig is LocalConfig
    assert provider.type == canonical
    assert provider.engine == engine


def test_transformers_alias_selects_the_transformers_engine_even_for_gguf() -> None:
    config = parse_config({"llm": {"providers": [{"name": "x", "type": "transformers", "model_path": "/m/a.gguf"}]}})
    provider = config.providers[0]
    assert isinstance(provider, LocalConfig) and provider.engine == "transformers"
    # the same engine spelled out agrees; another one contradicts the alias
    parse_config(
        {"llm": {"providers": [{"name": "x", "type": "transformers", "model_path": "/m", "engine": "transformers"}]}}
    )
    with pytest.raises(ConfigError) as info:
        parse_config(
            {"llm": {"providers": [{"name": "x", "type": "transformers", "model_path": "/m", "engine": "llama.cpp"}]}}
        )
    text = str(info.value)
    assert "field 'engine'" in text and "use type 'local'" in text


def test_candle_is_read_but_never_written() -> None:
    config = loads_config('[llm]\n[[llm.providers]]\nname = "x"\ntype = "candle"\nrepo_id = "a/b"\n')
    assert config.providers[0].type == "local"
    dumped = dump_toml(config)
    assert 'type = "local"' in dumped and "candle" not in dumped
    # built directly, the model accepts the old name too
    assert LocalConfig(name="x", type="candle", repo_id="a/b").type == "local"  # type: ignore[arg-type]


def test_anthropic_alias() -> None:
    config = parse_config({"llm": {"providers": [{"name": "c", "type": "anthropic"}]}})
    provider = config.providers[0]
    assert isinstance(provider, ClaudeConfig)
    assert provider.type == "claude"
    assert provider.key_env == "ANTHROPIC_API_KEY"


def test_env_interpolation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEPH_TEST_MODEL", "qwen3:8b")
    monkeypatch.delenv("ZEPH_TEST_HOST", raising=False)
    config = loads_config(
        """
        [llm]
        [[llm.providers]]
        name = "o"
        type = "ollama"
        model = "${ZEPH_TEST_MODEL}"
        base_url = "${ZEPH_TEST_HOST:-http://127.0.0.1:11434}"
        keep_alive = "${ZEPH_TEST_UNSET_KEEP:-}"
        """.replace("\n        ", "\n")
    )
    provider = config.providers[0]
    assert isinstance(provider, OllamaConfig)
    assert provider.model == "qwen3:8b"
    assert provider.base_url == "http://127.0.0.1:11434"
    assert provider.keep_alive == ""


def test_env_interpolation_set_value_wins_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEPH_TEST_HOST", "http://10.0.0.2:11434")
    config = parse_config(
        {"llm": {"providers": [{"name": "o", "type": "ollama", "model": "m", "base_url": "${ZEPH_TEST_HOST:-x}"}]}}
    )
    assert config.providers[0].base_url == "http://10.0.0.2:11434"  # type: ignore[attr-defined]


def test_zeph_llm_defaults() -> None:
    config = parse_config({"llm": {"providers": [{"name": "x", "type": "candle", "repo_id": "a/b"}]}})
    provider = config.providers[0]
    assert isinstance(provider, CandleConfig)
    assert provider.queue_capacity == 4
    assert provider.inference_timeout_secs == 120
    assert provider.device == "cpu"
    gen = provider.generation
    assert gen == GenerationConfig()
    assert gen.temperature == 0.7
    assert gen.seed == 42
    assert gen.repeat_penalty == 1.1
    assert gen.max_tokens == 512


def test_remote_defaults() -> None:
    config = parse_config(
        {
            "llm": {
                "providers": [
                    {"name": "c", "type": "claude"},
                    {"name": "g", "type": "openai"},
                    {"name": "r", "type": "router", "providers": ["c", "g"]},
                    {"name": "m", "type": "mock"},
                ]
            }
        }
    )
    claude, gpt, router, mock = config.providers
    assert isinstance(claude, ClaudeConfig) and claude.model.startswith("claude-") and claude.timeout_secs == 120
    assert gpt.model_name == "gpt-4o-mini"
    assert isinstance(router, RouterConfig) and router.strategy == "fallback"
    assert router.model_name == "router(c,g)"
    assert isinstance(mock, MockConfig) and mock.model == "mock-1"
    assert config.names() == ["c", "g", "r", "m"]
    assert config.provider("g") is gpt
    assert config.provider("zzz") is None


def test_example_and_mock_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "configs"
    example = load_config(root / "example.toml")
    types = {p.type for p in example.providers}
    assert types >= {"local", "claude", "openai", "compatible", "ollama", "router", "mock"}
    assert "api_key =" not in (root / "example.toml").read_text()
    mock = load_config(root / "mock.toml")
    assert {p.type for p in mock.providers} <= {"mock", "router"}


def test_builtin_default_and_starter_are_valid() -> None:
    from zeph_providers.defaults import DEFAULT_CONFIG_TOML, STARTER_CONFIG_TOML

    default = loads_config(DEFAULT_CONFIG_TOML, source="<default>")
    assert default.names() == ["local", "mock"]
    assert default.default == "local"
    starter = loads_config(STARTER_CONFIG_TOML)
    assert "local" in starter.names()


# ----- dump -------------------------------------------------------------------------------


def test_dump_toml_round_trips() -> None:
    root = Path(__file__).resolve().parents[2] / "configs"
    original = load_config(root / "example.toml")
    again = loads_config(dump_toml(original))
    assert again.names() == original.names()
    assert again.default == original.default
    assert again.embedding == original.embedding
    assert config_to_dict(again) == config_to_dict(original)
    for a, b in zip(original.providers, again.providers, strict=True):
        assert a.model_dump() == b.model_dump()


def test_dump_toml_never_writes_an_inline_secret() -> None:
    secret = "sk-zeph-SECRET-dump-998877"
    config = parse_config(
        {"llm": {"providers": [{"name": "g", "type": "openai", "api_key": secret, "api_key_env": "MY_KEY"}]}}
    )
    text = dump_toml(config)
    assert secret not in text
    assert "api_key =" not in text
    assert 'api_key_env = "MY_KEY"' in text
    assert secret not in repr(config_to_dict(config))
    again = loads_config(text)
    assert again.providers[0].model_dump(exclude={"api_key"}) == config.providers[0].model_dump(exclude={"api_key"})


# ----- fuzz -------------------------------------------------------------------------------

VALID_DOCUMENT = """\
[llm]
default = "a"

[[llm.providers]]
name = "a"
type = "candle"
repo_id = "org/m"
queue_capacity = 4
[llm.providers.generation]
temperature = 0.7

[[llm.providers]]
name = "b"
type = "openai"
model = "${MODEL:-gpt-4o-mini}"

[[llm.providers]]
name = "r"
type = "router"
providers = ["a", "b"]
"""

_KEYS = st.sampled_from(
    ["llm", "providers", "name", "type", "model", "default", "embedding", "generation", "repo_id", "base_url",
     "temperature", "queue_capacity", "strategy", "responses", "api_key", "x", "${A}", "max_tokens"]
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["mock", "candle", "router", "openai", "claude", "ollama", "local", "${X}", "${1}", "a", "b"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=5)),
    max_leaves=20,
)


def _expect_only_config_error(call: Callable[[], Any]) -> None:
    with contextlib.suppress(ConfigError):
        call()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_fuzz_random_text_only_raises_config_error(text: str) -> None:
    _expect_only_config_error(lambda: loads_config(text, source="fuzz.toml"))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=len(VALID_DOCUMENT)), st.integers(0, 3), st.text(max_size=6)),
        min_size=1,
        max_size=6,
    )
)
def test_fuzz_mutated_toml_only_raises_config_error(edits: list[tuple[int, int, str]]) -> None:
    text = VALID_DOCUMENT
    for position, delete, insert in edits:
        position = min(position, len(text))
        text = text[:position] + insert + text[position + delete :]
    _expect_only_config_error(lambda: loads_config(text, source="fuzz.toml"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        _VALUES,
        st.fixed_dictionaries({"llm": st.dictionaries(_KEYS, _VALUES, max_size=4)}),
        st.fixed_dictionaries(
            {"llm": st.fixed_dictionaries({"providers": st.lists(st.dictionaries(_KEYS, _VALUES, max_size=6))})}
        ),
    )
)
def test_fuzz_random_structures_only_raise_config_error(data: Any) -> None:
    _expect_only_config_error(lambda: parse_config(data, source="fuzz"))


# ----- naming: the local backend is "local" wherever a user reads it ------------------------


def test_defaults_starter_and_examples_say_local_never_candle() -> None:
    from zeph_providers.defaults import DEFAULT_CONFIG_TOML, STARTER_CONFIG_TOML

    root = Path(__file__).resolve().parents[2] / "configs"
    texts = {"default": DEFAULT_CONFIG_TOML, "starter": STARTER_CONFIG_TOML}
    texts.update({path.name: path.read_text(encoding="utf-8") for path in root.glob("*.toml")})
    for label, text in texts.items():
        types = {p.type for p in loads_config(text).providers}
        assert "candle" not in types, label
        assert not re.search(r'^type = "candle"', text, re.M), label
    assert "local" in {p.type for p in loads_config(DEFAULT_CONFIG_TOML).providers}


# ----- router cycles are config problems ----------------------------------------------------


def test_router_cycle_is_reported_at_load_time() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "llm": {
                    "providers": [
                        {"name": "m", "type": "mock"},
                        {"name": "a", "type": "router", "providers": ["m", "b"]},
                        {"name": "b", "type": "router", "providers": ["a"]},
                    ]
                }
            },
            source="cyc.toml",
        )
    text = str(info.value)
    assert text.startswith("cyc.toml: ")
    assert "routers form a cycle: a -> b -> a" in text
    assert "providers[1] ('a'), field 'providers'" in text
    assert text.count("routers form a cycle") == 1  # one cycle, reported once


def test_longer_router_cycle_and_a_shared_member_that_is_no_cycle() -> None:
    diamond = parse_config(
        {
            "llm": {
                "providers": [
                    {"name": "m", "type": "mock"},
                    {"name": "left", "type": "router", "providers": ["m"]},
                    {"name": "right", "type": "router", "providers": ["m", "left"]},
                    {"name": "top", "type": "router", "providers": ["left", "right"]},
                ]
            }
        }
    )
    assert diamond.names() == ["m", "left", "right", "top"]
    with pytest.raises(ConfigError, match=r"routers form a cycle: x -> y -> z -> x"):
        parse_config(
            {
                "llm": {
                    "providers": [
                        {"name": "x", "type": "router", "providers": ["y"]},
                        {"name": "y", "type": "router", "providers": ["z"]},
                        {"name": "z", "type": "router", "providers": ["x"]},
                    ]
                }
            }
        )


# ----- hostile files: deep nesting, huge values ---------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[llm]\nx = " + "[" * 5000 + "]" * 5000 + "\n",  # arrays
        "[llm]\nx = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n",  # inline tables
        "[llm]\n" + ".".join(["k"] * 3000) + " = 1\n",  # dotted keys
        "[llm]\n[llm." + ".".join(["k"] * 3000) + "]\n",  # a table header
    ],
    ids=["arrays", "inline-tables", "dotted-keys", "table-header"],
)
def test_deeply_nested_toml_is_a_config_error_naming_the_file(tmp_path: Path, body: str) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "nested" in str(info.value)


def test_deeply_nested_dict_is_a_config_error() -> None:
    deep: dict[str, Any] = {}
    current = deep
    for _ in range(5000):
        current["k"] = {}
        current = current["k"]
    with pytest.raises(ConfigError, match="nested"):
        parse_config({"llm": {"providers": [{"name": "m", "type": "mock", "x": deep}]}}, source="d")


def test_check_names_the_file_of_a_deeply_nested_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zeph_providers.cli import main

    path = tmp_path / "deep.toml"
    path.write_text("[llm]\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    assert main(["--config", str(path), "check"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err
    assert "RecursionError" not in err


HUGE = "x" * 10_000_000


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "m", "type": HUGE},
        {"name": "m", "type": "mock", HUGE: 1},
        {"name": HUGE, "type": "mock"},
        {"name": "r", "type": "router", "providers": [HUGE]},
        {"name": "m", "type": "mock", "model": "${" + HUGE + "}"},
        {"name": "m", "type": "mock", "model": "${A" + HUGE + "}"},
        {"name": "m", "type": "mock", "chunk_size": HUGE},
    ],
    ids=["type", "key", "name", "member", "malformed-var", "unset-var", "bad-value"],
)
def test_huge_value_gives_a_short_config_error(entry: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"llm": {"default": HUGE, "providers": [entry], HUGE: 1}}, source="huge.toml")
    text = str(info.value)
    assert len(text) < 5_000, len(text)
    assert "huge.toml" in text and "characters" in text


# ----- credentials in base_url ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://user:sk-urlsecret-123456@127.0.0.1:9/v1",
        "https://sk-urlsecret-123456@api.example.com/v1",
        "https://api.example.com/v1?key=sk-urlsecret-123456",
        "https://api.example.com/v1?api-version=1&access_token=sk-urlsecret-123456",
        "https://api.example.com/v1?x=sk-urlsecret-1234567890abcdef",
    ],
)
def test_credentials_in_base_url_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"llm": {"providers": [{"name": "g", "type": "compatible", "model": "m", "base_url": url}]}})
    text = str(info.value)
    assert "field 'base_url'" in text and "api_key_env" in text
    assert "urlsecret" not in text
    assert "1234567890abcdef" not in text


def test_ordinary_query_parameters_are_fine() -> None:
    config = parse_config(
        {
            "llm": {
                "providers": [
                    {"name": "g", "type": "compatible", "model": "m", "base_url": "https://h/v1?api-version=2024-02-01"}
                ]
            }
        }
    )
    assert config.providers[0].base_url == "https://h/v1?api-version=2024-02-01"  # type: ignore[attr-defined]
