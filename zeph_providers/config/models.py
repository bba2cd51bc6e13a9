"""The config models: one pydantic class per provider type, plus `[llm]` itself.

Secrets are `SecretStr`s or environment variable names, read only when a provider is built, and
never written back by `dump_toml`. Which `type` selects which model is the catalog's business
(`zeph_providers.config.catalog`); loading a file is `zeph_providers.config.loading`'s.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from zeph_providers.errors import ConfigError, register_secret
from zeph_providers.options import ReasoningEffort
from zeph_providers.types import CacheSettings

__all__ = [
    "CandleConfig",
    "ClaudeConfig",
    "CompatibleConfig",
    "GatewayConfig",
    "GatewayKeyConfig",
    "GenerationConfig",
    "LlmConfig",
    "LocalConfig",
    "MockConfig",
    "OllamaConfig",
    "OpenAIConfig",
    "PricingConfig",
    "ProviderConfig",
    "ProviderConfigBase",
    "RemoteConfig",
    "RouterConfig",
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


class PricingConfig(_Strict):
    """`[llm.providers.pricing]`: USD per million tokens, for models the price library does not know
    (self-hosted, new, negotiated). It replaces the library's price for this provider's calls."""

    input: Annotated[float, Field(ge=0)]
    """Per million uncached input tokens."""
    output: Annotated[float, Field(ge=0)]
    """Per million output tokens."""
    cache_read: Annotated[float, Field(ge=0)] | None = None
    """Per million input tokens read from the cache (default: the input price)."""
    cache_write: Annotated[float, Field(ge=0)] | None = None
    """Per million input tokens written to the cache (default: the input price)."""


StructuredMode = Literal["native", "tool", "prompted"]


class ProviderConfigBase(_Strict):
    """Fields every provider accepts."""

    type_name: ClassVar[str] = ""
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
    """Unique name used by `registry.get(name)`; letters, digits, `_.:-`."""
    type: str
    max_concurrent: Annotated[int, Field(ge=1)] | None = None
    """At most this many calls in flight at once through this provider (a semaphore)."""
    pricing: PricingConfig | None = None
    """Prices per million tokens for this provider's calls, instead of the price library's."""
    budget_usd: Annotated[float, Field(ge=0)] | None = None
    """Refuse calls (`BudgetExceededError`) once this provider's calls have cost this much."""
    structured_retries: Annotated[int, Field(ge=0, le=10)] = 1
    """`chat()` re-asks this many times, feeding the validation error back, when a reply does not
    match `response_format` (0: raise `StructuredOutputError` at once)."""
    structured_output: StructuredMode | None = None
    """How `response_format` is asked for: native (the API's JSON schema), tool (a forced tool
    whose arguments are the answer) or prompted (the schema in the system prompt, the JSON taken
    from the reply text). None: the backend's own way. Each type accepts only the modes it can do."""

    structured_modes: ClassVar[tuple[str, ...]] = ("native",)
    """The `structured_output` values this type accepts."""

    @field_validator("structured_output")
    @classmethod
    def _known_mode(cls, value: str | None) -> str | None:
        if value is not None and value not in cls.structured_modes:
            if not cls.structured_modes:
                raise ValueError(f"type {cls.type_name!r} takes no structured_output (its members choose their own)")
            accepted = ", ".join(repr(mode) for mode in cls.structured_modes)
            raise ValueError(f"type {cls.type_name!r} cannot do {value!r} structured output (it accepts {accepted})")
        return value

    @property
    def model_name(self) -> str:
        return str(getattr(self, "model", "") or "")

    def secret(self) -> SecretStr | None:
        """The API key, read now (inline `api_key`, else the `api_key_env` variable)."""
        return None


_CREDENTIAL_NAME = re.compile(r"(?i)key|token|secret|passw(or)?d|passwd|auth|credential|signature|^sig$|^code$")
_CREDENTIAL_VALUE = re.compile(
    r"^(sk|pk|rk|gsk|xai|hf|ghp|gho|github_pat|AIza)[-_A-Za-z0-9]{8,}|^[-_A-Za-z0-9+/=.]{32,}$"
)


def _refuse_credentials(url: str) -> None:
    """A key in `base_url` would reach request logs and error text: refuse it, pointing at api_key_env."""
    parts = urlsplit(url)
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        found.extend(piece for piece in userinfo.split(":") if piece)
        where = "user:password@ in the address"
    else:
        where = ""
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if value and (_CREDENTIAL_NAME.search(name) or _CREDENTIAL_VALUE.match(value)):
            found.append(value)
            where = where or f"the query parameter {name[:40]!r}"
    if not found and not where:
        return
    for value in found:  # it must not show up anywhere else either
        register_secret(value)
    raise ValueError(
        f"must not carry credentials ({where}); put the key in an environment variable and name "
        "it with `api_key_env` (or set `api_key`)"
    )


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
        _refuse_credentials(value)
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
    structured_modes: ClassVar[tuple[str, ...]] = ("tool", "prompted")
    model: Annotated[str, Field(min_length=1)] = "claude-sonnet-4-6"
    max_tokens: Annotated[int, Field(ge=1)] | None = 4096
    """Default `max_tokens` (Claude requires one)."""
    thinking_budget_tokens: Annotated[int, Field(ge=1024)] | None = None
    """Enable extended thinking with this token budget."""
    # ----- Claude features (issue 12): thinking modes, effort, prompt caching ---------------
    thinking: Literal["enabled", "adaptive", "disabled"] | None = None
    """`thinking.type`: "enabled" needs `thinking_budget_tokens` (which alone implies it);
    "adaptive" lets the model decide; "disabled" turns thinking off. None: the model's default."""
    thinking_display: Literal["summarized", "omitted"] | None = None
    """`thinking.display`: "omitted" returns signed blocks with empty text (faster first token)."""
    interleaved_thinking: bool = False
    """Think between tool calls with a budget: sends the `interleaved-thinking-2025-05-14` beta
    header (adaptive thinking interleaves without it)."""
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    """`output_config.effort`: how much effort the model spends (models that take it)."""
    cache: CacheSettings | bool | None = None
    """Default prompt caching for every call (`CacheSettings`, or true for its defaults); a
    call's `cache=` replaces it."""


