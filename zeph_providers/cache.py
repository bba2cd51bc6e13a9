"""The response cache: exact-match (and optional semantic) replies replayed as streams (issue 14).

Opt-in per provider (`[llm.providers.response_cache]`, `ResponseCacheConfig`); the registry attaches
a `ResponseCache` to the provider (`BaseProvider.response_cache`) and the provider wraps each call's
chunk source with `ResponseCache.begin(...)` (`BaseProvider.cached_source`). Entries live in a
`StateStore` (`zeph_providers.state`): the registry's shared store (`registry.state`, Redis with
`[llm.state] backend = "redis"`) when it has one, else an in-process `MemoryStore` of this provider
(bounded by `max_entries`).

Decisions:

- The key is `zeph:cache:v1:<sha256>` of one canonical JSON document (sorted keys, no spaces) of
  what makes the reply: the provider's name, its model, every message (all parts, as
  `model_dump(mode="json")`), and the options that change the reply: max_tokens, temperature,
  top_p, top_k, seed, stop, tools (their full definitions), tool_choice, the response_format's
  JSON schema (not the class: two classes with one schema ask the same), reasoning_effort,
  parallel_tool_calls, logprobs, top_logprobs and `extra`. Left out: what does not change the
  reply (timeout, the deadline, stream / chat(): both assemble the same reply, structured_retries:
  only validated replies are stored, Claude's prompt-cache settings `cache`) and anything secret:
  the API key and the base URL are not in it, `extra` keys named like credentials (api_key,
  authorization, secret, password, ...) are dropped, and every registered secret
  (`zeph_providers.errors.register_secret`) is redacted from the document before it is hashed.
- The value is the reply's chunks, as compact JSON (`{"v": 1, "chunks": [...]}` in the chunk
  vocabulary of `zeph_providers.types`). A hit replays them: `chat_stream()` yields the same chunks
  and `chat()` assembles them with the same `ResponseAssembler`, then the provider's finalize runs
  again (structured output parsed into `resp.parsed`), so `chat() == stream.response` holds for
  replayed replies, and a replayed reply equals the one stored. `chat()` and `chat_stream()` share
  entries: a stream that replays a reply stored by `chat()` yields that reply's chunks, which a
  backend that fetched it unstreamed sent in fewer, larger pieces (the assembled reply is the same).
- Stored only: a complete reply (the source ended normally, with its `EndChunk`) whose finish
  reason is "stop" or "tool_use" and, with `response_format`, whose output validates. Never: a
  cancelled or closed-early stream, one cut by an error, a structured reply that does not validate,
  and finish reasons "length" (where the cut falls depends on the server's own limits when the
  call sets no `max_tokens`, and a cut reply is rarely what a repeated request wants), "refusal",
  "content_filter", "pause_turn" (to be continued) and "error".
- A hit: `resp.cached` (and `stream.response.cached`) is True; `resp.attempts` is one `Attempt`
  with `cached=True` and outcome "ok" (provider: whose cache answered); the hooks' `Call` has
  `attributes["zeph.cache.hit"] = True` (False on a miss: the attribute is on every call that
  consulted a cache), so telemetry puts it on the span; usage keeps the stored reply's numbers and
  `resp.cost` is 0.0 (the cost tracker charges nothing and adds no tokens for a hit: it counts it
  in `ProviderTotals.cache_hits`). A hit takes no `max_concurrent` slot and sends nothing.
- Per call: `response_cache=False` or `cache=False` bypasses the cache (no lookup, no store).
- No request coalescing: identical requests that miss at the same time each reach the backend and
  each stores its (complete) reply; the last store wins.
- The cache never fails a call: a store that errors is logged (a warning) and the call goes on as a
  miss; a stored value that no longer decodes is a miss.
- Semantic cache (`semantic_threshold`): on an exact miss the last user message is embedded with
  the registry's embedder (`[llm] embedding`, required) and compared (cosine) with the stored
  requests that have the same everything else: provider, model, options and every earlier message
  (the namespace is the hash of those). The most similar one at or above the threshold is a hit.
  The embedding call runs outside the chat call (its own root call and span, priced on its own),
  and an embedder failure is logged and leaves the exact cache working.
- A router with a cache stores the router's answer (the member's chunks, `resp.provider` naming
  the member); members with caches store theirs. A router hit reaches no member; a router miss that
  a member's cache answers is a hit of the member (cost 0.0) and a miss of the router, so nothing is
  charged or counted twice. `response_cache=False` on a router call bypasses the members' caches too.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from zeph_providers._secrets import redact
from zeph_providers.errors import ConfigError, LlmError
from zeph_providers.hooks import current_call
from zeph_providers.options import ChatOptions
from zeph_providers.state import StateStore
from zeph_providers.state.memory import MemoryStore
from zeph_providers.stream import AttemptClock, ResponseAssembler, attempt_log
from zeph_providers.types import ChatResponse, EndChunk, Message, Role, StreamChunk

if TYPE_CHECKING:
    from pydantic import TypeAdapter

    from zeph_providers.config.models import ProviderConfigBase

__all__ = ["CACHEABLE_FINISH_REASONS", "CacheLookup", "ResponseCache", "build_response_cache", "request_document"]

log = logging.getLogger("zeph_providers.cache")

PREFIX = "zeph:cache:v1:"
HIT_ATTRIBUTE = "zeph.cache.hit"
CACHEABLE_FINISH_REASONS = frozenset({"stop", "tool_use"})
"""The finish reasons of replies that are stored (see the module doc)."""

_SECRET_NAME = re.compile(r"(?i)api[_-]?key|secret|passw(or)?d|passwd|authori[sz]ation|credential|bearer|cookie")

Embed = Callable[[str], Coroutine[Any, Any, list[float]]]
Finalize = Callable[[ChatResponse], ChatResponse]
Source = Callable[[], AsyncIterator[StreamChunk]]


@functools.cache
def _chunks_adapter() -> TypeAdapter[list[StreamChunk]]:
    from pydantic import TypeAdapter

    return TypeAdapter(list[StreamChunk])


def _options_document(options: ChatOptions) -> dict[str, Any]:
    """The options that change the reply (see the module doc), JSON-ready."""
    extra = {key: value for key, value in options.extra.items() if not _SECRET_NAME.search(str(key))}
    return {
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "top_k": options.top_k,
        "seed": options.seed,
        "stop": list(options.stop),
        "tools": [tool.model_dump(mode="json") for tool in options.tools],
        "tool_choice": options.tool_choice,
        "response_format": options.json_schema(),
        "reasoning_effort": options.reasoning_effort,
        "parallel_tool_calls": options.parallel_tool_calls,
        "logprobs": options.logprobs,
        "top_logprobs": options.top_logprobs,
        "extra": extra,
    }


def request_document(provider: str, model: str, messages: Sequence[Message], options: ChatOptions) -> dict[str, Any]:
    """What the exact key hashes: provider, model, messages and the reply-changing options."""
    return {
        "provider": provider,
        "model": model,
        "messages": [message.model_dump(mode="json") for message in messages],
        "options": _options_document(options),
    }


def _digest(document: dict[str, Any]) -> str:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.sha256(redact(text).encode("utf-8")).hexdigest()


def encode_chunks(chunks: Sequence[StreamChunk]) -> bytes:
    """The stored value: the chunks as compact JSON."""
    dumped: list[dict[str, Any]] = []
    for chunk in chunks:
        # exclude_defaults drops the chunk's `type` literal too: put it back (it is the discriminator).
        dumped.append({**chunk.model_dump(mode="json", exclude_defaults=True), "type": chunk.type})
    payload = {"v": 1, "chunks": dumped}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_chunks(value: bytes) -> list[StreamChunk] | None:
    """The chunks of a stored value, or None when it does not decode (then it is a miss)."""
    try:
        payload = json.loads(value)
        if not isinstance(payload, dict) or payload.get("v") != 1:
            return None
        return _chunks_adapter().validate_python(payload["chunks"])
    except Exception:  # a value of another version or a damaged one: a miss, never an error
        log.debug("undecodable response-cache entry ignored", exc_info=True)
        return None


def _most_similar(vector: list[float], items: list[tuple[str, list[float]]]) -> tuple[float, str | None]:
    best, best_key = -1.0, None
    for key, stored in items:
        score = _cosine(vector, stored)
        if score > best:
            best, best_key = score, key
    return best, best_key


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b) or not a:
        return -1.0
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else -1.0


def _storable(chunks: Sequence[StreamChunk]) -> bool:
    ends = [chunk for chunk in chunks if isinstance(chunk, EndChunk)]
    return bool(ends) and ends[-1].finish_reason in CACHEABLE_FINISH_REASONS


class ResponseCache:
    """One provider's response cache over a `StateStore` (see the module doc).

    `embed` (an async text -> vector function) turns on the semantic lookup at `semantic_threshold`.
    """

    def __init__(
        self,
        name: str,
        *,
        store: StateStore,
        ttl_s: float = 3600.0,
        semantic_threshold: float | None = None,
        embed: Embed | None = None,
    ) -> None:
        if semantic_threshold is not None and embed is None:
            raise ConfigError("semantic_threshold needs an embedder (`embed`)", provider=name)
        self.name = name
        self.ttl_s = ttl_s
        self.semantic_threshold = semantic_threshold
        self._store = store
        self._embed = embed

    @property
    def store(self) -> StateStore:
        return self._store

    def key(self, provider: str, model: str, messages: Sequence[Message], options: ChatOptions) -> str:
        """The store key of a request (a hash: nothing of the request can be read back from it)."""
        return PREFIX + _digest(request_document(provider, model, messages, options))

    def semantic_namespace(
        self, provider: str, model: str, messages: Sequence[Message], options: ChatOptions
    ) -> tuple[str, str] | None:
        """(namespace, query text) for the semantic lookup; None when the last message is not a
        user message with text. The namespace hashes everything but that last message."""
        if not messages or messages[-1].role != Role.USER or not messages[-1].text.strip():
            return None
        context = request_document(provider, model, messages[:-1], options)
        return PREFIX + "sem:" + _digest(context), messages[-1].text

    def begin(self, provider: str, model: str, messages: Sequence[Message], options: ChatOptions) -> CacheLookup:
        """The cache's part in one call (its chunk source wrapper and its finalize)."""
        return CacheLookup(self, provider, model, list(messages), options)

    async def get(self, key: str) -> list[StreamChunk] | None:
        try:
            value = await self._store.cache_get(key)
        except Exception as exc:
            log.warning("response cache %r: lookup failed (%s); calling the provider", self.name, type(exc).__name__)
            return None
        return None if value is None else decode_chunks(value)

    async def put(self, key: str, chunks: Sequence[StreamChunk], semantic: tuple[str, list[float]] | None) -> None:
        try:
            await self._store.cache_put(key, encode_chunks(chunks), self.ttl_s)
            if semantic is not None:
                await self._store.index_add(semantic[0], key, semantic[1], self.ttl_s)
        except Exception as exc:
            log.warning("response cache %r: store failed (%s); reply not cached", self.name, type(exc).__name__)

    async def embedding(self, text: str) -> list[float] | None:
        """The query's embedding, made outside the current call (its own call, not a nested one)."""
        assert self._embed is not None
        embed = self._embed
        try:
            task: asyncio.Task[list[float]] = asyncio.get_running_loop().create_task(
                embed(text), context=contextvars.Context()
            )
            return await task
        except ConfigError:
            raise
        except LlmError as exc:
            log.warning("response cache %r: embedding failed (%s); exact lookup only", self.name, exc)
            return None

    async def nearest(self, namespace: str, vector: list[float]) -> str | None:
        """The key of the most similar stored request at or above the threshold, if any."""
        assert self.semantic_threshold is not None
        try:
            items = await self._store.index_items(namespace)
        except Exception as exc:
            log.warning("response cache %r: index lookup failed (%s)", self.name, type(exc).__name__)
            return None
        # Pure-Python cosines over a whole index take milliseconds: off the event loop.
        best, best_key = await asyncio.to_thread(_most_similar, vector, items)
        return best_key if best_key is not None and best >= self.semantic_threshold else None

    def __repr__(self) -> str:
        return f"<ResponseCache {self.name!r} ttl={self.ttl_s:g}s semantic={self.semantic_threshold}>"


