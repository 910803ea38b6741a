#pragma once
// NF4 weights with double-quantized block scales, bitsandbytes-compatible (design.md §5), and
// the fused dequantize-matmuls QLoRA runs on them.
//
// Layout of one quantized matrix W (rows = out, cols = in), flattened row-major, n = rows*cols:
//   packed        (n+1)/2 bytes: element 2i in the HIGH nibble of byte i, 2i+1 in the low one
//                 (bitsandbytes kQuantizeBlockwise<NF4>); an odd tail gets the code of 0.0.
//   absmax        one float per block of 64 consecutive elements (the last block may be short),
//                 not stored: double-quantized (QLoRA paper §3 "Double Quantization"):
//   absmax_codes  (n_blocks) uint8 codes of (absmax - absmax_offset) in the signed 8-bit
//                 dynamic map, per block of 256 absmax values
//   absmax_scales (ceil(n_blocks/256)) float: max |absmax - offset| of each 256-block
//   absmax_offset mean of the absmax values
// A block's absmax is rebuilt as dynamic_map[code] * scale + offset (two float roundings, as
// bitsandbytes' dequantize_blockwise then `absmax += offset`), an element as nf4[code]*absmax.
// This is exactly what bitsandbytes.functional.quantize_4bit(quant_type="nf4", blocksize=64,
// compress_statistics=True) stores: packed = its uint8 data, absmax_codes = state.absmax,
// absmax_scales = state.state2.absmax, absmax_offset = state.offset.
//
// Legend: M rows of activations (B*T), rows/cols of W as above (out, in).
#include <array>
#include <cstdint>
#include <vector>

namespace mg {

constexpr int64_t kNF4BlockSize = 64;      // elements per absmax (bitsandbytes blocksize=64)
constexpr int64_t kAbsmaxBlockSize = 256;  // absmax values per second-level scale

struct NF4Weight {
  int64_t rows = 0, cols = 0;         // W [rows, cols] = PyTorch [out, in]
  std::vector<uint8_t> packed;        // ((rows*cols+1)/2) two 4-bit codes per byte
  std::vector<uint8_t> absmax_codes;  // (n_blocks) dynamic-map codes of absmax - offset
  std::vector<float> absmax_scales;   // (n_absmax_blocks) per-256-block scale
  float absmax_offset = 0.0f;         // mean of the block absmax values

