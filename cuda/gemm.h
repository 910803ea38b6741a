#pragma once
// Row-major GEMM on the GPU through cuBLAS, the same contract as autograd/blas.h:
//   C(M,N) = alpha * op(A) op(B) + beta * C,  op(X) = X or X^T; device pointers.
// A batch of `batch` independent products at fixed element strides (stride 0: the operand is
// shared by every product) runs as one strided-batched cuBLAS call.
//
// float32 products run in full FP32 by default; set_tf32(true) lets cuBLAS use TF32 tensor
// cores (10-bit mantissa inputs, float32 accumulation: ~3e-4 relative error, several times
// faster). cuBLAS is deterministic here: one handle, one stream, no atomics mode.
#include <cstdint>

namespace mg::cuda {

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          const T* B, T beta, T* C, int64_t batch = 1, int64_t stride_a = 0, int64_t stride_b = 0,
          int64_t stride_c = 0);

// db(N) += sum over the M rows of dy(M,N): a bias gradient (cuBLAS GEMV against ones).
template <class T>
void add_column_sums(const T* dy, int64_t M, int64_t N, T* db);

// y(M,N) = bias(N) broadcast over rows (the start of a linear layer's forward).
template <class T>
void broadcast_rows(const T* bias, int64_t M, int64_t N, T* y);

void set_tf32(bool on);
bool tf32();

}  // namespace mg::cuda