class OpenAIConfig(RemoteConfig):
    type_name: ClassVar[str] = "openai"
    default_key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    type: Literal["openai"] = "openai"
    structured_modes: ClassVar[tuple[str, ...]] = ("native", "tool", "prompted")
    model: Annotated[str, Field(min_length=1)] = "gpt-4o-mini"
    organization: str | None = None
    """OpenAI organization id sent with each request."""
    use_max_completion_tokens: bool | None = None
    """Send `max_completion_tokens` instead of `max_tokens`; None decides from the model name."""
    vision: bool | None = None
    """Override the vision flag (None: guess from the model name)."""
    reasoning_effort: ReasoningEffort | None = None
    """Default `reasoning_effort` for reasoning models (a call's own value wins); not sent when None."""
    parallel_tool_calls: bool | None = None
    """Default `parallel_tool_calls` when tools are sent (a call's own value wins); None: the API's default."""
    strict_tools: bool = False
    """Send tools whose schema allows it as strict function tools (`strict: true`, the schema made
    strict as for `response_format`); a tool's own `ToolDefinition.strict` wins."""
    embedding_dimensions: Annotated[int, Field(ge=1)] | None = None
    """Default `dimensions` for embeddings (text-embedding-3 and later); a call's own value wins."""


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
    structured_modes: ClassVar[tuple[str, ...]] = ()
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


class LocalConfig(ProviderConfigBase):
    """The in-process backend: llama.cpp for GGUF files, transformers otherwise (zeph-llm's "candle" is read too)."""

    type_name: ClassVar[str] = "local"
    type: Literal["local"] = "local"
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

    @field_validator("type", mode="before")
    @classmethod
    def _zeph_llm_type(cls, value: Any) -> Any:
        return "local" if value == "candle" else value  # read forever, never written

    @model_validator(mode="after")
    def _one_source(self) -> LocalConfig:
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


class GatewayKeyConfig(_Strict):
    """One client key of `zeph-providers serve` (`[[llm.gateway.keys]]`): exactly one of `key_env`
    (the key itself in that environment variable) or `key_sha256` (its SHA-256, hex)."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    """Shown in logs and errors instead of the key."""
    key_env: Annotated[str, Field(min_length=1)] | None = None
    """An environment variable holding the key (read when the gateway starts)."""
    key_sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    """The key's SHA-256 digest as 64 hex digits (`printf %s KEY | sha256sum`): no key in the file."""
    providers: list[str] | None = None
    """The providers (request `model`s) this key may use; absent: all of them."""
    rpm: Annotated[int, Field(ge=1)] | None = None
    """Requests per minute this key may make (429 with Retry-After beyond)."""
    tpm: Annotated[int, Field(ge=1)] | None = None
    """Tokens per minute this key may use (429 with Retry-After beyond)."""
    budget_usd: Annotated[float, Field(ge=0)] | None = None
    """USD this key may spend (priced calls, `resp.cost`) while the gateway runs; 429 beyond."""

    @model_validator(mode="after")
    def _one_source(self) -> GatewayKeyConfig:
        if (self.key_env is None) == (self.key_sha256 is None):
            raise ValueError("a gateway key takes exactly one of `key_env` or `key_sha256`")
        return self


class GatewayConfig(_Strict):
    """`[llm.gateway]`: what `zeph-providers serve` accepts (see docs/gateway.md)."""

    keys: list[GatewayKeyConfig] = Field(default_factory=list)
    """Client keys (`[[llm.gateway.keys]]`); none: only loopback clients are served."""
    max_body_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    """Largest request body accepted (413 beyond)."""
    max_tokens: Annotated[int, Field(ge=1)] = 65536
    """Largest `max_tokens` a request may ask for (400 beyond)."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed by CORS; empty (the default): CORS off."""


CandleConfig = LocalConfig
"""The old name of `LocalConfig` (zeph-llm called the backend "candle"); kept as an alias."""

ProviderConfig = LocalConfig | ClaudeConfig | OpenAIConfig | CompatibleConfig | OllamaConfig | RouterConfig | MockConfig


class LlmConfig(BaseModel):
    """The whole `[llm]` table, validated."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    default: str | None = None
    embedding: str | None = None
    providers: list[ProviderConfigBase] = Field(default_factory=list)
    telemetry: bool = True
    """OpenTelemetry spans and metrics (when `opentelemetry-api` is installed); false turns them off."""
    telemetry_content: bool = False
    """Also record message contents on spans (off: prompts and replies never leave the process)."""
    budget_usd: Annotated[float, Field(ge=0)] | None = None
    """Refuse calls once all providers together have cost this much."""
    gateway: GatewayConfig | None = None
    """`[llm.gateway]`: keys and limits of `zeph-providers serve` (docs/gateway.md)."""
    source: str | None = Field(default=None, exclude=True)

    def provider(self, name: str) -> ProviderConfigBase | None:
        return next((p for p in self.providers if p.name == name), None)

    def names(self) -> list[str]:
        return [p.name for p in self.providers]

    def __repr__(self) -> str:
        return f"LlmConfig(source={self.source!r}, providers={self.names()!r}, default={self.default!r})"
