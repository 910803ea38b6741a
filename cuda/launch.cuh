#pragma once
// Launch helpers for the kernels in cuda/*.cu (CUDA code only).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>

#include "cuda/runtime.h"

namespace mg::cuda {

inline cudaStream_t compute_stream() { return static_cast<cudaStream_t>(stream()); }

// Elementwise kernels: 256 threads a block, grid-stride loops, at most 64K blocks (enough to
// fill any current GPU many times over; larger tensors loop).
constexpr int kBlock = 256;
inline unsigned grid_for(size_t n) {
  return static_cast<unsigned>(std::max<size_t>(1, std::min<size_t>((n + kBlock - 1) / kBlock, 65535)));
}

}  // namespace mg::cuda
