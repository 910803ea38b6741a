// Fused NF4 matmuls: W is dequantized one tile at a time into a buffer of ~kNF4TileElems floats
// and the tile goes through cblas_sgemm (OpenBLAS, OpenMP build). Dequantizing a tile costs
// about one float op per element while the sgemm on it does 2*M, so for training shapes
// (M = B*T in the hundreds) the product runs at nearly the sgemm rate with 1/8 of the weight
// bytes (QLoRA's "dequantize in the matmul", Dettmers et al. 2023 §3, done with a tuned BLAS).
//
//   forward     Y (M, rows)  (+)= X (M, cols) · W^T   tiles: W[r0:r1, c0:c1] -> Y[:, r0:r1]
//   input grad  dX (M, cols) (+)= dY (M, rows) · W    tiles: W[r0:r1, c0:c1] -> dX[:, c0:c1]
// Both accumulate over the K direction of the tiles with beta = 1 after the first K tile.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "autograd/error.h"
#include "model/nf4.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace mg {
namespace {

// A tile is n_tile x k_tile of the GEMM's (N, K): forward N = W rows, K = W cols; input grad
// N = W cols, K = W rows. Each sgemm call packs its A operand (X or dY, M x k_tile) again, so
// a wide n_tile keeps that repacking small (N / n_tile extra copies of A); k_tile only has to
// be a few hundred, since OpenBLAS itself walks K in blocks of ~384 and updates C for each.
struct Plan {
  int64_t n_tile, k_tile;
};

Plan make_plan(int64_t N, int64_t K, int parallel_tiles) {
  // Split N into at least `parallel_tiles` tiles (one per thread for ThreadTile), 256 wide at
  // least, and fill the rest of the buffer budget with K.
  int64_t n_tile = (N + parallel_tiles - 1) / parallel_tiles;
  n_tile = std::min(N, std::max<int64_t>(n_tile, 256));
  n_tile = std::min(n_tile, kNF4TileElems / 256);
  int64_t k_tile = std::max<int64_t>(128, kNF4TileElems / n_tile);
  k_tile = std::min(K, k_tile / kNF4BlockSize * kNF4BlockSize);
  return {std::max<int64_t>(1, n_tile), std::max<int64_t>(1, k_tile)};
}

// W[r0:r1, c0:c1] -> buf (r1-r0, c1-c0), serial or over a new team when `parallel`.
void dequantize_tile(const NF4Weight& w, const float* absmax, int64_t r0, int64_t r1, int64_t c0,
                     int64_t c1, float* buf, bool parallel) {
  const int64_t width = c1 - c0;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = r0; r < r1; ++r)
    nf4_dequantize_range(w, absmax, r * w.cols + c0, r * w.cols + c1, buf + (r - r0) * width);
}

// C (m, n) = A (m, k) · op(B) + beta C, row-major, lda/ldb/ldc as given.
void sgemm(bool trans_b, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), 1.0f, A, static_cast<int>(lda), B,
              static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
}

void check_args(const char* where, const void* in, const NF4Weight& w, const void* out, int64_t M) {
  MG_CHECK(M >= 0, "[{}] M = {} is negative", where, M);
  MG_CHECK(w.numel() == 0 || M == 0 || (in != nullptr && out != nullptr),
           "[{}] null input or output for M = {}", where, M);
  MG_CHECK(static_cast<int64_t>(w.packed.size()) == (w.numel() + 1) / 2 &&
               static_cast<int64_t>(w.absmax_codes.size()) == w.n_blocks() &&
               static_cast<int64_t>(w.absmax_scales.size()) == w.n_absmax_blocks(),
           "[{}] weight ({}, {}) has {} packed bytes, {} absmax codes, {} scales: it was not "
           "built by nf4_quantize or was loaded for another shape (nf4_validate says more)",
           where, w.rows, w.cols, w.packed.size(), w.absmax_codes.size(), w.absmax_scales.size());
  MG_CHECK(w.rows <= INT32_MAX && w.cols <= INT32_MAX && M <= INT32_MAX,
           "[{}] sizes M={} rows={} cols={} exceed the BLAS int range", where, M, w.rows, w.cols);
}

