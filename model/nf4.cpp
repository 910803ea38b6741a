// NF4 quantization with double-quantized absmax, bitsandbytes-compatible (see model/nf4.h).
// References followed (bitsandbytes, MIT): functional.py get_4bit_type('nf4'),
// create_dynamic_map(signed=True), quantize_4bit(compress_statistics=True), quantize_blockwise,
// dequantize_4bit; csrc kQuantizeBlockwise (x * (1.0f/absmax), pairs packed high nibble
// first, short blocks padded with 0.0f), dQuantizeNF4 (threshold tree) and dQuantize<0>
// (binary search + midpoint rule for the 8-bit map). QLoRA: Dettmers et al. 2023, §3.
#include "model/nf4.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "autograd/error.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace mg {
namespace {

// bitsandbytes' NF4 values (functional.py get_4bit_type('nf4'), already divided by max |v|).
constexpr std::array<float, 16> kNF4 = {-1.0f,
                                        -0.6961928009986877f,
                                        -0.5250730514526367f,
                                        -0.39491748809814453f,
                                        -0.28444138169288635f,
                                        -0.18477343022823334f,
                                        -0.09105003625154495f,
                                        0.0f,
                                        0.07958029955625534f,
                                        0.16093020141124725f,
                                        0.24611230194568634f,
                                        0.33791524171829224f,
                                        0.44070982933044434f,
                                        0.5626170039176941f,
                                        0.7229568362236023f,
                                        1.0f};

// The decision thresholds of bitsandbytes' dQuantizeNF4 tree, ascending: code c is chosen for
// kThresholds[c-1] < x <= kThresholds[c]. As the tree is a bisection over these, its result
// equals the count of thresholds strictly below x (and 0 for NaN, where every `>` is false).
constexpr std::array<float, 15> kThresholds = {
    -0.8480964004993439f,  -0.6106329262256622f,  -0.4599952697753906f,   -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,   0.2035212516784668f,   0.2920137718319893f,    0.3893125355243683f,
    0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f};

// create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8). For exponent i = 0..6
// it takes the 2^i midpoints of torch.linspace(0.1, 1, 2^i + 1) (float32), scales them by
// 10^(i-6) and adds both signs; then 0 and 1.0; sorted. torch's float32 linspace computes
// start + step*j for j < steps/2 and end - step*(steps-1-j) after; its AVX2/AVX-512 kernels
// contract those into one fma, its scalar (DEFAULT) kernel rounds twice, so the map differs in
// the last bit of 42 entries between the two. We follow the fma form, what every x86 CPU since
// 2013 produces: checked against torch 2.11 (ATEN_CPU_CAPABILITY=avx2 and avx512): 0 of 256
// entries differ; tests/model/test_nf4.cpp holds that dump.
std::array<float, 256> build_dynamic_map() {
  std::vector<float> data;
  data.reserve(256);
  for (int i = 0; i < 7; ++i) {
    const int64_t steps = (int64_t{1} << i) + 1;
    const float start = 0.1f, end = 1.0f;
    const float step = (end - start) / static_cast<float>(steps - 1);
    std::vector<float> bounds(steps);
    for (int64_t j = 0; j < steps; ++j) {
      bounds[j] = j < steps / 2 ? std::fma(step, static_cast<float>(j), start)
                                : std::fma(-step, static_cast<float>(steps - 1 - j), end);
    }
    const float scale = static_cast<float>(std::pow(10.0, i - 6));  // python 10**(i-6) -> f32
    for (int64_t j = 0; j + 1 < steps; ++j) {
      const float mean = (bounds[j] + bounds[j + 1]) / 2.0f;
      data.push_back(scale * mean);
      data.push_back(-scale * mean);
    }
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  MG_CHECK(data.size() == 256, "[dynamic_map_signed] built {} entries, expected 256", data.size());
  std::sort(data.begin(), data.end());
  std::array<float, 256> map{};
  std::copy(data.begin(), data.end(), map.begin());
  return map;
}

// Absmax, NF4 codes and packed bytes of one block of `len` (<= 64) elements starting at an even
// flattened index. An odd `len` (only the last block of an odd-sized matrix) pads its last byte
// with the code of 0.0f * (1/absmax), as kQuantizeBlockwise loads it. False on a non-finite.
bool quantize_block_scalar(const float* x, int64_t len, uint8_t* out, float* absmax_out) {
  float amax = 0.0f;
  bool finite = true;
  for (int64_t j = 0; j < len; ++j) {
    finite &= std::isfinite(x[j]);
    amax = std::max(amax, std::fabs(x[j]));
  }
  const float inv = 1.0f / amax;  // bitsandbytes multiplies by the reciprocal (inf when 0)
  for (int64_t j = 0; j < len; j += 2) {
    const float second = j + 1 < len ? x[j + 1] : 0.0f;
    out[j / 2] = static_cast<uint8_t>((nf4_quantize_value(x[j] * inv) << 4) |
                                      nf4_quantize_value(second * inv));
  }
  *absmax_out = amax;
  return finite;
}

#if defined(__AVX2__)
// A full block of 64 elements: 8 vectors of 8. Same arithmetic as the scalar path (x * inv,
// then strict comparisons with the float thresholds), so the bytes are identical.
bool quantize_block_avx2(const float* x, uint8_t* out, float* absmax_out) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 flt_max = _mm256_set1_ps(std::numeric_limits<float>::max());
  __m256 v[8];
  __m256 amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  for (int k = 0; k < 8; ++k) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    const __m256 a = _mm256_andnot_ps(sign, v[k]);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, flt_max, _CMP_NLE_UQ));  // inf or NaN
    amax = _mm256_max_ps(amax, a);
  }
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  const float amax_s = _mm_cvtss_f32(m);
  *absmax_out = amax_s;
  const __m256 inv = _mm256_set1_ps(1.0f / amax_s);

  // dQuantizeNF4's tree as a 4-level bisection on 8 lanes. k = code >> 1 is built bit by bit;
  // each level's thresholds are an 8-entry table indexed by k (permutevar uses its low 3 bits).
  const __m256 t_mid = _mm256_set1_ps(kThresholds[7]);
  const __m256 t_l2 = _mm256_setr_ps(kThresholds[3], 0, 0, 0, kThresholds[11], 0, 0, 0);
  const __m256 t_l3 =
      _mm256_setr_ps(kThresholds[1], 0, kThresholds[5], 0, kThresholds[9], 0, kThresholds[13], 0);
  const __m256 t_l4 =
      _mm256_setr_ps(kThresholds[0], kThresholds[2], kThresholds[4], kThresholds[6], kThresholds[8],
                     kThresholds[10], kThresholds[12], kThresholds[14]);
  const __m256i four = _mm256_set1_epi32(4), two = _mm256_set1_epi32(2), one = _mm256_set1_epi32(1);
  __m256i code[8];
  for (int k = 0; k < 8; ++k) {
    const __m256 y = _mm256_mul_ps(v[k], inv);
    auto above = [&](__m256 t) { return _mm256_castps_si256(_mm256_cmp_ps(y, t, _CMP_GT_OQ)); };
    __m256i half = _mm256_and_si256(above(t_mid), four);
    half =
        _mm256_add_epi32(half, _mm256_and_si256(above(_mm256_permutevar8x32_ps(t_l2, half)), two));
    half =
        _mm256_add_epi32(half, _mm256_and_si256(above(_mm256_permutevar8x32_ps(t_l3, half)), one));
    // code = 2k + (y > t_l4[k]); the mask is -1 when above, so subtract it.
    code[k] =
        _mm256_sub_epi32(_mm256_slli_epi32(half, 1), above(_mm256_permutevar8x32_ps(t_l4, half)));
  }
  // 32-bit codes -> bytes in element order. packs work per 128-bit lane, so the dwords come
  // out as (0L,1L,2L,3L | 0H,1H,2H,3H) and the permute puts them back in order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256i bytes[2];
  for (int h = 0; h < 2; ++h) {
    const __m256i a = _mm256_packs_epi32(code[4 * h + 0], code[4 * h + 1]);
    const __m256i b = _mm256_packs_epi32(code[4 * h + 2], code[4 * h + 3]);
    bytes[h] = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b), order);
  }
  // Pairs (c[2i], c[2i+1]) as 16-bit words w = c[2i] | c[2i+1] << 8 -> (c[2i] << 4) | c[2i+1].
  const __m256i low_byte = _mm256_set1_epi16(0x00F0);
  __m256i nib[2];
  for (int h = 0; h < 2; ++h) {
    nib[h] = _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi16(bytes[h], 4), low_byte),
                             _mm256_srli_epi16(bytes[h], 8));
  }
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi16(nib[0], nib[1]), 0xD8);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), packed);
  return _mm256_movemask_ps(bad) == 0;
}
#endif

}  // namespace

