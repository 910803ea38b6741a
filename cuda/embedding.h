#pragma once
// Row gather / scatter kernels for autograd/ops_embedding.cpp (embedding) and ops_shape.cpp
// (gather_rows, scatter_add_rows). Rows of C elements; T float or double; asynchronous on the
// compute stream except where a host array is uploaded (scatter_add_rows synchronizes once
// for its upload).
//
// Determinism: a scatter with repeated rows (an embedding's table gradient, MoE's combine)
// never uses atomics. scatter_add_rows groups the positions by destination row on the host
// (a stable counting sort: row -> its positions in increasing order), uploads that list, and
// one thread block per destination row adds its positions in that order.
#include <cstdint>

namespace mg::cuda {

// dst[i, c] = src[rows[i], c] for i < n   (rows: a DEVICE array of n indices)
template <class T> void gather_rows(const int32_t* rows, int64_t n, const T* src, T* dst, int64_t C);
// dst[i, c] += w[i] * src[rows[i], c]   (rows on the device; w on the device or null for 1)
template <class T>
void gather_rows_accumulate(const int32_t* rows, int64_t n, const T* src, const T* w, T* dst, int64_t C);
// dst[rows[i], c] += w[i] * src[i, c], summed per destination row in increasing i
// (rows: a HOST array of n indices, each in [0, M) for dst (M, C); w on the device or null)
template <class T>
void scatter_add_rows(const int32_t* host_rows, int64_t n, const T* src, const T* w, T* dst, int64_t C);
// out[i] += sum_c a[rows[i], c] * b[i, c]   (rows on the device)
template <class T> void gathered_row_dot(const int32_t* rows, int64_t n, const T* a, const T* b, T* out, int64_t C);

}  // namespace mg::cuda
