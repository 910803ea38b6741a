// gemm against a naive loop: every transpose combination, padded leading dimensions, beta = 0
// over a NaN-filled C (must not leak) and beta != 0, for the general GEMM path and the GEMV
// paths taken for one row (M = 1, decoding) or one column (N = 1).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "autograd/blas.h"

namespace mg {
namespace {

template <class T>
void check_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T beta) {
  std::mt19937 rng(static_cast<unsigned>(M * 131 + N * 17 + K + ta * 2 + tb));
  std::uniform_real_distribution<double> u(-1, 1);
  // Stored shapes: A (M,K) or (K,M) when ta; B (K,N) or (N,K) when tb; rows padded by 3.
  const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
  const int64_t lda = a_cols + 3, ldb = b_cols + 3, ldc = N + 3;
  std::vector<T> A(std::max<int64_t>(1, a_rows * lda)), B(std::max<int64_t>(1, b_rows * ldb));
  for (T& v : A) v = static_cast<T>(u(rng));
  for (T& v : B) v = static_cast<T>(u(rng));
  std::vector<T> C(M * ldc);
  for (T& v : C) v = beta == T(0) ? std::numeric_limits<T>::quiet_NaN() : static_cast<T>(u(rng));
  const std::vector<T> C0 = C;
  const T alpha = T(0.7);
  gemm<T>(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double ref = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double a = ta ? A[k * lda + m] : A[m * lda + k];
        const double b = tb ? B[n * ldb + k] : B[k * ldb + n];
        ref += a * b;
      }
      ref = alpha * ref + (beta == T(0) ? 0.0 : beta * double(C0[m * ldc + n]));
      ASSERT_NEAR(double(C[m * ldc + n]), ref, tol * (1 + std::abs(ref)))
          << "ta " << ta << " tb " << tb << " M " << M << " N " << N << " K " << K << " beta " << beta << " at (" << m
          << "," << n << ")";
    }
  for (int64_t m = 0; m < M; ++m)  // the padding of C is untouched
    for (int64_t n = N; n < ldc; ++n)
      if (beta != T(0)) ASSERT_EQ(C[m * ldc + n], C0[m * ldc + n]);
}

template <class T>
void check_all() {
  struct Shape { int64_t M, N, K; };
  for (Shape s : {Shape{1, 7, 5}, Shape{6, 1, 5}, Shape{1, 1, 5}, Shape{4, 3, 5}, Shape{1, 300, 129}, Shape{1, 7, 0}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (T beta : {T(0), T(0.3)}) check_gemm<T>(ta, tb, s.M, s.N, s.K, beta);
}

TEST(Blas, GemmMatchesANaiveLoopIncludingOneRowAndOneColumnFloat) { check_all<float>(); }
TEST(Blas, GemmMatchesANaiveLoopIncludingOneRowAndOneColumnDouble) { check_all<double>(); }

}  // namespace
}  // namespace mg