const std::array<float, 16>& nf4_code_table() { return kNF4; }

const std::array<float, 256>& dynamic_map_signed() {
  static const std::array<float, 256> map = build_dynamic_map();
  return map;
}

uint8_t nf4_quantize_value(float x) {
  int c = 0;
  for (float t : kThresholds) c += x > t;
  return static_cast<uint8_t>(c);
}

uint8_t dynamic_map_quantize_value(const std::array<float, 256>& map, float x) {
  // bitsandbytes dQuantize<0>: bisect from the middle (pivot 127) in steps 64..1, keeping the
  // entries on either side (lower/upper, starting from -1 and 1), then pick the nearer
  // neighbour by comparing with the float midpoint (ties stay on the pivot).
  // Written with selects rather than branches: the compiler emits cmov, and the quantizer of
  // a 3B model runs this 50M times on unpredictable data.
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = map[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    const bool above = x > val;
    lower_pivot = above ? pivot : lower_pivot;
    lower = above ? val : lower;
    upper_pivot = above ? upper_pivot : pivot;
    upper = above ? upper : val;
    pivot += above ? i : -i;
    val = map[pivot];
  }
  if (upper_pivot == 255) upper = map[upper_pivot];
  if (lower_pivot == 0) lower = map[lower_pivot];
  if (x > val) {
    const float midpoint = (upper + val) * 0.5f;
    return static_cast<uint8_t>(x > midpoint ? upper_pivot : pivot);
  }
  const float midpoint = (lower + val) * 0.5f;
  return static_cast<uint8_t>(x < midpoint ? lower_pivot : pivot);
}

