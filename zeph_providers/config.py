"""Typed configuration: `[llm]` and `[[llm.providers]]` tables -> pydantic models.

Loading is strict and fails fast: unknown keys (with a "did you mean" hint), wrong types,
out-of-range values, duplicate names, routers naming unknown providers and unset `${VAR}`s are all
collected into ONE `ConfigError` that names the file, each provider (index and name) and field.
Secrets are `SecretStr`s or environment variable names, read only when a provider is built, and
never written back by `dump_toml`.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from zeph_providers.errors import ConfigError, ConfigProblem, register_secret

__all__ = [
    "BUILTIN_TYPES",
    "CandleConfig",
    "ClaudeConfig",
    "CompatibleConfig",
    "GenerationConfig",
    "LlmConfig",
    "MockConfig",
    "OllamaConfig",
    "OpenAIConfig",
    "ProviderConfig",
    "RemoteConfig",
    "RouterConfig",
    "TYPE_ALIASES",
    "dump_toml",
    "load_config",
    "parse_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        validate_default=True,
        hide_input_in_errors=True,
        defer_build=True,  # schemas are built at first validation, keeping `import` cheap
    )


class GenerationConfig(_Strict):
    """Sampling defaults for the local backend (zeph-llm's defaults)."""

    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] = 512
    """Most new tokens per reply."""
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7
    """Sampling temperature; 0 means greedy decoding."""
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches this."""
    top_k: Annotated[int, Field(ge=1)] | None = None
    """Sample only among the k most likely tokens."""
    repeat_penalty: Annotated[float, Field(ge=1.0, le=2.0)] = 1.1
    """Penalty for tokens already generated (1.0 = none)."""
    seed: Annotated[int, Field(ge=0)] = 42
    """Random seed for sampling, so runs repeat."""
    stop: list[str] = Field(default_factory=list)
    """Strings that end the reply (not included in it)."""


class ProviderConfigBase(_Strict):
    """Fields every provider accepts."""

    type_name: ClassVar[str] = ""
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
    """Unique name used by `registry.get(name)`; letters, digits, `_.:-`."""
    type: str
    max_concurrent: Annotated[int, Field(ge=1)] | None = None
    """At most this many calls in flight at once through this provider (a semaphore)."""

    @property
    def model_name(self) -> str:
        return str(getattr(self, "model", "") or "")

    def secret(self) -> SecretStr | None:
        """The API key, read now (inline `api_key`, else the `api_key_env` variable)."""
        return None


class RemoteConfig(ProviderConfigBase):
    """Fields shared by HTTP backends."""

    default_key_env: ClassVar[str | None] = None
    key_required: ClassVar[bool] = True

    model: Annotated[str, Field(min_length=1)]
    """The model name the API expects."""
    base_url: str | None = None
    """Override the API's address (http or https)."""
    api_key: SecretStr | None = None
    """Inline API key (prefer `api_key_env`); never printed, logged or dumped."""
    api_key_env: str | None = None
    """Environment variable holding the API key (default per type: ANTHROPIC_API_KEY, OPENAI_API_KEY)."""
    timeout_secs: Annotated[float, Field(gt=0)] = 120.0
    """Total deadline for one call, across retries and the whole stream."""
    connect_timeout_secs: Annotated[float, Field(gt=0)] = 10.0
    """Seconds to establish a connection."""
    max_retries: Annotated[int, Field(ge=0, le=20)] = 2
    """Retries after the first attempt for 429, 408, 5xx and connection failures."""
    max_connections: Annotated[int, Field(ge=1)] = 100
    """Connection pool size of this provider's HTTP client."""
    allow_insecure_http: bool = False
    """Allow an API key over plain http to a non-loopback host (refused by default)."""
    embedding_model: str | None = None
    """Model used by `embed`/`embed_batch`; embeddings are off without it."""
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    """Default `max_tokens` for each call."""
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    """Default sampling temperature for each call."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _remember_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            register_secret(value.get_secret_value())
        return value

    @property
    def key_env(self) -> str | None:
        return self.api_key_env or self.default_key_env

    def secret(self) -> SecretStr | None:
        if self.api_key is not None:
            return self.api_key
        env = self.key_env
        if env:
            value = os.environ.get(env)
            if value:
                register_secret(value)
                return SecretStr(value)
        if self.key_required:
            raise ConfigError(
                f"no API key: set the environment variable {env!r} or `api_key` in the config",
                provider=self.name,
            )
        return None


class ClaudeConfig(RemoteConfig):
    type_name: ClassVar[str] = "claude"
    default_key_env: ClassVar[str | None] = "ANTHROPIC_API_KEY"
    type: Literal["claude"] = "claude"
    model: Annotated[str, Field(min_length=1)] = "claude-sonnet-4-6"
    max_tokens: Annotated[int, Field(ge=1)] | None = 4096
    """Default `max_tokens` (Claude requires one)."""
    thinking_budget_tokens: Annotated[int, Field(ge=1024)] | None = None
    """Enable extended thinking with this token budget."""


class OpenAIConfig(RemoteConfig):
    type_name: ClassVar[str] = "openai"
    default_key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    type: Literal["openai"] = "openai"
    model: Annotated[str, Field(min_length=1)] = "gpt-4o-mini"
    organization: str | None = None
    """OpenAI organization id sent with each request."""
    use_max_completion_tokens: bool | None = None
    """Send `max_completion_tokens` instead of `max_tokens`; None decides from the model name."""
    vision: bool | None = None
    """Override the vision flag (None: guess from the model name)."""


class CompatibleConfig(OpenAIConfig):
    """Any OpenAI-compatible server (vLLM, TGI, llama.cpp, LM Studio, Groq, ...)."""

    type_name: ClassVar[str] = "compatible"
    default_key_env: ClassVar[str | None] = None
    key_required: ClassVar[bool] = False
    type: Literal["compatible"] = "compatible"  # type: ignore[assignment]
    base_url: str
    model: Annotated[str, Field(min_length=1)]


class OllamaConfig(RemoteConfig):
    type_name: ClassVar[str] = "ollama"
    key_required: ClassVar[bool] = False
    type: Literal["ollama"] = "ollama"
    base_url: str | None = "http://localhost:11434"
    keep_alive: str | None = None
    """How long Ollama keeps the model loaded after a call (e.g. "5m")."""
    think: bool | None = None
    """Ask thinking models to think (their thinking arrives as ThinkingChunks)."""


Strategy = Literal["fallback", "round_robin", "latency"]


class RouterConfig(ProviderConfigBase):
    type_name: ClassVar[str] = "router"
    type: Literal["router"] = "router"
    providers: Annotated[list[str], Field(min_length=1)]
    """Member provider names, declared in the same file."""
    strategy: Strategy = "fallback"
    """fallback: in order; round_robin: rotate; latency: fastest healthy first (learned)."""
    timeout_secs: Annotated[float, Field(gt=0)] = 300.0
    """One deadline across all attempts and members."""
    failure_threshold: Annotated[int, Field(ge=1)] = 3
    """Consecutive failures that open a member's circuit breaker."""
    cooldown_secs: Annotated[float, Field(ge=0)] = 30.0
    """How long an open breaker skips its member before one probe."""
    failure_window: Annotated[int, Field(ge=0, le=10_000)] = 50
    """Recent outcomes per member used for the failure-rate rule (0 turns the rule off)."""
    failure_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    """A member's breaker also opens when this share of its recent outcomes failed."""
    fallback_on_client_error: bool = False
    """Also try the next member after InvalidRequestError / AuthenticationError."""

    @property
    def model_name(self) -> str:
        return "router(" + ",".join(self.providers) + ")"


