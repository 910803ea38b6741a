#pragma once
// Fused cross-entropy kernels for autograd/ops_loss.cpp: logits (M, V), targets I32 (M) with
// ignore_index -1 (already checked to lie in [-1, V)), `counted` = the number of targets >= 0.
// Device pointers, T float or double, asynchronous on the compute stream.
#include <cstdint>

namespace mg::cuda {

// lse[i] = log sum_j exp(logits[i, j]) (one online max/sum pass per row);
// loss[0] = T(sum_{t_i >= 0} double(lse[i] - logits[i, t_i]) / counted), summed in double in
// row order's fixed tree; 0 when counted == 0.
template <class T>
void cross_entropy_forward(const T* logits, const int32_t* targets, int64_t M, int64_t V, int64_t counted, T* lse,
                           T* loss);
// dlogits[i, j] += g * (exp(logits[i, j] - lse[i]) - [j == t_i]) for t_i >= 0, where
// g = dloss[0] / counted (dloss: the device scalar gradient of the loss)
template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const T* lse, const T* dloss, int64_t counted,
                            T* dlogits, int64_t M, int64_t V);

}  // namespace mg::cuda