// Runs `tile(n0, n1, k0, k1, buf, parallel_dequant)` over the plan: ThreadTile hands whole
// n-tiles to threads (each with its own buffer, sgemm serial inside the team); SharedTile and
// nested calls go through the tiles in turn, SharedTile dequantizing with all threads and
// letting OpenBLAS thread each sgemm.
template <class TileFn>
void run_tiles(int64_t N, int64_t K, NF4MatmulVersion version, TileFn&& tile) {
  const bool nested = omp_in_parallel();
  const int threads = nested ? 1 : omp_get_max_threads();
  const bool thread_tiles = version != NF4MatmulVersion::SharedTile && threads > 1;
  const Plan p = make_plan(N, K, thread_tiles ? threads : 1);
  const int64_t n_tiles = (N + p.n_tile - 1) / p.n_tile;
  auto one_n_tile = [&](int64_t t, float* buf, bool parallel_dequant) {
    const int64_t n0 = t * p.n_tile, n1 = std::min(N, n0 + p.n_tile);
    for (int64_t k0 = 0; k0 < K; k0 += p.k_tile)
      tile(n0, n1, k0, std::min(K, k0 + p.k_tile), buf, parallel_dequant);
  };
  const size_t buffer_size = static_cast<size_t>(p.n_tile * p.k_tile);
  if (thread_tiles && n_tiles > 1) {
#pragma omp parallel
    {
      std::vector<float> buf(buffer_size);
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < n_tiles; ++t) one_n_tile(t, buf.data(), false);
    }
  } else {
    std::vector<float> buf(buffer_size);
    for (int64_t t = 0; t < n_tiles; ++t) one_n_tile(t, buf.data(), threads > 1);
  }
}

// ---- Direct kernels (small M) -----------------------------------------------------------
constexpr int64_t kDirectChunk = 1024;  // floats of one W row dequantized at a time (4 KiB, L1)

// sum_j a[j] * b[j] over n floats, 8 lanes x 2 accumulators.
float dot(const float* a, const float* b, int64_t n) {
  int64_t j = 0;
  float tail = 0.0f;
#if defined(__AVX2__)
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  for (; j + 16 <= n; j += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8), s1);
  }
  const __m256 s = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  tail = _mm_cvtss_f32(h);
#endif
  for (; j < n; ++j) tail += a[j] * b[j];
  return tail;
}

// Y (M, rows) (+)= X (M, cols) W^T: threads split W's rows; each row is read once.
void direct_forward(const float* X, const NF4Weight& W, const float* absmax, float* Y, int64_t M,
                    bool accumulate) {
  const int64_t rows = W.rows, cols = W.cols;
#pragma omp parallel if (!omp_in_parallel())
  {
    float buf[kDirectChunk];
    std::vector<double> acc(static_cast<size_t>(M));
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; ++r) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t c0 = 0; c0 < cols; c0 += kDirectChunk) {
        const int64_t len = std::min(kDirectChunk, cols - c0);
        nf4_dequantize_range(W, absmax, r * cols + c0, r * cols + c0 + len, buf);
        for (int64_t m = 0; m < M; ++m) acc[m] += dot(X + m * cols + c0, buf, len);
      }
      for (int64_t m = 0; m < M; ++m) {
        float& y = Y[m * rows + r];
        y = static_cast<float>(acc[m]) + (accumulate ? y : 0.0f);
      }
    }
  }
}

