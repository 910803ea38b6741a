// RMSNorm (cuda/norm.h): a warp (C <= 1024) or a block per row for y and dx; the weight
// gradient is a deterministic column reduction (cuda/kernel_util.cuh).
#include "cuda/kernel_util.cuh"
#include "cuda/norm.h"

namespace mg::cuda {

using namespace detail;

namespace {

template <class T, int G>
__global__ void rmsnorm_forward_kernel(const T* x, const T* w, T* y, T* rstd, int64_t M, int64_t C, T eps) {
  MG_ROW_SETUP(G, M)
  const T* r = x + row * C;
  T ss = 0;
  for (int64_t c = lane; c < C; c += G) ss += r[c] * r[c];
  ss = group_reduce<G>(ss, SumOp{});
  const T ri = T(1) / d_sqrt(ss / T(C) + eps);
  if (lane == 0) rstd[row] = ri;
  T* o = y + row * C;
  for (int64_t c = lane; c < C; c += G) o[c] = r[c] * ri * w[c];
}

template <class T, int G>
__global__ void rmsnorm_backward_x_kernel(const T* g, const T* x, const T* w, const T* rstd, T* dx, int64_t M,
                                          int64_t C) {
  MG_ROW_SETUP(G, M)
  const int64_t base = row * C;
  T dot = 0;
  for (int64_t c = lane; c < C; c += G) dot += g[base + c] * w[c] * x[base + c];
  dot = group_reduce<G>(dot, SumOp{});
  const T ri = rstd[row], k = ri * ri * ri * dot / T(C);
  for (int64_t c = lane; c < C; c += G) dx[base + c] += ri * g[base + c] * w[c] - x[base + c] * k;
}

template <class T>
struct WeightGradTerm {  // g[i,c] x[i,c] r[i]
  const T* g;
  const T* x;
  const T* r;
  int64_t C;
  __device__ __forceinline__ T operator()(int64_t i, int64_t c) const { return g[i * C + c] * x[i * C + c] * r[i]; }
};

}  // namespace

template <class T>
void rmsnorm_forward(const T* x, const T* w, T* y, T* rstd, int64_t M, int64_t C, double eps) {
  launch_rows(M, C, [&](auto g, unsigned grid) {
    rmsnorm_forward_kernel<T, decltype(g)::value><<<grid, kBlock, 0, compute_stream()>>>(x, w, y, rstd, M, C,
                                                                                       static_cast<T>(eps));
  });
  MG_CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

template <class T>
void rmsnorm_backward_x(const T* g, const T* x, const T* w, const T* rstd, T* dx, int64_t M, int64_t C) {
  launch_rows(M, C, [&](auto G, unsigned grid) {
    rmsnorm_backward_x_kernel<T, decltype(G)::value><<<grid, kBlock, 0, compute_stream()>>>(g, x, w, rstd, dx, M, C);
  });
  MG_CUDA_CHECK_LAUNCH("rmsnorm_backward_x_kernel");
}

template <class T>
void rmsnorm_backward_weight(const T* g, const T* x, const T* rstd, T* dw, int64_t M, int64_t C) {
  colsum<T>(M, C, WeightGradTerm<T>{g, x, rstd, C}, AddToIndex<T>{dw});
}

#define MG_INSTANTIATE(T)                                                                          \
  template void rmsnorm_forward<T>(const T*, const T*, T*, T*, int64_t, int64_t, double);         \
  template void rmsnorm_backward_x<T>(const T*, const T*, const T*, const T*, T*, int64_t, int64_t); \
  template void rmsnorm_backward_weight<T>(const T*, const T*, const T*, T*, int64_t, int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace mg::cuda
