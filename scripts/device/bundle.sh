#!/usr/bin/env bash
# Packs executables of a CUDA build made here (this machine has nvcc, no GPU) with the shared
# libraries they load that a bare GPU machine lacks (HDF5, OpenBLAS, yaml-cpp, spdlog, ...; not
# libc/libstdc++ nor CUDA's own) into .devbundle/ (git-ignored), to run them there with
#   source .devbundle/setup.sh && build-cuda/test_cuda
# usage: bash scripts/device/bundle.sh [BUILD_DIR=build-cuda] [NAME...=test_cuda magellan]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-cuda}; shift || true
names=("$@"); [ ${#names[@]} -gt 0 ] || names=(test_cuda magellan)
grep -qx '/.devbundle/' .git/info/exclude 2>/dev/null || echo '/.devbundle/' >> .git/info/exclude
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT; mkdir -p "$tmp/lib"
exes=(); for n in "${names[@]}"; do exes+=("$build/$n"); done
tar -cf "$tmp/exes.tar" "${exes[@]}"
ldd "${exes[@]}" | awk '/=>/ && $3 ~ /^\// {print $3}' | sort -u \
  | grep -v -E '/(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so|/usr/local/cuda|libcuda\.so|libnvidia' \
  | xargs -r -I{} cp -L {} "$tmp/lib/"
cat > "$tmp/setup.sh" <<'EOS'
# Sourced on the GPU machine from the repository root: unpacks the executables and libraries.
_b=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ -d /opt/mgbundle/lib ] || { mkdir -p /opt/mgbundle && tar -xJf "$_b/bundle.tar.xz" -C /opt/mgbundle && tar -xf /opt/mgbundle/exes.tar; }
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d $d ] && CUDA_LIBS=${CUDA_LIBS:-$d}; done
export LD_LIBRARY_PATH=/opt/mgbundle/lib${CUDA_LIBS:+:$CUDA_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
EOS
mkdir -p .devbundle
tar -cJf .devbundle/bundle.tar.xz -C "$tmp" lib exes.tar && cp "$tmp/setup.sh" .devbundle/setup.sh
echo "bundle: ${names[*]} from $build, $(du -sh .devbundle | cut -f1) in .devbundle/"