class CacheLookup:
    """One call's use of the cache: `chunks()` replays a hit or passes the live reply through (and
    stores it when it qualifies); `finalize()` picks the finalize for what was served."""

    def __init__(
        self, cache: ResponseCache, provider: str, model: str, messages: list[Message], options: ChatOptions
    ) -> None:
        self.cache = cache
        self.provider = provider
        self.model = model
        self.options = options
        self.key = cache.key(provider, model, messages, options)
        self._semantic = (
            cache.semantic_namespace(provider, model, messages, options)
            if cache.semantic_threshold is not None
            else None
        )
        self.hit = False

    async def _lookup(self) -> tuple[list[StreamChunk] | None, tuple[str, list[float]] | None]:
        """(replayed chunks or None, the semantic (namespace, vector) to index a stored reply under)."""
        chunks = await self.cache.get(self.key)
        if chunks is not None or self._semantic is None:
            return chunks, None
        namespace, text = self._semantic
        vector = await self.cache.embedding(text)
        if vector is None:
            return None, None
        nearest = await self.cache.nearest(namespace, vector)
        if nearest is not None:
            chunks = await self.cache.get(nearest)
        return chunks, (namespace, vector)

    async def chunks(self, source: Source, validate: Finalize | None = None) -> AsyncIterator[StreamChunk]:
        """The call's chunks: a hit's replay, else `source()`'s, stored at their end when they qualify
        (`validate`, when given, must accept the assembled reply: structured output that parses)."""
        clock = AttemptClock(self.provider)
        attempts = attempt_log()
        call = current_call()
        replay, semantic = await self._lookup()
        if call is not None:
            call.attributes[HIT_ATTRIBUTE] = replay is not None
        if replay is not None:
            self.hit = True
            clock.first_chunk()
            for chunk in replay:
                yield chunk
            if attempts is not None:
                attempts.append(clock.done().model_copy(update={"cached": True}))
            return
        live = source()
        seen: list[StreamChunk] = []
        try:
            async for chunk in live:
                seen.append(chunk)
                yield chunk
        finally:
            aclose = getattr(live, "aclose", None)
            if aclose is not None:
                await aclose()
        if _storable(seen) and self._valid(seen, validate):
            await self.cache.put(self.key, seen, semantic)

    def _valid(self, chunks: list[StreamChunk], validate: Finalize | None) -> bool:
        if validate is None or self.options.response_format is None:
            return True
        assembler = ResponseAssembler(provider=self.provider, model=self.model)
        for chunk in chunks:
            assembler.add(chunk)
        try:
            validate(assembler.response())
        except LlmError:
            return False
        return True

    def finalize(self, live: Finalize | None, replay: Finalize) -> Finalize:
        """`live` for a reply from the provider, `replay` (the provider's own parse) for a hit,
        which is also marked `cached`."""

        def finalize(response: ChatResponse) -> ChatResponse:
            if not self.hit:
                return response if live is None else live(response)
            response = replay(response)
            response.cached = True
            return response

        return finalize


