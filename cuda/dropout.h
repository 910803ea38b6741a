#pragma once
// Dropout kernels for autograd/ops_dropout.cpp. The mask comes from a counter-based hash
// (splitmix64 of seed + index), so it needs no RNG state on the device and the backward can
// trust the saved U8 mask: element i is kept iff uniform(seed, i) >= p. Device pointers,
// T float or double, asynchronous on the compute stream.
#include <cstdint>

namespace mg::cuda {

// mask[i] = keep(seed, i); y[i] = mask[i] ? x[i] * T(1/(1-p)) : 0
template <class T> void dropout_forward(const T* x, T* y, uint8_t* mask, int64_t n, double p, uint64_t seed);
// dx[i] += mask[i] ? g[i] * T(1/(1-p)) : 0
template <class T> void dropout_backward(const T* g, const uint8_t* mask, T* dx, int64_t n, double p);

}  // namespace mg::cuda
