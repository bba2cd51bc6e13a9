"""Model metadata: `list_models()`, `context_window` / `fetch_context_window()`, `count_tokens()`.

Wire tests answer with each API's documented shapes (OpenAI `GET /v1/models`, Anthropic
`GET /v1/models` (paged), `GET /v1/models/{id}`, `POST /v1/messages/count_tokens`; Ollama
`GET /api/tags` and `POST /api/show` over a real socket to the wire-protocol server); the local
backend counts with the tiny model's real tokenizer. The real llama.cpp server is in
tests/integration/test_models_llamacpp.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest
from pydantic import SecretStr

from tests.fakes.ollama_server import OllamaServer
from tests.local.conftest import build_tiny_model, tiny_config
from zeph_providers import Registry
from zeph_providers.backends.claude import ClaudeProvider
from zeph_providers.backends.mock import MockProvider
from zeph_providers.backends.ollama import OllamaProvider
from zeph_providers.backends.openai import OpenAIProvider
from zeph_providers.base import BaseProvider
from zeph_providers.config import ClaudeConfig, CompatibleConfig, OllamaConfig, OpenAIConfig
from zeph_providers.errors import BadResponseError, UnsupportedCapabilityError
from zeph_providers.local.provider import LocalProvider
from zeph_providers.models_info import MODELS_CACHE_SECS, ModelInfo, ModelsCache, known_context_window
from zeph_providers.types import Message, ToolDefinition

HELLO = [Message.system("Be brief."), Message.user("Hello, world!")]
WEATHER = ToolDefinition(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


class Recorder:
    """An httpx2 handler answering by path; records (method, path, query, body)."""

    def __init__(self, routes: dict[str, Any]) -> None:
        self.routes = routes
        self.seen: list[tuple[str, str, str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content) if request.content else None
        self.seen.append((request.method, request.url.path, request.url.query.decode(), body))
        answer = self.routes.get(request.url.path)
        if answer is None:
            return httpx2.Response(404, json={"error": {"message": "no route", "type": "not_found"}})
        value = answer(request) if callable(answer) else answer
        return value if isinstance(value, httpx2.Response) else httpx2.Response(200, json=value)


# ----- the table and the cache -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("gpt-4o-mini-2024-07-18", 128_000),
        ("gpt-4.1-mini", 1_047_576),
        ("gpt-4", 8_192),
        ("gpt-4-turbo", 128_000),
        ("o3-mini", 200_000),
        ("o4-mini", 200_000),
        ("gpt-5-mini", 400_000),
        ("ft:gpt-4o-mini:acme::abc", 128_000),
        ("openai/gpt-4o", 128_000),
        ("claude-sonnet-4-5-20250929", 200_000),
        ("claude-3-5-haiku-latest", 200_000),
        ("llama3.2", None),
    ],
)
def test_known_context_windows(model: str, window: int | None) -> None:
    assert known_context_window(model) == window


async def test_models_cache_reuses_then_expires() -> None:
    now = [0.0]
    cache = ModelsCache(clock=lambda: now[0])
    calls = 0

    async def fetch() -> list[ModelInfo]:
        nonlocal calls
        calls += 1
        return [ModelInfo(id=f"m{calls}", provider="p")]

    assert [m.id for m in await cache.get(fetch)] == ["m1"]
    now[0] = MODELS_CACHE_SECS - 1
    assert [m.id for m in await cache.get(fetch)] == ["m1"]
    assert [m.id for m in await cache.get(fetch, refresh=True)] == ["m2"]
    now[0] += MODELS_CACHE_SECS
    assert [m.id for m in await cache.get(fetch)] == ["m3"]
    results = await asyncio.gather(*(cache.get(fetch, refresh=False) for _ in range(5)))
    assert calls == 3 and all(r[0].id == "m3" for r in results)  # concurrent callers share one answer


async def test_base_provider_defaults_refuse_with_typed_errors() -> None:
    class Bare(BaseProvider):
        pass

    bare = Bare("bare", "m")
    assert bare.context_window is None
    assert await bare.fetch_context_window() is None
    with pytest.raises(UnsupportedCapabilityError, match="list_models") as listed:
        await bare.list_models()
    assert listed.value.provider == "bare"
    with pytest.raises(UnsupportedCapabilityError, match="count_tokens"):
        await bare.count_tokens(HELLO)


# ----- OpenAI and compatible ---------------------------------------------------------------------

# GET /v1/models as the API reference documents it (platform.openai.com/docs/api-reference/models/list).
OPENAI_MODELS = {
    "object": "list",
    "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
        {"id": "text-embedding-3-small", "object": "model", "created": 1705948997, "owned_by": "system"},
        {"id": "ft:gpt-4o-mini:acme::abc123", "object": "model", "created": 1730000000, "owned_by": "acme"},
    ],
}


def _openai(
    routes: dict[str, Any], *, compatible: bool = False, model: str = "gpt-4o-mini"
) -> tuple[OpenAIProvider, Recorder]:
    recorder = Recorder(routes)
    config: OpenAIConfig
    if compatible:
        config = CompatibleConfig(name="vllm", model=model, base_url="http://127.0.0.1:8000/v1", max_retries=0)
    else:
        config = OpenAIConfig(name="gpt", model=model, api_key=SecretStr("sk-test-0123456789"), max_retries=0)
    return OpenAIProvider(config, transport=httpx2.MockTransport(recorder)), recorder


async def test_openai_lists_models_typed_and_cached() -> None:
    provider, recorder = _openai({"/v1/models": OPENAI_MODELS})
    async with provider:
        models = await provider.list_models()
        again = await provider.list_models()
        fresh = await provider.list_models(refresh=True)
    assert [m.id for m in models] == ["gpt-4o-mini", "text-embedding-3-small", "ft:gpt-4o-mini:acme::abc123"]
    first = models[0]
    assert first == ModelInfo(
        id="gpt-4o-mini", provider="gpt", context_window=128_000, created=1721172741, owned_by="system"
    )
    assert models[1].context_window is None  # not in the table: unknown, not guessed
    assert models[2].context_window == 128_000  # a fine-tune has its base model's window
    assert again == models == fresh
    assert [(m, p) for m, p, _, _ in recorder.seen] == [("GET", "/v1/models"), ("GET", "/v1/models")]
    assert provider.context_window == 128_000
    assert await provider.fetch_context_window() == 128_000


async def test_compatible_server_window_comes_from_its_model_list() -> None:
    # vLLM's /v1/models adds `max_model_len` to each model object.
    vllm = {
        "object": "list",
        "data": [{"id": "Qwen/Qwen3-8B", "object": "model", "created": 1, "owned_by": "vllm", "max_model_len": 32768}],
    }
    provider, _ = _openai({"/v1/models": vllm}, compatible=True, model="Qwen/Qwen3-8B")
    async with provider:
        assert provider.context_window is None  # unknown until the server says
        assert await provider.fetch_context_window() == 32768
        assert provider.context_window == 32768
        models = await provider.list_models()
    assert models[0].context_window == 32768 and models[0].owned_by == "vllm"


async def test_openai_malformed_model_list_is_a_bad_response() -> None:
    provider, _ = _openai({"/v1/models": {"object": "list", "data": "nope"}})
    async with provider:
        with pytest.raises(BadResponseError, match="data"):
            await provider.list_models()


async def test_openai_has_no_token_counting() -> None:
    provider, recorder = _openai({})
    async with provider:
        with pytest.raises(UnsupportedCapabilityError, match="tiktoken") as refused:
            await provider.count_tokens(HELLO)
    assert refused.value.provider == "gpt" and recorder.seen == []


async def test_compatible_count_tokens_uses_llamacpp_endpoints_or_refuses() -> None:
    routes = {
        "/apply-template": {"prompt": "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"},
        "/tokenize": {"tokens": [1, 2, 3, 4, 5, 6, 7]},
    }
    provider, recorder = _openai(routes, compatible=True, model="smollm2")
    async with provider:
        assert await provider.count_tokens(HELLO) == 7
    (m1, path1, _, body1), (m2, path2, _, body2) = recorder.seen
    assert (m1, path1, m2, path2) == ("POST", "/apply-template", "POST", "/tokenize")
    assert body1["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body2 == {"content": routes["/apply-template"]["prompt"], "add_special": True, "parse_special": True}
    bare, _ = _openai({}, compatible=True)  # a server without those endpoints (404)
    async with bare:
        with pytest.raises(UnsupportedCapabilityError, match="tokenize") as refused:
            await bare.count_tokens(HELLO)
    assert refused.value.provider == "vllm"


# ----- Claude ---------------------------------------------------------------------------------

# GET /v1/models (docs.anthropic.com/en/api/models-list): paged with has_more / last_id.
CLAUDE_PAGE_1 = {
    "data": [
        {
            "type": "model",
            "id": "claude-sonnet-4-5-20250929",
            "display_name": "Claude Sonnet 4.5",
            "created_at": "2025-09-29T00:00:00Z",
            "max_input_tokens": 1_000_000,
            "max_tokens": 64_000,
        }
    ],
    "has_more": True,
    "first_id": "claude-sonnet-4-5-20250929",
    "last_id": "claude-sonnet-4-5-20250929",
}
CLAUDE_PAGE_2 = {
    "data": [
        {
            "type": "model",
            "id": "claude-3-5-haiku-20241022",
            "display_name": "Claude Haiku 3.5",
            "created_at": "2024-10-22T00:00:00Z",
        }
    ],
    "has_more": False,
    "first_id": "claude-3-5-haiku-20241022",
    "last_id": "claude-3-5-haiku-20241022",
}


def _claude(routes: dict[str, Any]) -> tuple[ClaudeProvider, Recorder]:
    recorder = Recorder(routes)
    config = ClaudeConfig(
        name="claude", model="claude-sonnet-4-5", api_key=SecretStr("sk-ant-test-0123456789"), max_retries=0
    )
    return ClaudeProvider(config, transport=httpx2.MockTransport(recorder)), recorder


async def test_claude_lists_every_page() -> None:
    def models(request: httpx2.Request) -> dict[str, Any]:
        return CLAUDE_PAGE_2 if request.url.params.get("after_id") else CLAUDE_PAGE_1

    provider, recorder = _claude({"/v1/models": models})
    async with provider:
        listed = await provider.list_models()
    assert [m.id for m in listed] == ["claude-sonnet-4-5-20250929", "claude-3-5-haiku-20241022"]
    sonnet, haiku = listed
    assert (sonnet.context_window, sonnet.max_output_tokens, sonnet.display_name) == (
        1_000_000,
        64_000,
        "Claude Sonnet 4.5",
    )
    assert sonnet.created == 1759104000
    assert (haiku.context_window, haiku.max_output_tokens) == (200_000, None)  # the table fills the gap
    queries = [q for _, path, q, _ in recorder.seen if path == "/v1/models"]
    assert "after_id=claude-sonnet-4-5-20250929" in queries[1] and "after_id" not in queries[0]


async def test_claude_context_window_from_the_models_api_then_remembered() -> None:
    provider, recorder = _claude(
        {"/v1/models/claude-sonnet-4-5": {**CLAUDE_PAGE_1["data"][0], "max_input_tokens": 200_000}}  # type: ignore[dict-item]
    )
    async with provider:
        assert provider.context_window == 200_000  # the table, before any request
        assert await provider.fetch_context_window() == 200_000
        assert await provider.fetch_context_window() == 200_000
    assert [path for _, path, _, _ in recorder.seen] == ["/v1/models/claude-sonnet-4-5"]


async def test_claude_counts_tokens_with_the_request_chat_would_send() -> None:
    provider, recorder = _claude({"/v1/messages/count_tokens": {"input_tokens": 403}})
    async with provider:
        assert await provider.count_tokens(HELLO, tools=[WEATHER]) == 403
    method, path, _, body = recorder.seen[0]
    assert (method, path) == ("POST", "/v1/messages/count_tokens")
    assert body["model"] == "claude-sonnet-4-5"
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello, world!"}]}]
    assert [t["name"] for t in body["tools"]] == ["get_weather"]
    assert "max_tokens" not in body  # count_tokens takes none


async def test_claude_count_tokens_errors_are_typed() -> None:
    provider, _ = _claude({"/v1/messages/count_tokens": {"tokens": 3}})
    async with provider:
        with pytest.raises(BadResponseError, match="input_tokens"):
            await provider.count_tokens(HELLO)


# ----- Ollama (a real socket: tests/fakes/ollama_server.py) -----------------------------------------


async def test_ollama_lists_tags_and_reads_the_window_from_show() -> None:
    with OllamaServer() as server:
        config = OllamaConfig(name="ollama", model="qwen3:8b", base_url=server.url, max_retries=0)
        async with OllamaProvider(config) as provider:
            assert provider.context_window is None  # unknown until /api/show answers
            models = await provider.list_models()
            assert await provider.fetch_context_window() == 8192  # model_info["llama.context_length"]
            assert provider.context_window == 8192
            with pytest.raises(UnsupportedCapabilityError, match="tokenize") as refused:
                await provider.count_tokens(HELLO)
        paths = [(r.method, r.path) for r in server.requests]
    assert [m.id for m in models] == ["qwen3:8b", "llava:7b", "gemma:2b", "nomic-embed-text:latest"]
    first = models[0]
    assert first.provider == "ollama" and first.created == 1756728000
    assert first.details["details"]["quantization_level"] == "Q4_K_M" and first.details["size"] == 4_920_753_328
    assert ("GET", "/api/tags") in paths and ("POST", "/api/show") in paths
    assert refused.value.provider == "ollama"


async def test_ollama_window_is_also_read_with_the_capabilities_before_chat() -> None:
    with OllamaServer() as server:
        config = OllamaConfig(name="ollama", model="gemma:2b", base_url=server.url, max_retries=0)
        async with OllamaProvider(config) as provider:
            await provider.chat([Message.user("hi")])
            assert provider.context_window == 8192
            shows = len(server.requests_to("/api/show"))
            assert await provider.fetch_context_window() == 8192
            assert len(server.requests_to("/api/show")) == shows  # no second /api/show


# ----- router and mock -------------------------------------------------------------------------------


async def test_router_lists_the_union_and_takes_the_smallest_window() -> None:
    registry = Registry.from_dict(
        {
            "llm": {
                "telemetry": False,
                "providers": [
                    {"name": "a", "type": "mock", "model": "mock-a"},
                    {"name": "b", "type": "mock", "model": "mock-b"},
                    {"name": "smart", "type": "router", "providers": ["a", "b"]},
                ],
            }
        }
    )
    async with registry:
        router = registry.get("smart")
        assert isinstance(router, BaseProvider)
        listed = await router.list_models()
        assert [(m.provider, m.id) for m in listed] == [("a", "mock-a"), ("b", "mock-b")]
        assert router.context_window is None  # the mock members' windows are unknown
        with pytest.raises(UnsupportedCapabilityError, match="tokenise"):
            await router.count_tokens(HELLO)


def test_smallest_window_needs_every_member() -> None:
    from zeph_providers.models_info import smallest_window

    assert smallest_window([128_000, 200_000]) == 128_000
    assert smallest_window([128_000, None]) is None
    assert smallest_window([]) is None


async def test_mock_lists_its_model_and_counts_as_its_usage() -> None:
    mock = MockProvider("m", model="mock-9")
    assert [m.id for m in await mock.list_models()] == ["mock-9"]
    response = await mock.chat(HELLO)
    assert await mock.count_tokens(HELLO) == response.usage.input_tokens == 4


def test_blocking_twin_and_package_export() -> None:
    import zeph_providers
    from zeph_providers.blocking import BlockingRegistry

    assert zeph_providers.ModelInfo is ModelInfo
    registry = BlockingRegistry.from_dict(
        {
            "llm": {
                "telemetry": False,
                "providers": [
                    {"name": "m", "type": "mock", "model": "mock-3"},
                    {"name": "r", "type": "router", "providers": ["m"]},
                ],
            }
        }
    )
    try:
        mock = registry.get("m")
        assert [m.id for m in mock.list_models()] == ["mock-3"]
        assert mock.count_tokens(HELLO) == 4
        assert mock.context_window is None and mock.fetch_context_window() is None
        with pytest.raises(UnsupportedCapabilityError):
            registry.get("r").count_tokens(HELLO)
    finally:
        registry.close()


# ----- local: the tiny model's real tokenizer ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-meta"))


async def test_local_count_tokens_matches_the_prompt_usage(tiny_folder: Path) -> None:
    provider = LocalProvider(tiny_config(tiny_folder))
    try:
        assert provider.context_window is None  # transformers: known once the model is loaded
        loop_thread = threading.get_ident()
        counted = await provider.count_tokens(HELLO)  # loads the model on the worker thread
        assert provider.worker.engine is not None
        response = await provider.chat(HELLO, max_tokens=3)
        assert counted == response.usage.input_tokens > 0
        assert await provider.count_tokens([*HELLO, Message.user("more text here")]) > counted
        window = provider.context_window
        assert window == provider.worker.engine.context_window and window  # type: ignore[attr-defined]
        assert await provider.fetch_context_window() == window
        listed = await provider.list_models()
        assert listed == [ModelInfo(id=provider.model, provider="tiny", context_window=window)]
        with pytest.raises(UnsupportedCapabilityError, match="tools"):
            await provider.count_tokens(HELLO, tools=[WEATHER])
        assert threading.get_ident() == loop_thread
    finally:
        await provider.aclose()


async def test_local_count_tokens_runs_beside_a_generation(tiny_folder: Path) -> None:
    """Counting uses its own tokenizer copy on a helper thread: it does not wait for the worker."""
    provider = LocalProvider(tiny_config(tiny_folder))
    try:
        expected = await provider.count_tokens(HELLO)
        started = threading.Event()
        release = threading.Event()

        def stall(job: Any) -> None:
            started.set()
            release.wait(30)

        provider.worker.step_hook = stall
        chat = asyncio.create_task(provider.chat(HELLO, max_tokens=2))
        await asyncio.to_thread(started.wait, 30)
        try:
            assert await provider.count_tokens(HELLO) == expected  # the worker is stuck in a step
        finally:
            release.set()
        await chat
    finally:
        await provider.aclose()


# ----- the CLI: `zeph-providers models NAME` -----------------------------------------------------


def test_cli_models_lists_an_ollama_server(tmp_path: Path) -> None:
    from tests.unit.test_cli import assert_no_traceback, run_cli

    with OllamaServer() as server:
        config = tmp_path / "zeph.toml"
        config.write_text(
            "[llm]\ntelemetry = false\n\n[[llm.providers]]\n"
            f'name = "ollama"\ntype = "ollama"\nmodel = "qwen3:8b"\nbase_url = "{server.url}"\n'
            '\n[[llm.providers]]\nname = "m"\ntype = "mock"\nmodel = "mock-7"\n'
        )
        table = run_cli("--config", str(config), "models", "ollama", cwd=tmp_path)
        as_json = run_cli("--config", str(config), "models", "ollama", "--json", cwd=tmp_path)
        mock = run_cli("--config", str(config), "models", "m", cwd=tmp_path)
        missing = run_cli("--config", str(config), "models", "nope", cwd=tmp_path)
    for result in (table, as_json, mock):
        assert result.returncode == 0, result.stderr
        assert_no_traceback(result)
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "PROVIDER", "CONTEXT"]
    assert lines[1].split()[:4] == ["qwen3:8b", "*", "ollama", "-"] and "2025-09-01" in lines[1]
    assert "4 models; 'qwen3:8b' (*): context window 8,192 tokens" in table.stdout
    payload = json.loads(as_json.stdout)
    assert payload["context_window"] == 8192 and payload["model"] == "qwen3:8b"
    assert [m["id"] for m in payload["models"]][:2] == ["qwen3:8b", "llava:7b"]
    assert "mock-7 *" in mock.stdout and "context window unknown" in mock.stdout
    assert missing.returncode != 0 and "nope" in missing.stderr
    assert_no_traceback(missing)