int64_t NF4Weight::bytes() const {
  return static_cast<int64_t>(packed.size() + absmax_codes.size() +
                              sizeof(float) * absmax_scales.size() + sizeof(absmax_offset));
}

int64_t nf4_bytes(int64_t rows, int64_t cols) {
  NF4Weight shape_only;  // n_blocks() and n_absmax_blocks() need only the shape
  shape_only.rows = rows;
  shape_only.cols = cols;
  return (shape_only.numel() + 1) / 2 + shape_only.n_blocks() +
         static_cast<int64_t>(sizeof(float)) * shape_only.n_absmax_blocks() + static_cast<int64_t>(sizeof(float));
}

double NF4Weight::bits_per_param() const {
  return numel() > 0 ? 8.0 * static_cast<double>(bytes()) / static_cast<double>(numel()) : 0.0;
}

NF4Weight nf4_quantize(const float* W, int64_t rows, int64_t cols) {
  MG_CHECK(rows >= 0 && cols >= 0, "[nf4_quantize] shape ({}, {}) is negative", rows, cols);
  MG_CHECK(W != nullptr || rows * cols == 0, "[nf4_quantize] W is null for shape ({}, {})", rows,
           cols);
  NF4Weight q;
  q.rows = rows;
  q.cols = cols;
  const int64_t n = q.numel(), n_blocks = q.n_blocks();
  q.packed.assign(static_cast<size_t>((n + 1) / 2), 0);
  std::vector<float> absmax(static_cast<size_t>(n_blocks));

  // 1. Per block of 64: absmax and the packed NF4 codes.
  int non_finite = 0;
// Dynamic chunks of 16K elements: on a shared machine a descheduled thread does not hold the
// other at a static split's barrier. Each block is independent, so results do not change.
#pragma omp parallel for schedule(dynamic, 256) reduction(| : non_finite)
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t begin = b * kNF4BlockSize, len = std::min(kNF4BlockSize, n - begin);
    uint8_t* out = q.packed.data() + begin / 2;
    bool ok;
#if defined(__AVX2__)
    if (len == kNF4BlockSize)
      ok = quantize_block_avx2(W + begin, out, &absmax[b]);
    else
#endif
      ok = quantize_block_scalar(W + begin, len, out, &absmax[b]);
    non_finite |= ok ? 0 : 1;
  }
  if (non_finite) {
    for (int64_t i = 0; i < n; ++i) {
      MG_CHECK(std::isfinite(W[i]),
               "[nf4_quantize] W({}, {}) of the ({}, {}) matrix is {}; NF4 needs finite weights: "
               "fix or re-export the checkpoint",
               i / cols, i % cols, rows, cols, W[i]);
    }
  }

  // 2. Double quantization: offset = mean, then 8-bit dynamic-map codes of (absmax - offset)
  // per block of 256 with a float scale each. The mean is summed in double in index order,
  // so it does not depend on the thread count (torch sums on the GPU in its own order).
  double sum = 0.0;
  for (float a : absmax) sum += a;
  q.absmax_offset = n_blocks > 0 ? static_cast<float>(sum / static_cast<double>(n_blocks)) : 0.0f;
  const int64_t n_scales = q.n_absmax_blocks();
  q.absmax_codes.assign(static_cast<size_t>(n_blocks), 0);
  q.absmax_scales.assign(static_cast<size_t>(n_scales), 0.0f);
  const std::array<float, 256>& map = dynamic_map_signed();
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t s = 0; s < n_scales; ++s) {
    const int64_t begin = s * kAbsmaxBlockSize, end = std::min(n_blocks, begin + kAbsmaxBlockSize);
    float centered[kAbsmaxBlockSize];
    float scale = 0.0f;
    for (int64_t i = begin; i < end; ++i) {
      centered[i - begin] = absmax[i] - q.absmax_offset;
      scale = std::max(scale, std::fabs(centered[i - begin]));
    }
    q.absmax_scales[s] = scale;
    const float inv = 1.0f / scale;
    for (int64_t i = begin; i < end; ++i)
      q.absmax_codes[i] = dynamic_map_quantize_value(map, centered[i - begin] * inv);
  }
  return q;
}

