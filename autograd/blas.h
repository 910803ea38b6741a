#pragma once
// Row-major GEMM through the tuned BLAS (OpenBLAS, OpenMP build: it runs on our OpenMP
// threads, so there is one thread pool; called inside an omp parallel region it runs serially).
//   C(M,N) = alpha * op(A) op(B) + beta * C,  op(X) = X or X^T
// A single row (M = 1, decoding) or column (N = 1) goes through GEMV, which reads the other
// operand once instead of packing it.
#include <cstdint>

namespace mg {

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// Convenience for contiguous operands: lda/ldb/ldc implied by the shapes.
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          const T* B, T beta, T* C) {
  gemm<T>(trans_a, trans_b, M, N, K, alpha, A, trans_a ? M : K, B, trans_b ? K : N, beta, C, N);
}

// Sets the thread count used by OpenMP (and so by OpenBLAS). 0 = all cores.
void set_num_threads(int n);
int num_threads();

}  // namespace mg
