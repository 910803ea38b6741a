#!/usr/bin/env bash
# On the lent GPU machine (docs/gpu.md): the `cuda` tests, the scan throughput, and phase1
# trained end to end on the GPU and (as the same-call baseline) on the CPU. Expects a bundle
# made here by `bash scripts/device/bundle.sh` (build-cuda/test_cuda and magellan), brought
# along as .devbundle. Logs go to $OUT (or ./gpu-check-out). Usage: bash scripts/device/gpu_check.sh [steps]
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-gpu-check-out}"; mkdir -p "$out"
steps="${1:-40}"
source .devbundle/setup.sh
export MAGELLAN_SOURCE_DIR="$PWD"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"

echo "== cuda tests"
build-cuda/test_cuda --gtest_brief=1 2>&1 | tee "$out/test_cuda.log" | tail -40
echo "== scan throughput"
build-cuda/test_cuda --gtest_also_run_disabled_tests --gtest_filter='*Throughput*' 2>&1 | tail -15 | tee "$out/scan_throughput.log"

train() {  # name, then overrides
  local name=$1; shift
  local t0=$(date +%s.%N)
  build-cuda/magellan train experiments/presets/phase1.yaml experiment="$name" run_dir="/tmp/runs/$name" \
      training.steps="$steps" eval.every=0 checkpoint.every=0 logging.progress=never "$@" \
      > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc wall $(awk -v a="$t0" -v b="$(date +%s.%N)" "BEGIN{print b-a}") s; $(grep -E "tokens/s" "$out/$name.log" | tail -1)"
}
echo "== phase1 end to end ($steps steps)"
train phase1_gpu_b4 training.device=cuda
train phase1_gpu_b64_s512 training.device=cuda training.batch_size=64 data.seq_len=512
train phase1_cpu_b4 training.device=cpu training.steps=5
tail -5 "$out"/phase1_gpu_b4.log
