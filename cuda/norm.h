#pragma once
// RMSNorm kernels for autograd/ops_norm.cpp: x (M, C), weight (C). Device pointers, T float
// or double, asynchronous on the compute stream; backward calls accumulate (+=).
#include <cstdint>

namespace mg::cuda {

// y = x * r * w with r[i] = 1/sqrt(mean_c x[i,c]^2 + eps), also written to rstd (M)
template <class T> void rmsnorm_forward(const T* x, const T* w, T* y, T* rstd, int64_t M, int64_t C, double eps);
// dx[i,c] += r g w - x r^3 / C * sum_c (g w x)
template <class T>
void rmsnorm_backward_x(const T* g, const T* x, const T* w, const T* rstd, T* dx, int64_t M, int64_t C);
// dw[c] += sum_i g[i,c] x[i,c] r[i], rows summed in a fixed order (deterministic)
template <class T> void rmsnorm_backward_weight(const T* g, const T* x, const T* rstd, T* dw, int64_t M, int64_t C);

}  // namespace mg::cuda