Device = Literal["cpu", "cuda", "mps", "auto"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
TemplateName = Literal["auto", "chatml", "llama3", "mistral", "phi3", "raw"]


class CandleConfig(ProviderConfigBase):
    """The local backend (zeph-llm's "candle" provider): llama.cpp for GGUF files, transformers otherwise."""

    type_name: ClassVar[str] = "candle"
    type: Literal["candle"] = "candle"
    repo_id: str | None = None
    """A Hugging Face repo id (needs the model in the local cache when offline)."""
    revision: str | None = None
    """Branch, tag or commit of `repo_id`."""
    model_path: str | None = None
    """A folder, a `.gguf` file, or `package:DIST_PACKAGE/relative/path` shipped by an installed package."""
    gguf_file: str | None = None
    """With `repo_id` or a folder `model_path`: the GGUF file inside it."""
    embedding_repo: str | None = None
    """Encoder for embeddings (same source forms as the model); embeddings are off without it."""
    embedding_revision: str | None = None
    """Revision of `embedding_repo`."""
    device: Device = "cpu"
    """Where the model runs; auto picks cuda, then mps, then cpu."""
    dtype: DType = "auto"
    """Weight dtype; auto is float32 on cpu."""
    chat_template: TemplateName = "auto"
    """auto: the tokenizer's own template; or one of zeph-llm's built-in templates."""
    engine: Literal["auto", "transformers", "llama.cpp"] = "auto"
    """auto: llama.cpp (xllamacpp) for a GGUF file, transformers otherwise; llama.cpp needs a GGUF source."""
    n_ctx: Annotated[int, Field(ge=0)] | None = None
    """llama.cpp engine: context window in tokens (default 4096; 0 = the model's training context)."""
    inference_timeout_secs: Annotated[float, Field(gt=0)] = 120.0
    """Bound on waiting for a queue slot, and separately on waiting for the reply."""
    queue_capacity: Annotated[int, Field(ge=1, le=10_000)] = 4
    """Requests that may wait for the worker; more callers wait up to the timeout."""
    hf_token_env: str = "HF_TOKEN"
    """Environment variable with a Hugging Face token for gated repos."""
    max_batch_size: Annotated[int, Field(ge=1, le=256)] = 8
    """Most requests the worker generates for together."""
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    """Sampling defaults, overridable per call."""

    @model_validator(mode="after")
    def _one_source(self) -> CandleConfig:
        if self.repo_id is None and self.model_path is None:
            raise ValueError("set `repo_id` (a Hugging Face repo) or `model_path` (folder, .gguf or package:...)")
        if self.repo_id is not None and self.model_path is not None:
            raise ValueError("set only one of `repo_id` and `model_path`")
        return self

    @property
    def model_name(self) -> str:
        source = self.repo_id or self.model_path or ""
        if self.gguf_file:
            source += "/" + self.gguf_file
        return source


class MockConfig(ProviderConfigBase):
    """Scripted replies for tests and demos; see `zeph_providers.backends.mock.MockProvider`."""

    type_name: ClassVar[str] = "mock"
    type: Literal["mock"] = "mock"
    model: str = "mock-1"
    """Model name reported in responses."""
    responses: list[str] = Field(default_factory=lambda: ["Hello from the mock provider."])
    """Replies in order; the last one repeats."""
    chunk_size: Annotated[int, Field(ge=1)] = 4
    """Characters per streamed chunk."""
    delay_secs: Annotated[float, Field(ge=0)] = 0.0
    """Pause before each chunk."""
    embedding_dim: Annotated[int, Field(ge=1, le=65536)] = 8


ProviderConfig = (
    CandleConfig | ClaudeConfig | OpenAIConfig | CompatibleConfig | OllamaConfig | RouterConfig | MockConfig
)

BUILTIN_TYPES: dict[str, type[ProviderConfigBase]] = {
    "candle": CandleConfig,
    "claude": ClaudeConfig,
    "openai": OpenAIConfig,
    "compatible": CompatibleConfig,
    "ollama": OllamaConfig,
    "router": RouterConfig,
    "mock": MockConfig,
}
TYPE_ALIASES: dict[str, str] = {"local": "candle", "transformers": "candle", "anthropic": "claude"}


class LlmConfig(BaseModel):
    """The whole `[llm]` table, validated."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    default: str | None = None
    embedding: str | None = None
    providers: list[ProviderConfigBase] = Field(default_factory=list)
    source: str | None = Field(default=None, exclude=True)

    def provider(self, name: str) -> ProviderConfigBase | None:
        return next((p for p in self.providers if p.name == name), None)

    def names(self) -> list[str]:
        return [p.name for p in self.providers]

    def __repr__(self) -> str:
        return f"LlmConfig(source={self.source!r}, providers={self.names()!r}, default={self.default!r})"


# ----- loading ----------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{([^}]*)\}")


def _interpolate(value: Any, path: tuple[str | int, ...], problems: list[tuple[tuple[str | int, ...], str]]) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string, recording unset or malformed ones."""
    if isinstance(value, str):
        if "${" not in value:
            return value

        def substitute(match: re.Match[str]) -> str:
            name, fallback, bad = match.group(1), match.group(2), match.group(3)
            if bad is not None:
                problems.append((path, f"malformed variable reference ${{{bad}}}: use ${{NAME}} or ${{NAME:-default}}"))
                return ""
            found = os.environ.get(name)
            if found is not None:
                return found
            if fallback is not None:
                return fallback
            problems.append((path, f"environment variable {name!r} is not set (referenced as ${{{name}}})"))
            return ""

        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), problems) for i, v in enumerate(value)]
    return value


