// Causal depthwise conv1d (cuda/conv1d.h): a thread per (b, t, d) for y and dx (coalesced
// over d); dw and dbias as one column reduction of (K + 1) * D columns over the B*L rows.
#include "cuda/conv1d.h"
#include "cuda/kernel_util.cuh"

namespace mg::cuda {

using namespace detail;

namespace {

template <class T>
__global__ void conv_forward_kernel(const T* x, const T* w, const T* bias, T* y, int64_t n, int64_t L, int64_t D,
                                    int64_t K) {
  MG_GRID_STRIDE(k, n) {
    const int64_t d = k % D, t = (k / D) % L;
    T acc = bias[d];
    for (int64_t j = 0; j < K; ++j) {
      const int64_t s = t - (K - 1) + j;
      if (s >= 0) acc += w[d * K + j] * x[k + (s - t) * D];
    }
    y[k] = acc;
  }
}

// dx[b,s,d]: the CPU adds the terms in increasing t = s + (K-1) - j, i.e. decreasing j.
template <class T>
__global__ void conv_backward_x_kernel(const T* g, const T* w, T* dx, int64_t n, int64_t L, int64_t D, int64_t K) {
  MG_GRID_STRIDE(k, n) {
    const int64_t d = k % D, s = (k / D) % L;
    T acc = dx[k];
    for (int64_t j = K - 1; j >= 0; --j) {
      const int64_t t = s + (K - 1) - j;
      if (t < L) acc += w[d * K + j] * g[k + (t - s) * D];
    }
    dx[k] = acc;
  }
}

// Column c = j * D + d (j < K: dw[d, j]; j == K: dbias[d]) of row r = b * L + t.
template <class T>
struct ConvGradTerm {
  const T* g;
  const T* x;
  int64_t L, D, K;
  __device__ __forceinline__ T operator()(int64_t r, int64_t c) const {
    const int64_t j = c / D, d = c - j * D;
    const T gy = g[r * D + d];
    if (j == K) return gy;
    const int64_t t = r % L, s = t - (K - 1) + j;
    return s >= 0 ? gy * x[(r - (K - 1) + j) * D + d] : T(0);
  }
};

template <class T>
struct ConvGradStore {
  T* dw;
  T* db;
  int64_t D, K;
  __device__ void operator()(int64_t c, T v) const {
    const int64_t j = c / D, d = c - j * D;
    if (j == K) {
      if (db) db[d] += v;
    } else if (dw) {
      dw[d * K + j] += v;
    }
  }
};

}  // namespace

template <class T>
void causal_conv1d_forward(const T* x, const T* w, const T* bias, T* y, int64_t B, int64_t L, int64_t D, int64_t K) {
  const int64_t n = B * L * D;
  if (n <= 0) return;
  conv_forward_kernel<<<grid_for(n), kBlock, 0, compute_stream()>>>(x, w, bias, y, n, L, D, K);
  MG_CUDA_CHECK_LAUNCH("conv_forward_kernel");
}

template <class T>
void causal_conv1d_backward(const T* g, const T* x, const T* w, T* dx, T* dw, T* dbias, int64_t B, int64_t L,
                            int64_t D, int64_t K) {
  const int64_t n = B * L * D;
  if (n <= 0) return;
  if (dx) {
    conv_backward_x_kernel<<<grid_for(n), kBlock, 0, compute_stream()>>>(g, w, dx, n, L, D, K);
    MG_CUDA_CHECK_LAUNCH("conv_backward_x_kernel");
  }
  if (dw || dbias)
    colsum<T>(B * L, (K + 1) * D, ConvGradTerm<T>{g, x, L, D, K}, ConvGradStore<T>{dw, dbias, D, K});
}

#define MG_INSTANTIATE(T)                                                                                    \
  template void causal_conv1d_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t); \
  template void causal_conv1d_backward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t, int64_t,  \
                                          int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace mg::cuda
