// Dropout (cuda/dropout.h): element i draws 53 random bits from splitmix64(seed + (i + 1) *
// golden), i.e. the i-th output of a splitmix64 stream seeded with `seed`, and is kept iff
// those bits, read as u in [0, 1) (as Rng::uniform), satisfy u >= p.
#include <cmath>

#include "cuda/dropout.h"
#include "cuda/kernel_util.cuh"

namespace mg::cuda {

using namespace detail;

namespace {

__device__ __forceinline__ uint64_t splitmix64_at(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// u = bits * 2^-53 >= p  <=>  bits >= ceil(p * 2^53) = threshold (exact: scaling by 2^53)
template <class T>
__global__ void dropout_forward_kernel(const T* x, T* y, uint8_t* mask, int64_t n, uint64_t seed, uint64_t threshold,
                                       T keep) {
  MG_GRID_STRIDE(i, n) {
    const bool kept = (splitmix64_at(seed, static_cast<uint64_t>(i)) >> 11) >= threshold;
    mask[i] = kept ? 1 : 0;
    y[i] = kept ? x[i] * keep : T(0);
  }
}

template <class T>
__global__ void dropout_backward_kernel(const T* g, const uint8_t* mask, T* dx, int64_t n, T keep) {
  MG_GRID_STRIDE(i, n) {
    if (mask[i]) dx[i] += g[i] * keep;
  }
}

}  // namespace

template <class T>
void dropout_forward(const T* x, T* y, uint8_t* mask, int64_t n, double p, uint64_t seed) {
  if (n <= 0) return;
  const uint64_t threshold = static_cast<uint64_t>(std::ceil(p * 0x1.0p53));
  dropout_forward_kernel<<<grid_for(n), kBlock, 0, compute_stream()>>>(x, y, mask, n, seed, threshold,
                                                                       static_cast<T>(1.0 / (1.0 - p)));
  MG_CUDA_CHECK_LAUNCH("dropout_forward_kernel");
}

template <class T>
void dropout_backward(const T* g, const uint8_t* mask, T* dx, int64_t n, double p) {
  if (n <= 0) return;
  dropout_backward_kernel<<<grid_for(n), kBlock, 0, compute_stream()>>>(g, mask, dx, n,
                                                                        static_cast<T>(1.0 / (1.0 - p)));
  MG_CUDA_CHECK_LAUNCH("dropout_backward_kernel");
}

#define MG_INSTANTIATE(T)                                                                  \
  template void dropout_forward<T>(const T*, T*, uint8_t*, int64_t, double, uint64_t);    \
  template void dropout_backward<T>(const T*, const uint8_t*, T*, int64_t, double);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace mg::cuda