void nf4_validate(const NF4Weight& w, const char* what) {
  MG_CHECK(w.rows >= 0 && w.cols >= 0, "[{}] shape ({}, {}) is negative", what, w.rows, w.cols);
  const int64_t n = w.numel();
  MG_CHECK(static_cast<int64_t>(w.packed.size()) == (n + 1) / 2,
           "[{}] packed has {} bytes but shape ({}, {}) needs {}; the file is truncated or was "
           "written for another shape",
           what, w.packed.size(), w.rows, w.cols, (n + 1) / 2);
  MG_CHECK(static_cast<int64_t>(w.absmax_codes.size()) == w.n_blocks(),
           "[{}] absmax_codes has {} entries but shape ({}, {}) has {} blocks of {}", what,
           w.absmax_codes.size(), w.rows, w.cols, w.n_blocks(), kNF4BlockSize);
  MG_CHECK(static_cast<int64_t>(w.absmax_scales.size()) == w.n_absmax_blocks(),
           "[{}] absmax_scales has {} entries, expected {} (one per {} absmax values)", what,
           w.absmax_scales.size(), w.n_absmax_blocks(), kAbsmaxBlockSize);
  MG_CHECK(std::isfinite(w.absmax_offset), "[{}] absmax_offset is {}", what, w.absmax_offset);
}

void nf4_absmax(const NF4Weight& w, float* absmax) {
  const std::array<float, 256>& map = dynamic_map_signed();
  const int64_t n_blocks = w.n_blocks();
  const float offset = w.absmax_offset;
#pragma omp parallel for schedule(static) if (n_blocks > (1 << 16))
  for (int64_t i = 0; i < n_blocks; ++i) {
    // Two roundings, product then sum, as bitsandbytes (a kernel, then a torch add). The empty
    // asm makes the product opaque so -ffp-contract cannot fuse them into one fma (GCC even
    // narrows a double-precision product back to float and fuses that).
    float product = map[w.absmax_codes[i]] * w.absmax_scales[i / kAbsmaxBlockSize];
    asm("" : "+x"(product));
    absmax[i] = product + offset;
  }
}

std::vector<float> nf4_absmax(const NF4Weight& w) {
  std::vector<float> absmax(static_cast<size_t>(w.n_blocks()));
  nf4_absmax(w, absmax.data());
  return absmax;
}

