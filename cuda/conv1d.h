#pragma once
// Causal depthwise conv1d kernels for autograd/ops_conv1d.cpp: x (B, L, D), weight [D, 1, K],
// bias [D]. Device pointers, T float or double, asynchronous on the compute stream; the
// backward accumulates (+=).
#include <cstdint>

namespace mg::cuda {

// y[b,t,d] = bias[d] + sum_{j<K} w[d,j] x[b, t-(K-1)+j, d]   (x at t < 0 is 0)
template <class T>
void causal_conv1d_forward(const T* x, const T* w, const T* bias, T* y, int64_t B, int64_t L, int64_t D, int64_t K);
// dx[b,s,d] += sum_j w[d,j] dy[b, s+(K-1)-j, d]; dw[d,j] += sum_{b,t} dy[b,t,d] x[b,t-(K-1)+j,d];
// dbias[d] += sum_{b,t} dy[b,t,d]. dx, dw, dbias may each be null (not needed). dw and dbias
// are one deterministic column reduction over the B*L rows.
template <class T>
void causal_conv1d_backward(const T* g, const T* x, const T* w, T* dx, T* dw, T* dbias, int64_t B, int64_t L,
                            int64_t D, int64_t K);

}  // namespace mg::cuda
