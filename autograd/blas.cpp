#include "autograd/blas.h"

#include <cblas.h>
#include <omp.h>

namespace mg {

namespace {

// The BLAS calls of one element type, so gemm<float> and gemm<double> share the logic below.
template <class T> struct Blas;
template <> struct Blas<float> {
  static constexpr auto gemm = cblas_sgemm;
  static constexpr auto gemv = cblas_sgemv;
};
template <> struct Blas<double> {
  static constexpr auto gemm = cblas_dgemm;
  static constexpr auto gemv = cblas_dgemv;
};

CBLAS_TRANSPOSE trans(bool t) { return t ? CblasTrans : CblasNoTrans; }

template <class T>
void gemm_impl(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
               const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const auto i = [](int64_t v) { return static_cast<int>(v); };
  // GEMV scales y by beta first; some OpenBLAS versions let NaN * 0 through, so a beta = 0
  // output (often uninitialized memory) is zeroed here.
  auto zero_vector = [](T* y, int64_t n, int64_t stride) {
    for (int64_t j = 0; j < n; ++j) y[j * stride] = T(0);
  };
  if (M == 1 && K > 0) {
    // One row (decoding one token): C(1,N) = op(A)(1,K) op(B). GEMM would pack all of B for
    // one row (measured: 42% of a 130M model's decode time in OpenBLAS's packing); GEMV reads
    // B once. x = the row of op(A): contiguous, or a column of the stored A when ta.
    const int incx = ta ? i(lda) : 1;
    if (beta == T(0)) zero_vector(C, N, 1);
    if (tb)  // B stored (N,K): y = B x
      Blas<T>::gemv(CblasRowMajor, CblasNoTrans, i(N), i(K), alpha, B, i(ldb), A, incx, beta, C, 1);
    else  // B stored (K,N): y = B^T x
      Blas<T>::gemv(CblasRowMajor, CblasTrans, i(K), i(N), alpha, B, i(ldb), A, incx, beta, C, 1);
    return;
  }
  if (N == 1 && K > 0) {
    // One column: C(M,1) = op(A) b, b = the column of op(B); C's column has stride ldc.
    const int incb = tb ? 1 : i(ldb);
    if (beta == T(0)) zero_vector(C, M, ldc);
    if (ta)  // A stored (K,M): y = A^T b
      Blas<T>::gemv(CblasRowMajor, CblasTrans, i(K), i(M), alpha, A, i(lda), B, incb, beta, C, i(ldc));
    else  // A stored (M,K): y = A b
      Blas<T>::gemv(CblasRowMajor, CblasNoTrans, i(M), i(K), alpha, A, i(lda), B, incb, beta, C, i(ldc));
    return;
  }
  Blas<T>::gemm(CblasRowMajor, trans(ta), trans(tb), i(M), i(N), i(K), alpha, A, i(lda), B, i(ldb), beta, C,
                i(ldc));
}

}  // namespace

template <>
void gemm<float>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_impl<float>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <>
void gemm<double>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                  int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  gemm_impl<double>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace mg
