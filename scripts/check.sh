#!/usr/bin/env bash
# The whole test suite: lint, strict types, then pytest (unit, conformance, real servers and models).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
python -m ruff check zeph_providers tests bench
python -m mypy
python -m pytest -q "$@"
