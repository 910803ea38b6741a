#!/usr/bin/env bash
# Builds and runs the whole test suite (ctest). With --sanitize, the same tests built with
# AddressSanitizer + UndefinedBehaviorSanitizer in ./build-asan. Under CI (CI=true) both run.
#   bash scripts/test.sh              # release build, all tests
#   bash scripts/test.sh --sanitize   # ASan+UBSan build, all tests
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="$(nproc)"
# ctest runs test programs side by side, each with OpenMP threads: with OpenMP's default
# spin-waiting, threads of one program burn the cores another one needs (10-100x slowdowns
# seen on 2 cores). Passive waiting makes idle threads sleep instead.
export OMP_WAIT_POLICY=PASSIVE

run_release() {
  bash scripts/build.sh
  ctest --test-dir build --output-on-failure -j "$jobs" --timeout 900
}

run_sanitized() {
  bash scripts/install-deps.sh
  # Without CUDA: this pass also proves the CPU-only build (cuda/unavailable.cpp) links and
  # passes, while the release pass builds the CUDA backend wherever nvcc is installed.
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAGELLAN_SANITIZE=ON \
        -DMAGELLAN_BENCH=OFF -DMAGELLAN_CUDA=OFF >/dev/null
  cmake --build build-asan -j "$jobs"
  # The e2e tests drive the binary many times; under ASan they only re-run what the other
  # tests cover, at 3-5x the time, so the sanitized pass skips them (label cli).
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j "$jobs" --timeout 1800 -LE cli
}

case "${1:-}" in
  --sanitize) run_sanitized ;;
  "") run_release
      if [ "${CI:-}" = "true" ]; then run_sanitized; fi ;;
  *) echo "usage: bash scripts/test.sh [--sanitize]" >&2; exit 2 ;;
esac
