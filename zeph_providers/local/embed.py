"""Sentence embeddings with a transformers encoder: mean pooling over the attention mask, L2-normalised.

Equivalent to sentence-transformers' Transformer + Pooling + Normalize pipeline for models such as
all-MiniLM-L6-v2, without depending on sentence-transformers. Runs on its own single thread so
the event loop never blocks; the encoder loads lazily there at the first call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from zeph_providers.errors import ConfigError, InferenceError, LlmError, ProviderTimeoutError, ProviderUnavailableError
from zeph_providers.local.loader import materialize, parse_source, resolve_device

__all__ = ["BATCH_SIZE", "Embedder"]

log = logging.getLogger("zeph_providers.local")

BATCH_SIZE = 32
_LOAD_LIMIT_SECS = 900.0


class Embedder:
    """An encoder model behind a one-thread executor; `embed_batch` is safe to call concurrently."""

    def __init__(
        self,
        spec: str,
        *,
        provider: str,
        revision: str | None = None,
        token_env: str = "HF_TOKEN",
        device: str = "cpu",
        timeout: float = 120.0,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.spec = spec
        self.provider = provider
        self.revision = revision
        self.token_env = token_env
        self.device_setting = device
        self.timeout = timeout
        self.batch_size = batch_size
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"zeph-embed-{provider}"
        )
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = "cpu"
        self._max_length = 512
        self._pooling = "mean"

    # ----- on the embedding thread -----------------------------------------------------------

    def _load(self) -> None:
        if self._model is not None:
            return
        source = parse_source(self.spec, provider=self.provider, field="embedding_repo", revision=self.revision)
        source = materialize(source, provider=self.provider, token_env=self.token_env)
        if source.kind != "folder" or source.path is None:
            raise ConfigError(
                f"embedding_repo = {self.spec!r} must be a model folder or repo (an encoder), not a GGUF file",
                provider=self.provider,
            )
        from transformers import AutoModel, AutoTokenizer

        folder: Path = source.path
        started = time.monotonic()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            model = AutoModel.from_pretrained(str(folder))
        except Exception as exc:
            raise ConfigError(
                f"could not load the embedding model from {str(folder)!r}: {type(exc).__name__}: {exc}",
                provider=self.provider,
            ) from exc
        self._device = resolve_device(self.device_setting)
        self._model = model.to(self._device).eval()
        self._tokenizer = tokenizer
        self._max_length = self._read_max_length(folder, tokenizer)
        self._pooling = self._read_pooling(folder)
        log.info("loaded embedding model %s in %.1fs", folder, time.monotonic() - started)

    @staticmethod
    def _read_max_length(folder: Path, tokenizer: Any) -> int:
        """sentence-transformers' max_seq_length when the folder has one, else the tokenizer's limit."""
        try:
            value = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"]
            return int(value)
        except (OSError, KeyError, ValueError, TypeError):
            limit = getattr(tokenizer, "model_max_length", 512)
            return int(limit) if isinstance(limit, int) and 0 < limit <= 8192 else 512

    @staticmethod
    def _read_pooling(folder: Path) -> str:
        try:
            data = json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "mean"
        return "cls" if data.get("pooling_mode_cls_token") and not data.get("pooling_mode_mean_tokens") else "mean"

    def _encode(self, texts: list[str]) -> list[list[float]]:
        """Encode in batches of similar length (longest first, as sentence-transformers does), in input order.

        Sorting by length keeps each batch's padding small: a batch is padded to its longest text,
        so mixing one long sentence with short ones makes every row pay for it. The vectors are the
        same as encoding in input order (padding is masked out), only faster.
        """
        import torch

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        ordered = [texts[i] for i in order]
        sorted_vectors: list[list[float]] = []
        with torch.inference_mode():
            for start in range(0, len(ordered), self.batch_size):
                batch = ordered[start : start + self.batch_size]
                encoded = self._tokenizer(
                    batch, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
                ).to(self._device)
                hidden = self._model(**encoded).last_hidden_state
                if self._pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
                sorted_vectors.extend(pooled.cpu().tolist())
        vectors: list[list[float]] = [[] for _ in texts]
        for position, vector in zip(order, sorted_vectors, strict=True):
            vectors[position] = vector
        return vectors

    # ----- caller side -----------------------------------------------------------------------

    async def _call(self, fn: Any, *args: Any, limit: float) -> Any:
        executor = self._executor
        if executor is None:
            raise ProviderUnavailableError("the local provider is closed", provider=self.provider)
        future = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise ProviderTimeoutError(
                f"the embedding model did not answer within {limit:g}s; raise inference_timeout_secs",
                provider=self.provider,
            ) from None
        except LlmError:
            raise
        except Exception as exc:
            raise InferenceError(f"embedding failed: {type(exc).__name__}: {exc}", provider=self.provider) from exc

    async def embed_batch(self, texts: list[str]) -> list[list[float]]:
        """One L2-normalised vector per text, in order."""
        if self._model is None:
            await self._call(self._load, limit=max(self.timeout, _LOAD_LIMIT_SECS))
        result: list[list[float]] = await self._call(self._encode, list(texts), limit=self.timeout)
        return result

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        self._model = self._tokenizer = None