  int64_t numel() const { return rows * cols; }
  int64_t n_blocks() const { return (numel() + kNF4BlockSize - 1) / kNF4BlockSize; }
  int64_t n_absmax_blocks() const { return (n_blocks() + kAbsmaxBlockSize - 1) / kAbsmaxBlockSize; }
  // Bytes this weight takes in memory / on disk: codes + absmax codes + scales + offset.
  int64_t bytes() const;
  // 8 * bytes() / numel(): 4 + 8/64 + 32/(64*256) = 4.127 for large matrices.
  double bits_per_param() const;
};

// bytes() of an NF4 weight [rows, cols], from its shape alone (magellan info sizes models
// without quantizing them).
int64_t nf4_bytes(int64_t rows, int64_t cols);

// The 16 NF4 values, ascending (bitsandbytes get_4bit_type('nf4')): code c means nf4[c]*absmax.
const std::array<float, 16>& nf4_code_table();
// The 256-entry signed 8-bit dynamic map (bitsandbytes create_dynamic_map(signed=True)),
// ascending, in float32 exactly as torch computes it on an AVX2/AVX-512 CPU.
const std::array<float, 256>& dynamic_map_signed();

// Nearest NF4 code of a value already divided by its block absmax (bitsandbytes' dQuantizeNF4
// threshold tree: x above the midpoint between two codes goes up; NaN gives code 0).
uint8_t nf4_quantize_value(float x);
// Nearest code of x in an ascending 256-entry map (bitsandbytes' dQuantize<0> binary search).
uint8_t dynamic_map_quantize_value(const std::array<float, 256>& map, float x);

// Quantizes W (rows, cols) row-major. Throws mg::Error on a non-finite element (named by row
// and column) or a negative shape. Threaded with OpenMP.
NF4Weight nf4_quantize(const float* W, int64_t rows, int64_t cols);

// Checks the sizes of a weight read from a file; throws with what is off. `what` names it.
void nf4_validate(const NF4Weight& w, const char* what = "NF4Weight");

// Rebuilds the per-block absmax from the double quantization: absmax (n_blocks).
void nf4_absmax(const NF4Weight& w, float* absmax);
std::vector<float> nf4_absmax(const NF4Weight& w);

// Dequantizes elements [begin, end) of the flattened W into out (end-begin), given the absmax
// from nf4_absmax (so a caller dequantizing tile after tile rebuilds them once). Serial.
void nf4_dequantize_range(const NF4Weight& w, const float* absmax, int64_t begin, int64_t end,
                          float* out);
// Whole matrix: out (rows, cols). Rows [row_begin, row_end): out (row_end-row_begin, cols).
void nf4_dequantize(const NF4Weight& w, float* out);
void nf4_dequantize_rows(const NF4Weight& w, int64_t row_begin, int64_t row_end, float* out);
std::vector<float> nf4_dequantize(const NF4Weight& w);

// How far the NF4 weight is from the original W (rows, cols), for `magellan quantize`.
struct NF4ErrorStats {
  double max_abs_error = 0;  // max |W - dequant(W)|
  double rms_error = 0;      // sqrt(mean (W - dequant(W))^2)
  double rms_weight = 0;     // sqrt(mean W^2), to read rms_error against
  int64_t count = 0;
};
NF4ErrorStats nf4_error_stats(const float* W, const NF4Weight& q);

// ---------------------------------------------------------------------------------------------
// Fused matmuls (model/nf4_matmul.cpp). W is dequantized tile by tile into a buffer of about
// kNF4TileElems floats per thread and multiplied with cblas_sgemm (or, for a few rows of X,
// row by row in L1 with no BLAS); the full float32 W never exists. Results are float32 sums
// in BLAS order, not bit-identical across versions or thread counts (rel. error ~1e-6).
// Called outside an OpenMP parallel region they use all OpenMP threads; inside one they run
// serially on the calling thread (OpenBLAS does the same), so they never nest. Inputs and
// outputs are dense row-major and must not overlap.
constexpr int64_t kNF4TileElems = 1 << 19;  // 2 MiB of float32 per thread

// Kernel versions, kept so bench/bench_nf4.cpp can validate and time each (style.md):
//   SharedTile: tiles in turn; all threads dequantize a tile, then one threaded sgemm on it.
//   ThreadTile: each thread owns whole output tiles: dequantizes into its own buffer and runs
//               a serial sgemm, so dequantization and multiplication overlap across threads.
//   Direct:     no BLAS: W rows are dequantized into an L1 buffer and combined with the few
//               rows of X or dY (decoding), so W is read once at its 4-bit size.
//   Auto: Direct for M <= kNF4DirectMaxM, else ThreadTile: the measured best (bench_nf4,
//         W [8192, 2048], 2 threads, EPYC Zen 3: Direct is 2.7x ThreadTile at M = 1, 1.5x
//         (forward) and even (input grad) at M = 4, even (forward) and 0.75x (input grad) at
//         M = 8, 0.5-0.65x at M = 16; SharedTile falls far behind ThreadTile when the cores
//         are shared with other processes).
enum class NF4MatmulVersion { Auto, SharedTile, ThreadTile, Direct };
constexpr int64_t kNF4DirectMaxM = 4;

// Y (M, rows) = X (M, cols) W^T, or Y += X W^T when accumulate.
void nf4_matmul(const float* X, const NF4Weight& W, float* Y, int64_t M, bool accumulate = false,
                NF4MatmulVersion version = NF4MatmulVersion::Auto);
// dX (M, cols) = dY (M, rows) W, or dX += dY W when accumulate. W gets no gradient (frozen).
void nf4_matmul_input_grad(const float* dY, const NF4Weight& W, float* dX, int64_t M,
                           bool accumulate = false,
                           NF4MatmulVersion version = NF4MatmulVersion::Auto);

}  // namespace mg
