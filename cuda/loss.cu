// Cross-entropy (cuda/loss.h): a warp or block per row computes the row's logsumexp online
// and its loss term; the mean over rows is the deterministic double sum of kernel_util.cuh.
// The backward recomputes softmax from the saved logits and per-row lse.
#include "cuda/kernel_util.cuh"
#include "cuda/loss.h"

namespace mg::cuda {

using namespace detail;

namespace {

template <class T, int G>
__global__ void ce_forward_kernel(const T* x, const int32_t* t, int64_t M, int64_t V, T* lse, double* row_loss) {
  MG_ROW_SETUP(G, M)
  const T* r = x + row * V;
  MaxSum<T> ms = maxsum_init<T>();
  for (int64_t j = lane; j < V; j += G) maxsum_add(ms, r[j]);
  ms = group_reduce<G>(ms, MaxSumOp{});
  if (lane == 0) {
    const T l = ms.m + d_log(ms.s);
    lse[row] = l;
    const int32_t ti = t[row];
    row_loss[row] = ti >= 0 ? static_cast<double>(l - r[ti]) : 0.0;
  }
}

struct LoadDouble {
  const double* v;
  __device__ __forceinline__ double operator()(int64_t i) const { return v[i]; }
};

template <class T>
struct StoreMean {
  T* out;
  double counted;
  __device__ void operator()(double total) const { out[0] = static_cast<T>(counted > 0 ? total / counted : 0.0); }
};

template <class T, int G>
__global__ void ce_backward_kernel(const T* x, const int32_t* t, const T* lse, const T* dloss, T counted, T* dx,
                                   int64_t M, int64_t V) {
  MG_ROW_SETUP(G, M)
  const int32_t ti = t[row];
  if (ti < 0) return;
  const T g = dloss[0] / counted, li = lse[row];
  const int64_t base = row * V;
  for (int64_t j = lane; j < V; j += G) {
    T d = dx[base + j] + g * d_exp(x[base + j] - li);
    if (j == ti) d -= g;
    dx[base + j] = d;
  }
}

}  // namespace

template <class T>
void cross_entropy_forward(const T* logits, const int32_t* targets, int64_t M, int64_t V, int64_t counted, T* lse,
                           T* loss) {
  Scratch<double> row_loss(static_cast<size_t>(M));
  launch_rows(M, V, [&](auto g, unsigned grid) {
    ce_forward_kernel<T, decltype(g)::value><<<grid, kBlock, 0, compute_stream()>>>(logits, targets, M, V, lse,
                                                                                  row_loss.ptr);
  });
  MG_CUDA_CHECK_LAUNCH("ce_forward_kernel");
  full_sum<double>(M, LoadDouble{row_loss.ptr}, StoreMean<T>{loss, static_cast<double>(counted)});
}

template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const T* lse, const T* dloss, int64_t counted,
                            T* dlogits, int64_t M, int64_t V) {
  if (counted == 0) return;
  launch_rows(M, V, [&](auto g, unsigned grid) {
    ce_backward_kernel<T, decltype(g)::value><<<grid, kBlock, 0, compute_stream()>>>(
        logits, targets, lse, dloss, static_cast<T>(counted), dlogits, M, V);
  });
  MG_CUDA_CHECK_LAUNCH("ce_backward_kernel");
}

#define MG_INSTANTIATE(T)                                                                                      \
  template void cross_entropy_forward<T>(const T*, const int32_t*, int64_t, int64_t, int64_t, T*, T*);       \
  template void cross_entropy_backward<T>(const T*, const int32_t*, const T*, const T*, int64_t, T*, int64_t, \
                                          int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace mg::cuda
