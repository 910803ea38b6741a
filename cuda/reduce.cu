// Reductions (cuda/reduce.h). Whole-tensor and column sums use the deterministic two-pass
// reductions of cuda/kernel_util.cuh; row ops (softmax, logsumexp) run a warp per row for rows
// up to 1024 elements, else a block per row, with an online max/sum.
#include "cuda/kernel_util.cuh"
#include "cuda/reduce.h"

namespace mg::cuda {

using namespace detail;

namespace {

template <class T>
struct LoadAt {
  const T* x;
  __device__ __forceinline__ T operator()(int64_t i) const { return x[i]; }
  __device__ __forceinline__ T operator()(int64_t r, int64_t j) const { return x[r * N + j]; }
  int64_t N;
};

template <class T>
struct StoreScaled {  // out[0] = T(v * w)
  T* out;
  double w;
  __device__ void operator()(double v) const { out[0] = static_cast<T>(v * w); }
};

template <class T>
__global__ void sum_all_backward_kernel(const T* g, T w, T* dx, int64_t n) {
  const T gw = g[0] * w;
  MG_GRID_STRIDE(i, n) dx[i] += gw;
}

template <class T>
__global__ void add_broadcast_kernel(const T* g, T* dx, int64_t n, int64_t N) {  // dx[i] += g[i % N]
  MG_GRID_STRIDE(i, n) dx[i] += g[i % N];
}

template <class T, int G>
__global__ void softmax_forward_kernel(const T* x, T* y, int64_t M, int64_t N) {
  MG_ROW_SETUP(G, M)
  const T* r = x + row * N;
  MaxSum<T> ms = maxsum_init<T>();
  for (int64_t j = lane; j < N; j += G) maxsum_add(ms, r[j]);
  ms = group_reduce<G>(ms, MaxSumOp{});
  T* o = y + row * N;
  for (int64_t j = lane; j < N; j += G) o[j] = d_exp(r[j] - ms.m) / ms.s;
}

template <class T, int G>
__global__ void softmax_backward_kernel(const T* g, const T* y, T* dx, int64_t M, int64_t N) {
  MG_ROW_SETUP(G, M)
  const int64_t base = row * N;
  T dot = 0;
  for (int64_t j = lane; j < N; j += G) dot += g[base + j] * y[base + j];
  dot = group_reduce<G>(dot, SumOp{});
  for (int64_t j = lane; j < N; j += G) dx[base + j] += y[base + j] * (g[base + j] - dot);
}

template <class T, int G>
__global__ void logsumexp_forward_kernel(const T* x, T* out, int64_t M, int64_t N) {
  MG_ROW_SETUP(G, M)
  const T* r = x + row * N;
  MaxSum<T> ms = maxsum_init<T>();
  for (int64_t j = lane; j < N; j += G) maxsum_add(ms, r[j]);
  ms = group_reduce<G>(ms, MaxSumOp{});
  if (lane == 0) out[row] = ms.m + d_log(ms.s);
}

template <class T, int G>
__global__ void logsumexp_backward_kernel(const T* g, const T* x, const T* lse, T* dx, int64_t M, int64_t N) {
  MG_ROW_SETUP(G, M)
  const T gi = g[row], li = lse[row];
  const int64_t base = row * N;
  for (int64_t j = lane; j < N; j += G) dx[base + j] += gi * d_exp(x[base + j] - li);
}

}  // namespace

template <class T>
void sum_all(const T* x, int64_t n, double w, T* out) {
  full_sum<double>(n, LoadAt<T>{x, 0}, StoreScaled<T>{out, w});
}

template <class T>
void sum_all_backward(const T* g, double w, T* dx, int64_t n) {
  if (n <= 0) return;
  sum_all_backward_kernel<<<grid_for(n), kBlock, 0, compute_stream()>>>(g, static_cast<T>(w), dx, n);
  MG_CUDA_CHECK_LAUNCH("sum_all_backward_kernel");
}

template <class T>
void sum_rows(const T* x, int64_t M, int64_t N, T* out) {
  colsum<T>(M, N, LoadAt<T>{x, N}, SetIndex<T>{out});
}

template <class T>
void sum_rows_backward(const T* g, int64_t M, int64_t N, T* dx) {
  const int64_t n = M * N;
  if (n <= 0) return;
  add_broadcast_kernel<<<grid_for(n), kBlock, 0, compute_stream()>>>(g, dx, n, N);
  MG_CUDA_CHECK_LAUNCH("add_broadcast_kernel");
}

template <class T>
void softmax_forward(const T* x, T* y, int64_t M, int64_t N) {
  launch_rows(M, N, [&](auto g, unsigned grid) {
    softmax_forward_kernel<T, decltype(g)::value><<<grid, kBlock, 0, compute_stream()>>>(x, y, M, N);
  });
  MG_CUDA_CHECK_LAUNCH("softmax_forward_kernel");
}

template <class T>
void softmax_backward(const T* g, const T* y, T* dx, int64_t M, int64_t N) {
  launch_rows(M, N, [&](auto G, unsigned grid) {
    softmax_backward_kernel<T, decltype(G)::value><<<grid, kBlock, 0, compute_stream()>>>(g, y, dx, M, N);
  });
  MG_CUDA_CHECK_LAUNCH("softmax_backward_kernel");
}

template <class T>
void logsumexp_forward(const T* x, T* out, int64_t M, int64_t N) {
  launch_rows(M, N, [&](auto g, unsigned grid) {
    logsumexp_forward_kernel<T, decltype(g)::value><<<grid, kBlock, 0, compute_stream()>>>(x, out, M, N);
  });
  MG_CUDA_CHECK_LAUNCH("logsumexp_forward_kernel");
}

template <class T>
void logsumexp_backward(const T* g, const T* x, const T* lse, T* dx, int64_t M, int64_t N) {
  launch_rows(M, N, [&](auto G, unsigned grid) {
    logsumexp_backward_kernel<T, decltype(G)::value><<<grid, kBlock, 0, compute_stream()>>>(g, x, lse, dx, M, N);
  });
  MG_CUDA_CHECK_LAUNCH("logsumexp_backward_kernel");
}

#define MG_INSTANTIATE(T)                                                              \
  template void sum_all<T>(const T*, int64_t, double, T*);                            \
  template void sum_all_backward<T>(const T*, double, T*, int64_t);                   \
  template void sum_rows<T>(const T*, int64_t, int64_t, T*);                          \
  template void sum_rows_backward<T>(const T*, int64_t, int64_t, T*);                 \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t);                   \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t);        \
  template void logsumexp_forward<T>(const T*, T*, int64_t, int64_t);                 \
  template void logsumexp_backward<T>(const T*, const T*, const T*, T*, int64_t, int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace mg::cuda