def build_response_cache(config: ProviderConfigBase, registry: Any) -> ResponseCache | None:
    """The cache `config.response_cache` asks for (None without the table or with `enabled = false`).

    The store: the registry's shared `state` store when it has one that is not in-process, else a
    `MemoryStore` of this provider's own, bounded by `max_entries`. The semantic cache embeds with
    `[llm] embedding` (resolved at the first lookup); without that setting: a `ConfigError`.
    """
    settings = getattr(config, "response_cache", None)
    if settings is None or not settings.enabled:
        return None
    shared = getattr(registry, "state", None)
    store: StateStore
    if shared is not None and not isinstance(shared, MemoryStore):
        store = shared
    else:
        store = MemoryStore(max_entries=settings.max_entries)
    embed: Embed | None = None
    if settings.semantic_threshold is not None:
        embedder_name = getattr(getattr(registry, "config", None), "embedding", None)
        if not embedder_name:
            raise ConfigError(
                'response_cache.semantic_threshold needs an embedder: set `embedding = "<provider name>"` '
                "in [llm] (a provider with embeddings), or remove semantic_threshold",
                provider=config.name,
            )

        async def embed_text(text: str) -> list[float]:
            embedder = registry.get(embedder_name)
            if not embedder.capabilities.embeddings:
                raise ConfigError(
                    f"response_cache.semantic_threshold: the [llm] embedding provider {embedder_name!r} has no "
                    "embeddings; name one that does",
                    provider=config.name,
                )
            return list(await embedder.embed(text))

        embed = embed_text
    return ResponseCache(
        config.name,
        store=store,
        ttl_s=settings.ttl_secs,
        semantic_threshold=settings.semantic_threshold,
        embed=embed,
    )
