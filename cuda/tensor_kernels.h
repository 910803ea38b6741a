#pragma once
// Whole-tensor kernels that Tensor itself needs on the GPU (autograd/tensor.cpp): fill with a
// value and convert between element types. Pointers are device pointers; both run on the
// compute stream (cuda/runtime.h).
#include <cstddef>

#include "autograd/dtype.h"

namespace mg::cuda {

// dst[i] = value (rounded to dst's type; F16 is IEEE half, like autograd/half.h) for i < n.
void fill(DType dtype, void* dst, size_t n, double value);
// dst[i] = src[i] converted (float -> int truncates toward zero, as static_cast does).
void convert(DType src_type, const void* src, DType dst_type, void* dst, size_t n);
// dst[i] += src[i] for i < n (float or double): a backward accumulating a gradient that a
// kernel wrote into a scratch buffer.
template <class T>
void accumulate(T* dst, const T* src, size_t n);

}  // namespace mg::cuda
