#pragma once
// Copy kernels for autograd/ops_shape.cpp: column ranges of row-major matrices (slice_last,
// concat_last and their backwards) and the transpose of the last two dims. Device pointers,
// T float or double, asynchronous on the compute stream. `accumulate`: += instead of =.
#include <cstdint>

namespace mg::cuda {

// dst[i * dst_ld + dst_off + j] (+)= src[i * src_ld + src_off + j] for i < M, j < width
template <class T>
void copy_columns(const T* src, int64_t src_ld, int64_t src_off, T* dst, int64_t dst_ld, int64_t dst_off,
                  int64_t M, int64_t width, bool accumulate);
// src (nb, R, S) -> dst (nb, S, R): dst[b, s, r] (+)= src[b, r, s]
template <class T> void transpose_last2(const T* src, T* dst, int64_t nb, int64_t R, int64_t S, bool accumulate);

}  // namespace mg::cuda
