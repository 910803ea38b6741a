// Fused NF4 matmuls: W is dequantized one tile at a time into a buffer of ~kNF4TileElems floats
// and the tile goes through cblas_sgemm (OpenBLAS, OpenMP build). Dequantizing a tile costs
// about one float op per element while the sgemm on it does 2*M, so for training shapes
// (M = B*T in the hundreds) the product runs at nearly the sgemm rate with 1/8 of the weight
// bytes (QLoRA's "dequantize in the matmul", Dettmers et al. 2023 §3, done with a tuned BLAS).
//
//   forward     Y (M, rows)  (+)= X (M, cols) · W^T   tiles: W[r0:r1, c0:c1] -> Y[:, r0:r1]
//   input grad  dX (M, cols) (+)= dY (M, rows) · W    tiles: W[r0:r1, c0:c1] -> dX[:, c0:c1]
// Both accumulate over the K direction of the tiles with beta = 1 after the first tile.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "autograd/error.h"
#include "model/nf4.h"

namespace mg {
namespace {

struct Tile {
  int64_t rows, cols;  // of W per tile
};

// Long rows are cut into column chunks (K for the forward) so a tile keeps enough rows for
// an sgemm N of ~128; 2048 columns x 128 rows = kNF4TileElems.
constexpr int64_t kMaxTileCols = 2048;

Tile forward_tile(const NF4Weight& w) {
  const int64_t tc = std::max<int64_t>(1, std::min(w.cols, kMaxTileCols));
  return {std::max<int64_t>(1, kNF4TileElems / tc), tc};
}

// The input grad is split over dX's columns; ThreadTile needs several column tiles per thread
// to share the work, so the columns are cut to ~cols/(4*threads), in whole 64-blocks.
Tile input_grad_tile(const NF4Weight& w, int threads) {
  int64_t tc = std::min(w.cols, kMaxTileCols);
  if (threads > 1) {
    const int64_t share = (w.cols + 4 * threads - 1) / (4 * threads);
    tc = std::min(tc, std::max<int64_t>(kNF4BlockSize, (share + 63) / 64 * 64));
  }
  tc = std::max<int64_t>(1, tc);
  return {std::max<int64_t>(1, kNF4TileElems / tc), tc};
}

// W[r0:r1, c0:c1] -> buf (r1-r0, c1-c0), serial or over the calling team when `parallel`.
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
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f, A,
              static_cast<int>(lda), B, static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
}

void check_args(const char* where, const void* in, const NF4Weight& w, const void* out,
                int64_t M) {
  MG_CHECK(M >= 0, "[{}] M = {} is negative", where, M);
  MG_CHECK(w.numel() == 0 || M == 0 || (in != nullptr && out != nullptr),
           "[{}] null input or output for M = {}", where, M);
  MG_CHECK(static_cast<int64_t>(w.packed.size()) == (w.numel() + 1) / 2,
           "[{}] weight ({}, {}) has {} packed bytes; it was not built by nf4_quantize or was "
           "loaded for another shape (nf4_validate says more)",
           where, w.rows, w.cols, w.packed.size());
  MG_CHECK(w.rows <= INT32_MAX && w.cols <= INT32_MAX && M <= INT32_MAX,
           "[{}] sizes M={} rows={} cols={} exceed the BLAS int range", where, M, w.rows, w.cols);
}

// With nothing to multiply (K = 0) the output is zero, or left alone when accumulating.
void zero_unless_accumulate(float* out, int64_t count, bool accumulate) {
  if (!accumulate) std::fill(out, out + count, 0.0f);
}

bool use_thread_tiles(NF4MatmulVersion v) { return v != NF4MatmulVersion::SharedTile; }

}  // namespace

