"""The llama.cpp engine: GGUF models run in-process through `xllamacpp` (llama.cpp's own server code).

`LlamaCppEngine` implements `engine.InferenceEngine`, as the transformers engine does, so
queueing, timeouts, streaming and cancellation are the same for both engines.
Requests go straight into llama.cpp's server core with
`Server.handle_chat_completions` / `handle_completions` and a per-chunk callback; no HTTP is
involved. The callback returns True to abort: llama.cpp then cancels the task within one token.

xllamacpp's `Server` always opens a listener as well. It is put on a Unix socket inside a private
temporary folder (mode 0700) and guarded by a random API key, so nothing else can use it; it is
removed with the engine.

Concurrency: llama.cpp serves up to `max_batch_size` requests at once in its own parallel slots
(`n_parallel`), decoding them together in one batch per step. `run_batch` (the worker's continuous
batching contract, as for the transformers engine) runs each job's blocking
`handle_chat_completions` call on a helper thread of a pool the engine owns (one thread per slot,
created at load, joined at close): each job streams, finishes, fails and is cancelled on its own,
and newly queued jobs are admitted as soon as a slot frees up. The context is split evenly across
slots (`kv_unified` off), so the total is `n_ctx * max_batch_size` and every slot keeps the
configured `n_ctx`.

Chat template: llama.cpp's own rendering of the GGUF's template by default (the chat endpoint);
an explicit `chat_template` is rendered by `templates.py` and sent to the completion endpoint.
Requests with a `response_format` schema or tools are rendered by `tooling.prepare()` (over the
GGUF's own Jinja template, read at load, or the explicit one) and decoded under llama.cpp's
grammar on the completion endpoint: see `llamacpp_constrained` for those decisions.

Layout: the engine class (load, requests, batching, errors, lifetime) is here; the per-request
chunk callback (`Stream`: text, steps, triggers, cancellation) and what one batch shares with its
helper threads (`Rows`) are in `_llamacpp_stream`.

`xllamacpp` is imported only when a model loads; `import zeph_providers` never imports it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from zeph_providers.errors import ConfigError, ContextLengthError, InferenceError, InvalidRequestError, LlmError
from zeph_providers.local._llamacpp_stream import Rows, Stream
from zeph_providers.local.engine import _INSTALL_HINT, GenerationResult, run_one_by_one
from zeph_providers.local.llamacpp_constrained import (
    Phase,
    prepare_request,
    rendering_templates,
    run_phases,
)
from zeph_providers.local.templates import ChatTemplate, select_template, to_turns

if TYPE_CHECKING:
    from zeph_providers.config import LocalConfig
    from zeph_providers.local.engine import Finish, GenerationParams, TokenSink
    from zeph_providers.types import Message

__all__ = ["DEFAULT_N_CTX", "LlamaCppEngine", "LoadedGguf"]

_MOVED = {"EngineName", "names_gguf", "select_engine", "xllamacpp_installed"}
"""Engine selection moved to `local.engine` (importable from here for one release, with a warning)."""


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    from zeph_providers.local import engine

    warnings.warn(
        f"{__name__}.{name} moved to zeph_providers.local.engine.{name}; import it from there",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(engine, name)


log = logging.getLogger("zeph_providers.local")

DEFAULT_N_CTX = 4096
"""Context window (tokens) when the config sets none."""


_ADMIT_POLL_SECS = 0.005
"""While a slot is free, how often `run_batch` looks for newly queued jobs (the queue has no wake-up)."""
_IDLE_POLL_SECS = 0.25
"""While every slot is busy, how often `run_batch` wakes anyway (so the worker thread stays killable)."""


# ----- the engine --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedGguf:
    """What the worker may inspect about a loaded model (mirrors `loader.LoadedModel`'s device/label)."""

    path: str
    label: str
    device: str = "cpu"
    n_ctx: int = DEFAULT_N_CTX


class LlamaCppEngine:
    """A GGUF model inside llama.cpp's server core: `run` serves one request, `run_batch` several at once."""

    def __init__(
        self,
        server: Any,
        loaded: LoadedGguf,
        *,
        template: ChatTemplate | None = None,
        socket_dir: str | None = None,
        provider: str | None = None,
        max_batch_size: int = 1,
        own_template: ChatTemplate | None = None,
        strip_bos: str = "",
    ) -> None:
        self.server: Any = server
        self.loaded = loaded
        self.template = template
        """None: llama.cpp renders the GGUF's own chat template; else ours, via the completion endpoint."""
        self.own_template = own_template
        """The GGUF's own template rendered by us (ChatML if it has none), for requests with tools or a schema
        when `template` is None. None: read from the file at the first such request."""
        self.strip_bos = strip_bos
        """The BOS text a rendered prompt must not start with: llama.cpp adds BOS itself for this model."""
        self.provider = provider
        self.max_batch_size = max(1, max_batch_size)
        """llama.cpp's parallel slots (`n_parallel`): the most requests `run_batch` serves at once."""
        self.peak_rows = 0
        """The most rows seen generating at the same time (observability and tests)."""
        self._socket_dir = socket_dir
        self._pool: futures.ThreadPoolExecutor | None = None
        if self.max_batch_size > 1:  # one helper thread per slot, each blocked in one request
            self._pool = futures.ThreadPoolExecutor(self.max_batch_size, thread_name_prefix="zeph-llamacpp-row")
        self._batches: set[Rows] = set()
        self._batches_lock = threading.Lock()
        self.http_key: str | None = None
        """The key guarding the server's private Unix socket (`count_tokens` talks to it)."""

    @classmethod
    def load(cls, config: LocalConfig) -> LlamaCppEngine:
        """Resolve the GGUF file (path, package file or hub download) and start llama.cpp on it (blocking)."""
        from zeph_providers.local.sources import config_source, materialize

        provider = config.name
        source = materialize(config_source(config), provider=provider, token_env=config.hf_token_env)
        if source.kind != "gguf" or source.path is None:
            raise ConfigError(
                f'engine = "llama.cpp" runs GGUF files only; {source.label!r} is a {source.kind}: '
                'give a .gguf model_path (or gguf_file) or use engine = "transformers"',
                provider=provider,
            )
        try:
            import xllamacpp
        except ImportError as exc:
            raise ConfigError(
                f'engine = "llama.cpp" needs the xllamacpp package: {_INSTALL_HINT}', provider=provider
            ) from exc
        template = None if config.chat_template == "auto" else select_template(config.chat_template, None)
        own, strip_bos = rendering_templates(source.path, template, provider=provider, lenient=True)
        n_ctx = config.n_ctx if config.n_ctx is not None else DEFAULT_N_CTX
        slots = max(1, config.max_batch_size)
        threads = os.cpu_count() or 1
        params: Any = xllamacpp.CommonParams()
        params.model.path = str(source.path)
        # One slot per request served at once. Without a unified KV cache llama.cpp gives each slot
        # n_ctx / n_parallel tokens: ask for n_ctx per slot.
        params.n_parallel = slots
        params.kv_unified = False
        params.n_ctx = n_ctx * slots
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.reasoning_format = xllamacpp.common_reasoning_format.COMMON_REASONING_FORMAT_NONE  # text stays text
        params.verbosity = -1 if not log.isEnabledFor(logging.DEBUG) else params.verbosity
        if config.device == "cpu":
            params.n_gpu_layers = 0
        # The server always listens somewhere: a Unix socket in a private folder, behind a random key.
        socket_dir = tempfile.mkdtemp(prefix="zeph-llamacpp-")
        params.hostnames = [os.path.join(socket_dir, "llama.sock")]
        params.port = 0
        http_key = secrets.token_urlsafe(32)
        params.api_keys = [http_key]
        params.n_threads_http = 1
        with contextlib.suppress(AttributeError):
            params.ui = False
        started = time.monotonic()
        try:
            server = xllamacpp.Server(params)
        except Exception as exc:
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise ConfigError(
                f"llama.cpp could not load {str(source.path)!r} (n_ctx={n_ctx} x {slots} slots): "
                f"{type(exc).__name__}: {exc}",
                provider=provider,
            ) from exc
        log.info(
            "loaded %s with llama.cpp (%d threads, %d slots of %d tokens) in %.1fs",
            source.label,
            threads,
            slots,
            n_ctx,
            time.monotonic() - started,
        )
        loaded = LoadedGguf(str(source.path), source.label, "cpu" if config.device == "cpu" else config.device, n_ctx)
        engine = cls(server, loaded, template=template, socket_dir=socket_dir, provider=provider, max_batch_size=slots,
                     own_template=own, strip_bos=strip_bos)  # fmt: skip
        engine.http_key = http_key
        return engine

    @property
    def device(self) -> str:
        return self.loaded.device

    # ----- requests ------------------------------------------------------------------------------

    @staticmethod
    def sampling(params: GenerationParams) -> dict[str, Any]:
        """llama.cpp request fields for our sampling settings (unset filters are off, as in the transformers engine)."""
        body: dict[str, Any] = {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,  # 0: greedy
            "top_p": params.top_p if params.top_p is not None else 1.0,
            "top_k": params.top_k or 0,
            "min_p": 0.0,
            "repeat_penalty": params.repeat_penalty,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def request(self, messages: list[Message], params: GenerationParams) -> tuple[bool, dict[str, Any]]:
        """(chat endpoint?, request body) for one generation."""
        body = self.sampling(params)
        body.update(stream=True, stream_options={"include_usage": True}, timings_per_token=True, cache_prompt=True)
        if self.template is None:
            body["messages"] = [{"role": role, "content": text} for role, text in to_turns(messages)]
            return True, body
        body["prompt"] = self.template.render(messages)
        stops = list(body.get("stop", []))
        body["stop"] = stops + [t for t in self.template.end_tokens if t not in stops]
        if not body["stop"]:
            del body["stop"]
        return False, body

    def run(self, messages: list[Message], params: GenerationParams, sink: TokenSink) -> GenerationResult:
        """Generate one reply, streaming text into `sink`; blocks until done or cancelled."""
        return self._generate(messages, params, sink, None)

    def run_batch(
        self,
        jobs: Sequence[Any],
        admit: Callable[[int], list[Any]],
        finish: Finish,
        *,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        """Serve several jobs at once in llama.cpp's parallel slots; blocks until all of them end.

        Each job is a `TokenSink` with `messages` and `params`, run on its own helper thread (its
        sink is called there). `admit(room)` hands over jobs that arrived meanwhile (called on this
        thread whenever a slot is free); `finish(job, result_or_error)` is called once per job, on
        this thread, after its last text. An error in one job fails that job alone. Anything that
        kills the batch itself (the pool is gone, a fatal `BaseException` in a row or here) stops
        every row within one token, waits for their threads, and propagates: the worker fails every
        job it handed over that has no outcome yet. `on_step(rows)` reports the number of rows
        generating, once per decode step of the oldest one.
        """
        pool = self._pool
        if pool is None or self.max_batch_size <= 1:  # one slot: one job after another
            run_one_by_one(self, jobs, finish)
            return
        rows = Rows(self, on_step)
        with self._batches_lock:
            self._batches.add(rows)
        running: dict[futures.Future[GenerationResult], Any] = {}
        waiting = list(jobs)
        try:
            while True:
                while waiting and len(running) < self.max_batch_size:
                    job = waiting.pop(0)
                    running[pool.submit(self._generate, job.messages, job.params, job, rows)] = job
                room = self.max_batch_size - len(running)
                if room > 0 and not waiting:
                    waiting = admit(room)
                    if waiting:
                        continue
                if not running:
                    return
                done, _ = futures.wait(
                    running,
                    timeout=_ADMIT_POLL_SECS if room > 0 else _IDLE_POLL_SECS,
                    return_when=futures.FIRST_COMPLETED,
                )
                for future in done:
                    job = running.pop(future)
                    error = future.exception()
                    if error is None:
                        finish(job, future.result())
                    elif isinstance(error, Exception):  # this job alone failed
                        finish(job, error)
                    else:  # a fatal error on a helper thread kills the batch, as it would the worker thread
                        raise error
        except BaseException:
            rows.abort.set()
            futures.wait(running)  # every row stops within one token
            raise
        finally:
            with self._batches_lock:
                self._batches.discard(rows)

    def _generate(
        self, messages: list[Message], params: GenerationParams, sink: TokenSink, rows: Rows | None
    ) -> GenerationResult:
        """One request through llama.cpp (blocking), on the worker thread or a `run_batch` helper."""
        server = self.server
        if server is None:
            raise InferenceError("the llama.cpp engine is closed", provider=self.provider)
        if params.schema is not None or params.tools:
            return self._generate_prepared(server, messages, params, sink, rows)
        chat, body = self.request(messages, params)
        phase = self._call(server, chat, body, sink, rows, None)
        finish: Literal["stop", "length"] = "length" if phase.finish == "length" else "stop"
        return GenerationResult(phase.prompt_tokens, phase.completion_tokens, finish)

    def rendering_template(self) -> ChatTemplate:
        """The template requests with tools or a schema are rendered with."""
        if self.template is not None:
            return self.template
        if self.own_template is None:  # not read at load: read it now, or fail this request typed
            self.own_template, self.strip_bos = rendering_templates(self.loaded.path, None, provider=self.provider)
        assert self.own_template is not None
        return self.own_template

    def _generate_prepared(
        self, server: Any, messages: list[Message], params: GenerationParams, sink: TokenSink, rows: Rows | None
    ) -> GenerationResult:
        """A request rendered by `tooling.prepare()`, through the completion endpoint under llama.cpp's grammar."""
        template = self.rendering_template()
        prepared, base = prepare_request(template, messages, params, self.sampling(params), strip_bos=self.strip_bos)
        sink.on_prepared(prepared)

        def call(body: dict[str, Any], watch: str | None) -> Phase:
            return self._call(server, False, body, sink, rows, watch)

        def cancelled() -> bool:
            return sink.is_cancelled() or (rows is not None and rows.abort.is_set())

        return run_phases(prepared, params, base, call, cancelled=cancelled, provider=self.provider)

    def _call(
        self, server: Any, chat: bool, body: dict[str, Any], sink: TokenSink, rows: Rows | None, watch: str | None
    ) -> Phase:
        """One blocking llama.cpp request; errors raised typed."""
        stream = Stream(sink, chat, rows, watch)
        try:
            if chat:
                server.handle_chat_completions(body, stream)
            else:
                server.handle_completions(body, stream)
        finally:
            if rows is not None:
                rows.leave(stream)
        if stream.raised is not None:
            raise stream.raised
        if stream.error is not None:
            raise self._error(stream.error)
        usage, timings = stream.usage or {}, stream.timings or {}
        prompt = usage.get("prompt_tokens")
        if prompt is None:
            prompt = int(timings.get("prompt_n") or 0) + int(timings.get("cache_n") or 0)
        completion = usage.get("completion_tokens")
        if completion is None:
            completion = int(timings.get("predicted_n") or stream.steps)
        return Phase(stream.text, stream.finish, int(prompt), int(completion), stream.triggered, stream.cancelled)

    @property
    def context_window(self) -> int:
        """Tokens one request may use: the configured `n_ctx` (per slot)."""
        return self.loaded.n_ctx

    def count_tokens(self, messages: list[Message]) -> int:
        """The prompt's token count as llama.cpp will see it (`usage.input_tokens`), from its own
        `/apply-template` and `/tokenize` on the private socket (blocking; safe off the worker thread:
        the server answers those on its HTTP thread, beside generation)."""
        import httpx

        if self.server is None or self._socket_dir is None:
            raise InferenceError("the llama.cpp engine is closed", provider=self.provider)
        transport = httpx.HTTPTransport(uds=os.path.join(self._socket_dir, "llama.sock"))
        headers = {"authorization": f"Bearer {self.http_key}"} if self.http_key else {}
        with httpx.Client(transport=transport, base_url="http://llama.cpp", headers=headers, timeout=60.0) as http:
            if self.template is None:
                turns = [{"role": role, "content": text} for role, text in to_turns(messages)]
                answer = http.post("/apply-template", json={"messages": turns})
                answer.raise_for_status()
                prompt = str(answer.json()["prompt"])
            else:
                prompt = self.template.render(messages)
            answer = http.post("/tokenize", json={"content": prompt, "add_special": True, "parse_special": True})
            answer.raise_for_status()
            return len(answer.json()["tokens"])

    def _error(self, error: dict[str, Any]) -> LlmError:
        message = str(error.get("message") or error)
        kind = str(error.get("type") or "")
        code = error.get("code")
        if "context" in kind or "context size" in message:
            return ContextLengthError(f"llama.cpp: {message}", provider=self.provider)
        if code == 400 or kind == "invalid_request_error":
            return InvalidRequestError(f"llama.cpp refused the request: {message}", provider=self.provider)
        return InferenceError(f"llama.cpp failed: {message}", provider=self.provider)

    # ----- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop and join the helper threads, free the model (stops llama.cpp's threads) and remove the
        socket folder. Safe to call twice."""
        with self._batches_lock:
            for rows in self._batches:  # rows still running (the worker normally ends them first)
                rows.abort.set()
        pool, self._pool = self._pool, None
        if pool is not None:
            on_a_helper = threading.current_thread().name.startswith("zeph-llamacpp-row")
            pool.shutdown(wait=not on_a_helper, cancel_futures=True)
        server, self.server = self.server, None
        del server  # the last reference: xllamacpp's destructor stops the server and frees the model
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