def _hint(unknown: str, known: list[str]) -> str:
    close = difflib.get_close_matches(unknown, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (valid keys: {', '.join(sorted(known))})"


def _field_names(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
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


def _problems_from_validation(
    exc: ValidationError,
    model: type[BaseModel],
    *,
    index: int | None,
    name: str | None,
) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(error["loc"])
        field = ".".join(str(p) for p in loc) or None
        if error["type"] == "extra_forbidden":
            key = str(loc[-1])
            message = f"unknown key {key!r}" + _hint(key, _field_names(model, loc[:-1]))
        elif error["type"] == "missing":
            message = "required field is missing"
        else:
            message = error["msg"]
            ctx_value = error.get("ctx", {}).get("expected")
            if ctx_value and "expected" not in message.lower():
                message += f" (expected {ctx_value})"
        problems.append(ConfigProblem(message, index=index, provider=name, field=field))
    return problems


ConfigResolver = Callable[[str], "type[ProviderConfigBase] | None"]


def _resolve_type(type_name: str) -> type[ProviderConfigBase] | None:
    canonical = TYPE_ALIASES.get(type_name, type_name)
    if canonical in BUILTIN_TYPES:
        return BUILTIN_TYPES[canonical]
    from zeph_providers.factory import plugin_config_model

    return plugin_config_model(canonical)


def _known_types() -> list[str]:
    from zeph_providers.factory import plugin_names

    return sorted({*BUILTIN_TYPES, *TYPE_ALIASES, *plugin_names()})


def parse_config(data: Mapping[str, Any], *, source: str | None = None) -> LlmConfig:
    """Validate a parsed TOML document (or an equivalent dict) into an `LlmConfig`."""
    problems: list[ConfigProblem] = []
    if not isinstance(data, Mapping):
        raise ConfigError("the config must be a table", source=source)
    top_unknown = [k for k in data if k != "llm"]
    for key in top_unknown:
        problems.append(ConfigProblem(f"unknown top-level table {key!r}" + _hint(key, ["llm"])))
    llm = data.get("llm")
    if llm is None:
        problems.append(ConfigProblem("missing the [llm] table (declare providers as [[llm.providers]])"))
        raise ConfigError("invalid configuration", problems=problems, source=source)
    if not isinstance(llm, Mapping):
        raise ConfigError("[llm] must be a table", problems=problems, source=source)

    interpolation: list[tuple[tuple[str | int, ...], str]] = []
    llm = _interpolate(dict(llm), (), interpolation)
    raw_providers = llm.get("providers", [])
    for path, message in interpolation:
        if path and path[0] == "providers" and len(path) > 1 and isinstance(path[1], int):
            idx = path[1]
            entry = raw_providers[idx] if isinstance(raw_providers, list) else {}
            pname = entry.get("name") if isinstance(entry, Mapping) else None
            field = ".".join(str(p) for p in path[2:]) or None
            problems.append(
                ConfigProblem(message, index=idx, provider=pname if isinstance(pname, str) else None, field=field)
            )
        else:
            problems.append(ConfigProblem(message, field=".".join(str(p) for p in path) or None))

    for key in llm:
        if key not in ("default", "embedding", "providers"):
            problems.append(
                ConfigProblem(f"unknown key {key!r} in [llm]" + _hint(key, ["default", "embedding", "providers"]))
            )

    providers: list[ProviderConfigBase] = []
    if not isinstance(raw_providers, list):
        problems.append(ConfigProblem("`providers` must be an array of tables ([[llm.providers]])", field="providers"))
        raw_providers = []
    seen: dict[str, int] = {}
    positions: list[int] = []  # providers[i] came from raw_providers[positions[i]]
    for index, raw in enumerate(raw_providers):
        if not isinstance(raw, Mapping):
            problems.append(ConfigProblem("each provider must be a table", index=index))
            continue
        name = raw.get("name") if isinstance(raw.get("name"), str) else None
        type_name = raw.get("type")
        if not isinstance(type_name, str):
            problems.append(
                ConfigProblem(
                    "missing `type`; one of " + ", ".join(repr(t) for t in _known_types()),
                    index=index,
                    provider=name,
                    field="type",
                )
            )
            continue
        try:
            model = _resolve_type(type_name)
        except ConfigError as exc:  # a plugin that fails to import: report it with the others
            problems.append(ConfigProblem(exc.message, index=index, provider=name, field="type"))
            continue
        if model is None:
            close = difflib.get_close_matches(type_name, _known_types(), n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                ConfigProblem(
                    f"unknown provider type {type_name!r}{hint}; known types: " + ", ".join(_known_types()),
                    index=index,
                    provider=name,
                    field="type",
                )
            )
            continue
        entry = dict(raw)
        entry["type"] = model.type_name or TYPE_ALIASES.get(type_name, type_name)
        try:
            providers.append(model.model_validate(entry))
            positions.append(index)
        except ValidationError as exc:
            problems.extend(_problems_from_validation(exc, model, index=index, name=name))
            continue
        if name is not None:
            if name in seen:
                problems.append(
                    ConfigProblem(
                        f"duplicate provider name {name!r} (first declared at providers[{seen[name]}])",
                        index=index,
                        provider=name,
                        field="name",
                    )
                )
            else:
                seen[name] = index

    names = {p.name for p in providers}
    all_declared = names | {
        r["name"] for r in raw_providers if isinstance(r, Mapping) and isinstance(r.get("name"), str)
    }
    for position, provider in zip(positions, providers, strict=True):
        if isinstance(provider, RouterConfig):
            for member in provider.providers:
                if member == provider.name:
                    problems.append(
                        ConfigProblem(
                            "a router cannot contain itself", index=position, provider=provider.name, field="providers"
                        )
                    )
                elif member not in all_declared:
                    problems.append(
                        ConfigProblem(
                            f"names unknown provider {member!r}"
                            + _hint(member, sorted(str(n) for n in all_declared if n)),
                            index=position,
                            provider=provider.name,
                            field="providers",
                        )
                    )
    for key in ("default", "embedding"):
        value = llm.get(key)
        if value is not None and (not isinstance(value, str) or value not in all_declared):
            problems.append(
                ConfigProblem(
                    f"[llm].{key} = {value!r} names no declared provider; declared: " + ", ".join(sorted(names)),
                    field=key,
                )
            )

    if problems:
        count = len(problems)
        raise ConfigError(
            f"invalid configuration ({count} problem{'s' if count != 1 else ''})",
            problems=problems,
            source=source,
        )
    return LlmConfig(default=llm.get("default"), embedding=llm.get("embedding"), providers=providers, source=source)


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
    return parse_config(data, source=source)


def config_to_dict(config: LlmConfig) -> dict[str, Any]:
    """A plain dict of the config, ready for TOML; inline secrets are left out."""
    llm: dict[str, Any] = {}
    if config.default:
        llm["default"] = config.default
    if config.embedding:
        llm["embedding"] = config.embedding
    providers = []
    for provider in config.providers:
        entry = provider.model_dump(mode="python", exclude_none=True, exclude={"api_key"})
        providers.append(_toml_safe(entry))
    llm["providers"] = providers
    return {"llm": llm}


def _toml_safe(value: Any) -> Any:
    if isinstance(value, SecretStr):  # never in clear
        return "**********"
    if isinstance(value, dict):
        return {k: _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_safe(v) for v in value]
    return value


def dump_toml(config: LlmConfig) -> str:
    """The config as TOML text. An inline `api_key` is never written: keep keys in `api_key_env`."""
    import tomli_w

    return tomli_w.dumps(config_to_dict(config))
