"""`LocalProvider`: a local model behind the provider protocol (config type "local"; "candle" is read as it).

Two engines share the worker, queue, timeouts and streaming: llama.cpp (in-process through
`xllamacpp`; the default for GGUF files) and transformers (folders and hub repos; the fallback for
GGUF when xllamacpp is missing). `config.engine` forces one; embeddings always use transformers.

Building is instant: the model loads on the worker thread at the first request, the encoder on
the embedding thread at the first `embed()`. Generation streams token by token; closing the
stream stops it. `aclose()` (called by `registry.aclose()`) stops both threads and frees the models.

Tools and structured output: the engine renders the request with `tooling.prepare` and posts the
result (`PreparedEvent`) before its first text; with tools, the text then goes through a
`tooling.ReplyParser` (content, tool-call deltas, complete calls; `finish_reason` "tool_use" when
calls were made). An engine that never reports a `Prepared` streams plain content. Capabilities
say tools and structured output exactly when the engine can decode under a grammar: llama.cpp
always, transformers when `llguidance` is installed (checked without importing it). A forced
call's reply has no text to parse as `response_format`; it is returned with `parsed` None.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

from zeph_providers.base import BaseProvider
from zeph_providers.errors import InferenceError, LlmError, UnsupportedCapabilityError
from zeph_providers.local.embed import Embedder
from zeph_providers.local.engine import EngineName, GenerationParams, InferenceEngine, select_engine
from zeph_providers.local.tooling import ReplyParser, check_request
from zeph_providers.local.worker import Done, Failed, InferenceWorker, Job, PreparedEvent, Text
from zeph_providers.options import Capabilities, ChatOptions
from zeph_providers.types import (
    ContentChunk,
    EndChunk,
    Message,
    StreamChunk,
    ToolDefinition,
    Usage,
    UsageChunk,
)

if TYPE_CHECKING:
    from zeph_providers.config import LocalConfig
    from zeph_providers.models_info import ModelInfo
    from zeph_providers.registry import Registry

__all__ = ["LocalProvider", "build"]


class LocalProvider(BaseProvider):
    """A local model on one dedicated worker thread, fed through a bounded queue."""

    backend = "local"

    def __init__(self, config: LocalConfig, *, load: Callable[[], InferenceEngine] | None = None) -> None:
        self.engine_name: EngineName = select_engine(config)  # ConfigError for llama.cpp on a non-GGUF source
        constrained = constrained_decoding(self.engine_name)
        super().__init__(
            config.name,
            config.model_name,
            capabilities=Capabilities(
                streaming=True,
                embeddings=bool(config.embedding_repo),
                tools=constrained,
                vision=False,
                structured_output=constrained,
            ),
            max_concurrent=config.max_concurrent,
        )
        self.config = config
        _prefer_passive_openmp()
        if load is None:
            load = _loader(config, self.engine_name)
        self.worker = InferenceWorker(
            config.name,
            load,
            capacity=config.queue_capacity,
            timeout=config.inference_timeout_secs,
        )
        self.embedder: Embedder | None = None
        if config.embedding_repo:
            self.embedder = Embedder(
                config.embedding_repo,
                provider=config.name,
                revision=config.embedding_revision,
                token_env=config.hf_token_env,
                device=config.device,
                timeout=config.inference_timeout_secs,
            )

    async def _stream(self, messages: list[Message], options: ChatOptions) -> AsyncIterator[StreamChunk]:
        try:
            params = GenerationParams.resolve(self.config.generation, options)
            check_request(params, provider=self.name, template=self.config.chat_template)
        except LlmError as exc:
            exc.provider = exc.provider or self.name
            raise
        job = Job(messages, params, asyncio.get_running_loop())
        parser: ReplyParser | None = None
        try:
            await self.worker.submit(job)
            while True:
                event = await self.worker.next_event(job)
                if isinstance(event, Text):
                    if parser is None:
                        yield ContentChunk(text=event.text)
                    else:
                        for chunk in parser.feed(event.text):
                            yield chunk
                elif isinstance(event, PreparedEvent):
                    if params.tools and event.prepared.syntax is not None:
                        parser = ReplyParser(event.prepared, params.tools, provider=self.name)
                elif isinstance(event, Done):
                    # Every prompt token is `input_tokens`: llama.cpp's reused KV prefix (`cache_n`) saves
                    # time, not money, so it is no `cache_read_tokens` (a billing cache; see `Usage`).
                    finish = event.finish_reason
                    if parser is not None:
                        for chunk in parser.close():
                            yield chunk
                        if parser.calls:
                            finish = "tool_use"
                    _annotate_call(job, self.engine_name)
                    usage = Usage(input_tokens=event.prompt_tokens, output_tokens=event.completion_tokens)
                    yield UsageChunk(usage=usage)
                    yield EndChunk(finish_reason=finish, model=self.model)
                    return
                elif isinstance(event, Failed):
                    raise event.error
        finally:
            job.cancel.set()  # closed, abandoned or cancelled: stop generating within one token

    # ----- model metadata (see zeph_providers.models_info) ---------------------------------

    @property
    def context_window(self) -> int | None:
        """llama.cpp: the configured `n_ctx`; transformers: `max_position_embeddings`, once loaded."""
        engine = self.worker.engine
        window = getattr(engine, "context_window", None) if engine is not None else None
        if isinstance(window, int) and window > 0:
            return window
        if self.engine_name == "llama.cpp":
            from zeph_providers.local.llamacpp import DEFAULT_N_CTX

            return self.config.n_ctx if self.config.n_ctx is not None else DEFAULT_N_CTX
        return None

    async def fetch_context_window(self) -> int | None:
        """The context window, loading the model first (as the first request would) when needed."""
        if self.context_window is None:
            await self.worker.loaded_engine()
        return self.context_window

    async def list_models(self, *, refresh: bool = False) -> list[ModelInfo]:
        """The one model this provider runs."""
        from zeph_providers.models_info import ModelInfo

        return [ModelInfo(id=self.model, provider=self.name, context_window=self.context_window)]

    async def count_tokens(self, messages: Sequence[Message], *, tools: Sequence[ToolDefinition] = ()) -> int:
        """The prompt's tokens through the model's own tokenizer (llama.cpp's, or transformers'), on a
        helper thread (the event loop never blocks; generation goes on). Loads the model if needed."""
        if tools:
            raise UnsupportedCapabilityError("count_tokens with tools", provider=self.name)
        engine = await self.worker.loaded_engine()
        counter: Callable[[list[Message]], int] | None = getattr(engine, "count_tokens", None)
        if counter is None:
            raise UnsupportedCapabilityError("count_tokens", provider=self.name, detail="this engine has no tokenizer")
        try:
            return await asyncio.to_thread(counter, list(messages))
        except LlmError as exc:
            exc.provider = exc.provider or self.name
            raise
        except Exception as exc:
            raise InferenceError(f"counting tokens failed: {type(exc).__name__}: {exc}", provider=self.name) from exc

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        assert self.embedder is not None  # BaseProvider checks the capability first
        return await self.embedder.embed_batch(texts)

    async def aclose(self) -> None:
        await self.worker.aclose()  # stops the thread, then closes the engine (llama.cpp frees its model at once)
        if self.embedder is not None:
            await self.embedder.aclose()


def constrained_decoding(engine: EngineName) -> bool:
    """Whether `engine` can decode under a JSON-schema grammar (llama.cpp: always; transformers: with llguidance)."""
    if engine == "llama.cpp":
        return True
    try:
        return importlib.util.find_spec("llguidance") is not None
    except (ImportError, ValueError):
        return False


def _annotate_call(job: Job, engine: str) -> None:
    """Tell the call's hook subscribers (telemetry spans) how long the job waited and generated."""
    from zeph_providers.hooks import current_call

    call = current_call()
    if call is not None:
        call.attributes["zeph.local.engine"] = engine
        call.attributes.update(job.timings())


def _loader(config: LocalConfig, engine: EngineName) -> Callable[[], InferenceEngine]:
    """The engine's `load`, bound to the config (called on the worker thread at the first request)."""
    if engine == "llama.cpp":
        from zeph_providers.local.llamacpp import LlamaCppEngine

        return lambda: LlamaCppEngine.load(config)
    from zeph_providers.local.transformers_engine import TransformersEngine

    return lambda: TransformersEngine.load(config)


def _prefer_passive_openmp() -> None:
    """Ask OpenMP to sleep rather than spin between ops, unless torch is already loaded or the user chose.

    Generation runs on a worker thread while the event loop thread wakes for every token; with
    OpenMP's default spin-waiting, the two fight over a small machine's cores and decoding got
    several times slower (measured on 2 cores: ~250 ms/token instead of ~40). Only effective
    before torch's first import, which this backend defers to the worker thread.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build(config: LocalConfig, registry: Registry) -> LocalProvider:
    """Factory entry point for type "local" (aliases "candle" for zeph-llm configs, and "transformers")."""
    return LocalProvider(config)