void nf4_dequantize_range(const NF4Weight& w, const float* absmax, int64_t begin, int64_t end,
                          float* out) {
  const uint8_t* packed = w.packed.data();
  auto code_at = [packed](int64_t i) {
    const uint8_t byte = packed[i / 2];
    return (i & 1) ? (byte & 0x0F) : (byte >> 4);
  };
#if defined(__AVX2__)
  const __m256 lut_lo = _mm256_loadu_ps(kNF4.data()), lut_hi = _mm256_loadu_ps(kNF4.data() + 8);
  const __m128i nibble = _mm_set1_epi8(0x0F);
#endif
  int64_t i = begin;
  while (i < end) {
    const int64_t block = i / kNF4BlockSize;
    const int64_t block_end = std::min(end, (block + 1) * kNF4BlockSize);
    const float a = absmax[block];
    if (i & 1) {  // odd start: its low nibble alone, then the pairs are byte-aligned
      *out++ = kNF4[code_at(i)] * a;
      ++i;
    }
#if defined(__AVX2__)
    const __m256 va = _mm256_set1_ps(a);
    for (; i + 16 <= block_end; i += 16, out += 16) {
      // 8 bytes -> 16 codes in element order: high nibble first, then low.
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed + i / 2));
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), nibble);
      const __m128i lo = _mm_and_si128(bytes, nibble);
      const __m128i codes = _mm_unpacklo_epi8(hi, lo);
      for (int h = 0; h < 2; ++h) {
        const __m256i c = _mm256_cvtepu8_epi32(h == 0 ? codes : _mm_srli_si128(codes, 8));
        // 16-entry lookup = two 8-entry permutes, chosen by bit 3 moved into the sign bit.
        const __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(c, 28));
        const __m256 v = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut_lo, c),
                                          _mm256_permutevar8x32_ps(lut_hi, c), sel);
        _mm256_storeu_ps(out + 8 * h, _mm256_mul_ps(v, va));
      }
    }
#endif
    for (; i < block_end; ++i) *out++ = kNF4[code_at(i)] * a;
  }
}

void nf4_dequantize_rows(const NF4Weight& w, int64_t row_begin, int64_t row_end, float* out) {
  MG_CHECK(0 <= row_begin && row_begin <= row_end && row_end <= w.rows,
           "[nf4_dequantize_rows] rows [{}, {}) are outside the ({}, {}) matrix", row_begin,
           row_end, w.rows, w.cols);
  const std::vector<float> absmax = nf4_absmax(w);
  const int64_t begin = row_begin * w.cols, end = row_end * w.cols;
  // Chunks of whole blocks, so the threads write disjoint parts of out.
  const int64_t chunk = 256 * kNF4BlockSize;
  const int64_t n_chunks = (end - begin + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic, 1) if (end - begin > (1 << 16))
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t b = begin + c * chunk, e = std::min(end, b + chunk);
    nf4_dequantize_range(w, absmax.data(), b, e, out + (b - begin));
  }
}

void nf4_dequantize(const NF4Weight& w, float* out) { nf4_dequantize_rows(w, 0, w.rows, out); }

std::vector<float> nf4_dequantize(const NF4Weight& w) {
  std::vector<float> out(static_cast<size_t>(w.numel()));
  nf4_dequantize(w, out.data());
  return out;
}

NF4ErrorStats nf4_error_stats(const float* W, const NF4Weight& q) {
  const std::vector<float> absmax = nf4_absmax(q);
  const int64_t n = q.numel();
  const int64_t chunk = 64 * kNF4BlockSize;
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  double max_err = 0.0, sum_err2 = 0.0, sum_w2 = 0.0;
#pragma omp parallel reduction(max : max_err) reduction(+ : sum_err2, sum_w2)
  {
    std::vector<float> buf(static_cast<size_t>(chunk));  // one chunk at a time, never all of W
#pragma omp for schedule(static)
    for (int64_t c = 0; c < n_chunks; ++c) {
      const int64_t b = c * chunk, e = std::min(n, b + chunk);
      nf4_dequantize_range(q, absmax.data(), b, e, buf.data());
      for (int64_t i = b; i < e; ++i) {
        const double d = static_cast<double>(W[i]) - static_cast<double>(buf[i - b]);
        max_err = std::max(max_err, std::fabs(d));
        sum_err2 += d * d;
        sum_w2 += static_cast<double>(W[i]) * static_cast<double>(W[i]);
      }
    }
  }
  NF4ErrorStats s;
  s.count = n;
  s.max_abs_error = max_err;
  s.rms_error = n > 0 ? std::sqrt(sum_err2 / static_cast<double>(n)) : 0.0;
  s.rms_weight = n > 0 ? std::sqrt(sum_w2 / static_cast<double>(n)) : 0.0;
  return s;
}

}  // namespace mg