// dX (M, cols) (+)= dY (M, rows) W: threads split dX's columns; each walks all rows of W,
// four at a time, so each dX element is loaded and stored once per four rows, not per row.
void direct_input_grad(const float* dY, const NF4Weight& W, const float* absmax, float* dX,
                       int64_t M, bool accumulate) {
  const int64_t rows = W.rows, cols = W.cols;
  constexpr int64_t kRowsAtOnce = 4;
  const int64_t n_chunks = (cols + kDirectChunk - 1) / kDirectChunk;
#pragma omp parallel if (!omp_in_parallel())
  {
    std::vector<float> buf(static_cast<size_t>(kRowsAtOnce * kDirectChunk));
#pragma omp for schedule(dynamic, 1)
    for (int64_t ch = 0; ch < n_chunks; ++ch) {
      const int64_t c0 = ch * kDirectChunk, len = std::min(kDirectChunk, cols - c0);
      if (!accumulate)
        for (int64_t m = 0; m < M; ++m) std::fill_n(dX + m * cols + c0, len, 0.0f);
      for (int64_t r0 = 0; r0 < rows; r0 += kRowsAtOnce) {
        const int64_t nr = std::min(kRowsAtOnce, rows - r0);
        for (int64_t i = 0; i < kRowsAtOnce; ++i) {  // missing rows of the last group are 0
          float* w = buf.data() + i * kDirectChunk;
          if (i < nr)
            nf4_dequantize_range(W, absmax, (r0 + i) * cols + c0, (r0 + i) * cols + c0 + len, w);
          else
            std::fill_n(w, len, 0.0f);
        }
        const float* w0 = buf.data();
        const float* w1 = w0 + kDirectChunk;
        const float* w2 = w1 + kDirectChunk;
        const float* w3 = w2 + kDirectChunk;
        for (int64_t m = 0; m < M; ++m) {
          const float* g = dY + m * rows + r0;
          const float g0 = g[0], g1 = nr > 1 ? g[1] : 0.0f, g2 = nr > 2 ? g[2] : 0.0f,
                      g3 = nr > 3 ? g[3] : 0.0f;
          float* out = dX + m * cols + c0;
          for (int64_t j = 0; j < len; ++j)  // vectorized by the compiler
            out[j] += (g0 * w0[j] + g1 * w1[j]) + (g2 * w2[j] + g3 * w3[j]);
        }
      }
    }
  }
}

NF4MatmulVersion resolve(NF4MatmulVersion v, int64_t M) {
  if (v != NF4MatmulVersion::Auto) return v;
  return M <= kNF4DirectMaxM ? NF4MatmulVersion::Direct : NF4MatmulVersion::ThreadTile;
}

}  // namespace

void nf4_matmul(const float* X, const NF4Weight& W, float* Y, int64_t M, bool accumulate,
                NF4MatmulVersion version) {
  check_args("nf4_matmul", X, W, Y, M);
  const int64_t rows = W.rows, cols = W.cols;
  if (M == 0 || rows == 0) return;
  if (cols == 0) {  // nothing to multiply: zero, or leave alone when accumulating
    if (!accumulate) std::fill(Y, Y + M * rows, 0.0f);
    return;
  }
  const std::vector<float> absmax = nf4_absmax(W);
  version = resolve(version, M);
  if (version == NF4MatmulVersion::Direct)
    return direct_forward(X, W, absmax.data(), Y, M, accumulate);
  // Tile W[n0:n1, k0:k1] (N = rows, K = cols) -> Y[:, n0:n1] += X[:, k0:k1] · tile^T.
  run_tiles(rows, cols, version,
            [&](int64_t n0, int64_t n1, int64_t k0, int64_t k1, float* buf, bool par) {
              dequantize_tile(W, absmax.data(), n0, n1, k0, k1, buf, par);
              const float beta = (k0 == 0 && !accumulate) ? 0.0f : 1.0f;
              sgemm(/*trans_b=*/true, M, n1 - n0, k1 - k0, X + k0, cols, buf, k1 - k0, beta, Y + n0,
                    rows);
            });
}

void nf4_matmul_input_grad(const float* dY, const NF4Weight& W, float* dX, int64_t M,
                           bool accumulate, NF4MatmulVersion version) {
  check_args("nf4_matmul_input_grad", dY, W, dX, M);
  const int64_t rows = W.rows, cols = W.cols;
  if (M == 0 || cols == 0) return;
  if (rows == 0) {
    if (!accumulate) std::fill(dX, dX + M * cols, 0.0f);
    return;
  }
  const std::vector<float> absmax = nf4_absmax(W);
  version = resolve(version, M);
  if (version == NF4MatmulVersion::Direct)
    return direct_input_grad(dY, W, absmax.data(), dX, M, accumulate);
  // Tile W[k0:k1, n0:n1] (N = cols, K = rows) -> dX[:, n0:n1] += dY[:, k0:k1] · tile.
  run_tiles(cols, rows, version,
            [&](int64_t n0, int64_t n1, int64_t k0, int64_t k1, float* buf, bool par) {
              dequantize_tile(W, absmax.data(), k0, k1, n0, n1, buf, par);
              const float beta = (k0 == 0 && !accumulate) ? 0.0f : 1.0f;
              sgemm(/*trans_b=*/false, M, n1 - n0, k1 - k0, dY + k0, rows, buf, n1 - n0, beta,
                    dX + n0, cols);
            });
}

}  // namespace mg
