#!/usr/bin/env bash
# Installs the Debian dependencies (if missing), configures and builds magellan in ./build
# (Release: -O3 -march=x86-64-v3). Usage: bash scripts/build.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j "$(nproc)"
