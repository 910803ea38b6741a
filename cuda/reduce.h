#pragma once
// Reduction kernels for autograd/ops_reduce.cpp: sum/mean of a whole tensor, sum over rows,
// softmax and logsumexp over the last dim, forward and backward. Device pointers, T float or
// double, asynchronous on the compute stream; backward calls accumulate (+=). Every
// reduction is deterministic (a fixed summation order; no atomics).
#include <cstdint>

namespace mg::cuda {

// out[0] = T(w * sum_i x[i]), summed in double (as the CPU's deterministic_sum)
template <class T> void sum_all(const T* x, int64_t n, double w, T* out);
// dx[i] += g[0] * T(w)   (g: the device scalar gradient of the sum)
template <class T> void sum_all_backward(const T* g, double w, T* dx, int64_t n);
// x (M, N) -> out (N): out[j] = sum_i x[i, j]   (overwrites out)
template <class T> void sum_rows(const T* x, int64_t M, int64_t N, T* out);
// dx[i, j] += g[j]
template <class T> void sum_rows_backward(const T* g, int64_t M, int64_t N, T* dx);
// y = softmax(x) over rows of N (M rows)
template <class T> void softmax_forward(const T* x, T* y, int64_t M, int64_t N);
// dx += y * (g - sum_j g y)
template <class T> void softmax_backward(const T* g, const T* y, T* dx, int64_t M, int64_t N);
// out[i] = log sum_j exp(x[i, j])
template <class T> void logsumexp_forward(const T* x, T* out, int64_t M, int64_t N);
// dx[i, j] += g[i] * exp(x[i, j] - lse[i])
template <class T> void logsumexp_backward(const T* g, const T* x, const T* lse, T* dx, int64_t M, int64_t N);

}  // namespace mg::cuda
