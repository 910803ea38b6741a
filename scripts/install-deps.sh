#!/usr/bin/env bash
# Installs magellan's system dependencies from Debian 12 packages.
# Idempotent: when everything is present it prints nothing and exits 0.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libeigen3-dev            # dense linear algebra for everything that is not a big GEMM
  libopenblas-openmp-dev   # tuned SGEMM; the OpenMP build shares our one thread pool
  libhdf5-dev              # checkpoints and metrics
  libyaml-cpp-dev          # experiment configs
  libspdlog-dev libfmt-dev # logging
  libboost-program-options-dev
  libomp-dev               # (gcc uses libgomp; kept for clang builds)
  libpcre2-dev             # Unicode-aware pre-tokenizer regex
  nlohmann-json3-dev       # tokenizer.json and JSONL parsing
  libgtest-dev libgmock-dev googletest
  libbenchmark-dev
  python3 python3-h5py python3-numpy   # independent reference reader/writer in tests
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
