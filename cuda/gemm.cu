// cuBLAS GEMM in row-major terms (cuda/gemm.h).
//
// cuBLAS is column-major. A row-major (M,N) matrix is the column-major (N,M) matrix with the
// same bytes, so the row-major product C = op(A) op(B) is computed as the column-major
// product C^T = op(B)^T op(A)^T: swap the operands, keep each one's transpose flag, and pass
// the row-major leading dimensions (the row lengths as stored).
#include <cublas_v2.h>

#include <mutex>

#include "cuda/check.h"
#include "cuda/gemm.h"
#include "cuda/launch.cuh"
#include "cuda/runtime.h"

namespace mg::cuda {

namespace {

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed (out of GPU memory?)";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "unknown status";
  }
}

#define MG_CUBLAS_CHECK(call, what)                                                      \
  do {                                                                                   \
    cublasStatus_t mg_st_ = (call);                                                      \
    MG_CHECK(mg_st_ == CUBLAS_STATUS_SUCCESS, "[cuda gemm] {} failed: cuBLAS {}", what,  \
             cublas_status_name(mg_st_));                                                \
  } while (0)

bool g_tf32 = false;

// One handle for the process, bound to the compute stream.
cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    require("cuda gemm");
    cublasHandle_t created = nullptr;
    MG_CUBLAS_CHECK(cublasCreate(&created), "creating the cuBLAS handle");
    MG_CUBLAS_CHECK(cublasSetStream(created, compute_stream()), "binding cuBLAS to the stream");
    MG_CUBLAS_CHECK(cublasSetAtomicsMode(created, CUBLAS_ATOMICS_NOT_ALLOWED), "disallowing atomics");
    return created;
  }();
  MG_CUBLAS_CHECK(cublasSetMathMode(h, g_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH),
                  "setting the math mode");
  return h;
}

void strided_batched(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* alpha,
                     const float* A, int lda, long long sa, const float* B, int ldb, long long sb,
                     const float* beta, float* C, int ldc, long long sc, int batch) {
  MG_CUBLAS_CHECK(cublasSgemmStridedBatched(handle(), ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb,
                                            beta, C, ldc, sc, batch), "sgemm");
}
void strided_batched(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const double* alpha,
                     const double* A, int lda, long long sa, const double* B, int ldb, long long sb,
                     const double* beta, double* C, int ldc, long long sc, int batch) {
  MG_CUBLAS_CHECK(cublasDgemmStridedBatched(handle(), ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb,
                                            beta, C, ldc, sc, batch), "dgemm");
}

void gemv_t(int rows, int cols, const float* alpha, const float* A, const float* x, const float* beta, float* y) {
  MG_CUBLAS_CHECK(cublasSgemv(handle(), CUBLAS_OP_N, rows, cols, alpha, A, rows, x, 1, beta, y, 1), "sgemv");
}
void gemv_t(int rows, int cols, const double* alpha, const double* A, const double* x, const double* beta, double* y) {
  MG_CUBLAS_CHECK(cublasDgemv(handle(), CUBLAS_OP_N, rows, cols, alpha, A, rows, x, 1, beta, y, 1), "dgemv");
}

int to_int(int64_t v, const char* what) {
  MG_CHECK(v >= 0 && v <= INT32_MAX, "[cuda gemm] {} = {} exceeds cuBLAS's 32-bit sizes", what, v);
  return static_cast<int>(v);
}

template <class T>
__global__ void broadcast_rows_kernel(const T* bias, int64_t M, int64_t N, T* y) {
  const size_t total = size_t(M) * N;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x)
    y[i] = bias[i % N];
}

template <class T>
__global__ void fill_ones_kernel(T* p, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = T(1);
}

}  // namespace

void set_tf32(bool on) { g_tf32 = on; }
bool tf32() { return g_tf32; }

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, const T* B,
          T beta, T* C, int64_t batch, int64_t stride_a, int64_t stride_b, int64_t stride_c) {
  if (M == 0 || N == 0 || batch == 0) return;
  const int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N;
  // Column-major C^T (N,M) = op(B)^T (N,K) op(A)^T (K,M).
  strided_batched(trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                  to_int(N, "N"), to_int(M, "M"), to_int(K, "K"), &alpha, B, to_int(std::max<int64_t>(ldb, 1), "ldb"),
                  stride_b, A, to_int(std::max<int64_t>(lda, 1), "lda"), stride_a, &beta, C, to_int(N, "N"),
                  stride_c, to_int(batch, "batch"));
}

template <class T>
void add_column_sums(const T* dy, int64_t M, int64_t N, T* db) {
  if (M == 0 || N == 0) return;
  // A ones vector of length M, kept between calls (grows as needed).
  static T* ones = nullptr;
  static int64_t ones_len = 0;
  if (ones_len < M) {
    device_free(ones);
    ones = static_cast<T*>(device_alloc(sizeof(T) * M));
    ones_len = M;
    fill_ones_kernel<T><<<grid_for(M), kBlock, 0, compute_stream()>>>(ones, M);
    MG_CUDA_CHECK_LAUNCH("fill ones");
  }
  // dy row-major (M,N) is column-major (N,M): db(N) += dy_cm (N,M) * ones(M). cuBLAS's GEMV
  // sums each row in a fixed order: deterministic.
  const T one = 1;
  gemv_t(to_int(N, "N"), to_int(M, "M"), &one, dy, ones, &one, db);
}

template <class T>
void broadcast_rows(const T* bias, int64_t M, int64_t N, T* y) {
  if (M == 0 || N == 0) return;
  broadcast_rows_kernel<T><<<grid_for(size_t(M) * N), kBlock, 0, compute_stream()>>>(bias, M, N, y);
  MG_CUDA_CHECK_LAUNCH("broadcast rows");
}

#define MG_GEMM_INSTANTIATE(T)                                                                  \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, const T*, T, T*,    \
                        int64_t, int64_t, int64_t, int64_t);                                    \
  template void add_column_sums<T>(const T*, int64_t, int64_t, T*);                             \
  template void broadcast_rows<T>(const T*, int64_t, int64_t, T*);
MG_GEMM_INSTANTIATE(float)
MG_GEMM_INSTANTIATE(double)

}  // namespace mg::cuda
