#!/usr/bin/env bash
# The whole test suite: lint, strict types, then pytest in two tiers. The fast tier (unit, backends
# on wire fakes, router, conformance) runs first so a broken change fails in a minute; the slow tier
# (the real llama.cpp server, the real SmolLM2 model, loopback fault servers, load tests) runs after.
# Each tier is its own pytest process: a crash in one cannot take the other's results with it.
# Extra arguments go to both pytest runs (e.g. `-x`, `-k name`).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
python -m ruff check zeph_providers tests bench
python -m mypy
fast=(tests/unit tests/backends tests/router tests/conformance)
slow=()
for folder in tests/*/; do
    folder="${folder%/}"
    case " ${fast[*]} " in *" $folder "*) ;; *) compgen -G "$folder/test_*.py" >/dev/null && slow+=("$folder") ;; esac
done
echo "== fast tier: ${fast[*]}"
python -m pytest -q -p no:cacheprovider "${fast[@]}" "$@"
echo "== slow tier: ${slow[*]}"
python -m pytest -q -p no:cacheprovider "${slow[@]}" "$@"