void nf4_matmul(const float* X, const NF4Weight& W, float* Y, int64_t M, bool accumulate,
                NF4MatmulVersion version) {
  check_args("nf4_matmul", X, W, Y, M);
  const int64_t rows = W.rows, cols = W.cols;
  if (M == 0 || rows == 0) return;
  if (cols == 0) return zero_unless_accumulate(Y, M * rows, accumulate);
  const std::vector<float> absmax = nf4_absmax(W);
  const Tile t = forward_tile(W);
  const int64_t n_row_tiles = (rows + t.rows - 1) / t.rows;
  const size_t buffer_size = static_cast<size_t>(std::min(rows, t.rows) * std::min(cols, t.cols));

  // One row tile of W = a column strip of Y; the K loop over column chunks accumulates into it.
  auto row_tile = [&](int64_t rt, float* buf, bool parallel_dequant) {
    const int64_t r0 = rt * t.rows, r1 = std::min(rows, r0 + t.rows);
    for (int64_t c0 = 0; c0 < cols; c0 += t.cols) {
      const int64_t c1 = std::min(cols, c0 + t.cols);
      dequantize_tile(W, absmax.data(), r0, r1, c0, c1, buf, parallel_dequant);
      const float beta = (c0 == 0 && !accumulate) ? 0.0f : 1.0f;
      sgemm(/*trans_b=*/true, M, r1 - r0, c1 - c0, X + c0, cols, buf, c1 - c0, beta, Y + r0, rows);
    }
  };

  const bool nested = omp_in_parallel();
  if (use_thread_tiles(version) && !nested && omp_get_max_threads() > 1 && n_row_tiles > 1) {
#pragma omp parallel
    {
      std::vector<float> buf(buffer_size);
#pragma omp for schedule(dynamic, 1)
      for (int64_t rt = 0; rt < n_row_tiles; ++rt) row_tile(rt, buf.data(), false);
    }
  } else {
    std::vector<float> buf(buffer_size);
    for (int64_t rt = 0; rt < n_row_tiles; ++rt) row_tile(rt, buf.data(), !nested);
  }
}

void nf4_matmul_input_grad(const float* dY, const NF4Weight& W, float* dX, int64_t M,
                           bool accumulate, NF4MatmulVersion version) {
  check_args("nf4_matmul_input_grad", dY, W, dX, M);
  const int64_t rows = W.rows, cols = W.cols;
  if (M == 0 || cols == 0) return;
  if (rows == 0) return zero_unless_accumulate(dX, M * cols, accumulate);
  const std::vector<float> absmax = nf4_absmax(W);
  const bool nested = omp_in_parallel();
  const bool thread_tiles = use_thread_tiles(version) && !nested && omp_get_max_threads() > 1;
  const Tile t = input_grad_tile(W, thread_tiles ? omp_get_max_threads() : 1);
  const int64_t n_col_tiles = (cols + t.cols - 1) / t.cols;
  const size_t buffer_size = static_cast<size_t>(std::min(rows, t.rows) * std::min(cols, t.cols));

  // One column tile of W = a column strip of dX; the K loop over row chunks accumulates into it.
  auto col_tile = [&](int64_t ct, float* buf, bool parallel_dequant) {
    const int64_t c0 = ct * t.cols, c1 = std::min(cols, c0 + t.cols);
    for (int64_t r0 = 0; r0 < rows; r0 += t.rows) {
      const int64_t r1 = std::min(rows, r0 + t.rows);
      dequantize_tile(W, absmax.data(), r0, r1, c0, c1, buf, parallel_dequant);
      const float beta = (r0 == 0 && !accumulate) ? 0.0f : 1.0f;
      sgemm(/*trans_b=*/false, M, c1 - c0, r1 - r0, dY + r0, rows, buf, c1 - c0, beta, dX + c0,
            cols);
    }
  };

  if (thread_tiles && n_col_tiles > 1) {
#pragma omp parallel
    {
      std::vector<float> buf(buffer_size);
#pragma omp for schedule(dynamic, 1)
      for (int64_t ct = 0; ct < n_col_tiles; ++ct) col_tile(ct, buf.data(), false);
    }
  } else {
    std::vector<float> buf(buffer_size);
    for (int64_t ct = 0; ct < n_col_tiles; ++ct) col_tile(ct, buf.data(), !nested);
  }
}

}  // namespace mg
