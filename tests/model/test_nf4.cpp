// NF4 quantization and fused matmuls (model/nf4.h) against bitsandbytes' procedure written
// out plainly here: its NF4 table and dQuantizeNF4 tree, create_dynamic_map's values dumped by
// torch, kQuantizeBlockwise (x * (1/absmax), high nibble first), quantize_4bit's double
// quantization (mean offset, blocksize 256) and dQuantize<0>; the matmuls against
// dequantize-then-naive-GEMM in double.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "autograd/error.h"
#include "model/nf4.h"

namespace {

// bitsandbytes functional.py get_4bit_type('nf4').
const float kRefNF4[16] = {-1.0f,
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

// bitsandbytes.functional.create_dynamic_map(signed=True) as torch 2.11 computes it on an
// AVX2 / AVX-512 CPU (ATEN_CPU_CAPABILITY=avx2 and avx512 gave the same), float32 bit patterns.
const uint32_t kTorchDynamicMapBits[256] = {
    0xbf7e3333u, 0xbf7a999au, 0xbf770000u, 0xbf736666u, 0xbf6fcccdu, 0xbf6c3333u, 0xbf68999au,
    0xbf650000u, 0xbf616666u, 0xbf5dcccdu, 0xbf5a3333u, 0xbf56999au, 0xbf530000u, 0xbf4f6666u,
    0xbf4bcccdu, 0xbf483333u, 0xbf44999au, 0xbf410000u, 0xbf3d6666u, 0xbf39cccdu, 0xbf363334u,
    0xbf32999au, 0xbf2f0000u, 0xbf2b6666u, 0xbf27cccdu, 0xbf243334u, 0xbf20999au, 0xbf1d0000u,
    0xbf196666u, 0xbf15cccdu, 0xbf123334u, 0xbf0e999au, 0xbf0b0000u, 0xbf076666u, 0xbf03ccccu,
    0xbf003333u, 0xbef93332u, 0xbef20000u, 0xbeeaccccu, 0xbee3999au, 0xbedc6666u, 0xbed53333u,
    0xbece0000u, 0xbec6ccccu, 0xbebf999au, 0xbeb86666u, 0xbeb13333u, 0xbeaa0000u, 0xbea2ccccu,
    0xbe9b999au, 0xbe946666u, 0xbe8d3334u, 0xbe860000u, 0xbe7d9999u, 0xbe6f3333u, 0xbe60cccdu,
    0xbe526666u, 0xbe440000u, 0xbe35999au, 0xbe273333u, 0xbe18cccdu, 0xbe0a6666u, 0xbdf80000u,
    0xbddb3334u, 0xbdc9eb85u, 0xbdc428f7u, 0xbdbe6667u, 0xbdb8a3d7u, 0xbdb2e148u, 0xbdad1eb8u,
    0xbda75c2au, 0xbda1999au, 0xbd9bd70au, 0xbd96147bu, 0xbd9051ebu, 0xbd8a8f5du, 0xbd84cccdu,
    0xbd7e147bu, 0xbd728f5du, 0xbd670a3du, 0xbd5b851fu, 0xbd500000u, 0xbd447ae1u, 0xbd38f5c3u,
    0xbd2d70a3u, 0xbd21eb85u, 0xbd166667u, 0xbd0ae148u, 0xbcfeb852u, 0xbce7ae15u, 0xbcd0a3d7u,
    0xbcb9999au, 0xbca28f5du, 0xbc8b851fu, 0xbc68f5c3u, 0xbc3ae148u, 0xbc1f3b64u, 0xbc160418u,
    0xbc0ccccdu, 0xbc039581u, 0xbbf4bc6au, 0xbbe24dd3u, 0xbbcfdf3bu, 0xbbbd70a4u, 0xbbab020du,
    0xbb989374u, 0xbb8624ddu, 0xbb676c8au, 0xbb428f5cu, 0xbb1db22du, 0xbaf1a9fcu, 0xbaa7ef9du,
    0xba7765ffu, 0xba59e83eu, 0xba3c6a80u, 0xba1eecc1u, 0xba016f01u, 0xb9c7e283u, 0xb98ce705u,
    0xb923d70bu, 0xb8ba1f4bu, 0xb88aefb3u, 0xb8378034u, 0xb7b24206u, 0xb70205ffu, 0xb65a1a94u,
    0xb513a3b7u, 0x00000000u, 0x3513a3b7u, 0x365a1a94u, 0x370205ffu, 0x37b24206u, 0x38378034u,
    0x388aefb3u, 0x38ba1f4bu, 0x3923d70bu, 0x398ce705u, 0x39c7e283u, 0x3a016f01u, 0x3a1eecc1u,
    0x3a3c6a80u, 0x3a59e83eu, 0x3a7765ffu, 0x3aa7ef9du, 0x3af1a9fcu, 0x3b1db22du, 0x3b428f5cu,
    0x3b676c8au, 0x3b8624ddu, 0x3b989374u, 0x3bab020du, 0x3bbd70a4u, 0x3bcfdf3bu, 0x3be24dd3u,
    0x3bf4bc6au, 0x3c039581u, 0x3c0ccccdu, 0x3c160418u, 0x3c1f3b64u, 0x3c3ae148u, 0x3c68f5c3u,
    0x3c8b851fu, 0x3ca28f5du, 0x3cb9999au, 0x3cd0a3d7u, 0x3ce7ae15u, 0x3cfeb852u, 0x3d0ae148u,
    0x3d166667u, 0x3d21eb85u, 0x3d2d70a3u, 0x3d38f5c3u, 0x3d447ae1u, 0x3d500000u, 0x3d5b851fu,
    0x3d670a3du, 0x3d728f5du, 0x3d7e147bu, 0x3d84cccdu, 0x3d8a8f5du, 0x3d9051ebu, 0x3d96147bu,
    0x3d9bd70au, 0x3da1999au, 0x3da75c2au, 0x3dad1eb8u, 0x3db2e148u, 0x3db8a3d7u, 0x3dbe6667u,
    0x3dc428f7u, 0x3dc9eb85u, 0x3ddb3334u, 0x3df80000u, 0x3e0a6666u, 0x3e18cccdu, 0x3e273333u,
    0x3e35999au, 0x3e440000u, 0x3e526666u, 0x3e60cccdu, 0x3e6f3333u, 0x3e7d9999u, 0x3e860000u,
    0x3e8d3334u, 0x3e946666u, 0x3e9b999au, 0x3ea2ccccu, 0x3eaa0000u, 0x3eb13333u, 0x3eb86666u,
    0x3ebf999au, 0x3ec6ccccu, 0x3ece0000u, 0x3ed53333u, 0x3edc6666u, 0x3ee3999au, 0x3eeaccccu,
    0x3ef20000u, 0x3ef93332u, 0x3f003333u, 0x3f03ccccu, 0x3f076666u, 0x3f0b0000u, 0x3f0e999au,
    0x3f123334u, 0x3f15cccdu, 0x3f196666u, 0x3f1d0000u, 0x3f20999au, 0x3f243334u, 0x3f27cccdu,
    0x3f2b6666u, 0x3f2f0000u, 0x3f32999au, 0x3f363334u, 0x3f39cccdu, 0x3f3d6666u, 0x3f410000u,
    0x3f44999au, 0x3f483333u, 0x3f4bcccdu, 0x3f4f6666u, 0x3f530000u, 0x3f56999au, 0x3f5a3333u,
    0x3f5dcccdu, 0x3f616666u, 0x3f650000u, 0x3f68999au, 0x3f6c3333u, 0x3f6fcccdu, 0x3f736666u,
    0x3f770000u, 0x3f7a999au, 0x3f7e3333u, 0x3f800000u};

// csrc dQuantizeNF4, transcribed as the tree it is.
uint8_t ref_quantize_nf4(float x) {
  if (x > 0.03979014977812767f) {
    if (x > 0.3893125355243683f) {
      if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 0b1111 : 0b1110;
      return x > 0.5016634166240692f ? 0b1101 : 0b1100;
    }
    if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 0b1011 : 0b1010;
    return x > 0.1202552504837513f ? 0b1001 : 0b1000;
  }
  if (x > -0.33967943489551544f) {
    if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 0b0111 : 0b0110;
    return x > -0.23460740596055984f ? 0b0101 : 0b0100;
  }
  if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 0b0011 : 0b0010;
  return x > -0.8480964004993439f ? 0b0001 : 0b0000;
}

std::array<float, 256> torch_dynamic_map() {
  std::array<float, 256> map{};
  for (int i = 0; i < 256; ++i) map[i] = std::bit_cast<float>(kTorchDynamicMapBits[i]);
  return map;
}

// csrc dQuantize<0> (not stochastic), transcribed.
uint8_t ref_quantize_dynamic(const std::array<float, 256>& code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f, val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) return (x > (upper + val) * 0.5f) ? upper_pivot : pivot;
  return (x < (lower + val) * 0.5f) ? lower_pivot : pivot;
}

struct RefQuant {
  std::vector<uint8_t> packed, absmax_codes;
  std::vector<float> absmax, absmax_scales;  // absmax: the exact per-block values
  float offset = 0;
};

// quantize_4bit(A, blocksize=64, compress_statistics=True, quant_type='nf4'), one element at
// a time.
RefQuant ref_quantize(const std::vector<float>& a) {
  const int64_t n = static_cast<int64_t>(a.size());
  RefQuant r;
  r.packed.assign((n + 1) / 2, 0);
  for (int64_t start = 0; start < n; start += 64) {
    const int64_t valid = std::min<int64_t>(64, n - start);
    float amax = 0.0f;
    for (int64_t j = 0; j < valid; ++j) amax = std::max(amax, std::fabs(a[start + j]));
    r.absmax.push_back(amax);
    const float inv = 1.0f / amax;
    for (int64_t j = 0; j < 64; j += 2) {
      if (j >= valid) break;
      const float v0 = a[start + j];
      const float v1 = j + 1 < valid ? a[start + j + 1] : 0.0f;  // CUB loads 0.0f past the end
      r.packed[(start + j) / 2] =
          static_cast<uint8_t>((ref_quantize_nf4(v0 * inv) << 4) | ref_quantize_nf4(v1 * inv));
    }
  }
  double sum = 0.0;
  for (float v : r.absmax) sum += v;
  r.offset = r.absmax.empty() ? 0.0f : static_cast<float>(sum / r.absmax.size());
  const std::array<float, 256> code = torch_dynamic_map();
  for (size_t start = 0; start < r.absmax.size(); start += 256) {
    const size_t end = std::min(r.absmax.size(), start + 256);
    float scale = 0.0f;
    for (size_t i = start; i < end; ++i) scale = std::max(scale, std::fabs(r.absmax[i] - r.offset));
    r.absmax_scales.push_back(scale);
    const float inv = 1.0f / scale;
    for (size_t i = start; i < end; ++i)
      r.absmax_codes.push_back(ref_quantize_dynamic(code, (r.absmax[i] - r.offset) * inv));
  }
  return r;
}

// Weights as in a trained layer: normal, with a per-row scale spread over 100x, an all-zero
// block, one outlier per 1000 elements.
std::vector<float> random_weights(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> log_scale(-2.0f, 0.0f);
  std::vector<float> w(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float s = std::pow(10.0f, log_scale(rng));
    for (int64_t c = 0; c < cols; ++c) w[r * cols + c] = s * normal(rng);
  }
  for (size_t i = 0; i < w.size(); i += 997) w[i] *= 20.0f;
  if (w.size() >= 192) std::fill(w.begin() + 64, w.begin() + 128, 0.0f);
  return w;
}

struct Shape {
  int64_t rows, cols;
};
// Full blocks, a short last block, odd element counts, one block, >256 blocks with a short
// last group of 256.
const Shape kShapes[] = {{1, 64}, {3, 64}, {5, 100}, {7, 9}, {33, 65}, {300, 257}, {64, 4096}};

TEST(NF4, CodeTableIsBitsandbytes) {
  const auto& t = mg::nf4_code_table();
  for (int c = 0; c < 16; ++c) EXPECT_EQ(t[c], kRefNF4[c]) << "code " << c;
}

TEST(NF4, DynamicMapEqualsTorchDump) {
  const auto& map = mg::dynamic_map_signed();
  int diffs = 0;
  for (int i = 0; i < 256; ++i) {
    if (std::bit_cast<uint32_t>(map[i]) != kTorchDynamicMapBits[i]) {
      ++diffs;
      ADD_FAILURE() << "entry " << i << ": " << map[i] << " vs torch "
                    << std::bit_cast<float>(kTorchDynamicMapBits[i]);
    }
  }
  EXPECT_EQ(diffs, 0);
  // The published formula's landmarks: zero in the middle, 1.0 on top, -0.99296875 at the bottom.
  EXPECT_EQ(map[127], 0.0f);
  EXPECT_EQ(map[255], 1.0f);
  EXPECT_EQ(map[0], -0.99296875f);
}

TEST(NF4, ValueQuantizersMatchTreeAndNearestCode) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const auto map = torch_dynamic_map();
  for (int i = 0; i < 50000; ++i) {
    const float x = u(rng);
    const uint8_t c = mg::nf4_quantize_value(x);
    ASSERT_EQ(c, ref_quantize_nf4(x)) << "x = " << x;
    // Independent check: the tree picks a nearest NF4 value (away from exact midpoints).
    for (int k = 0; k < 16; ++k)
      ASSERT_LE(std::fabs(double(x) - kRefNF4[c]), std::fabs(double(x) - kRefNF4[k]) + 1e-6);
    const uint8_t d = mg::dynamic_map_quantize_value(mg::dynamic_map_signed(), x);
    ASSERT_EQ(d, ref_quantize_dynamic(map, x)) << "x = " << x;
    for (int k = 0; k < 256; ++k)
      ASSERT_LE(std::fabs(double(x) - map[d]), std::fabs(double(x) - map[k]) + 1e-7);
  }
  EXPECT_EQ(mg::nf4_quantize_value(std::nanf("")), 0);  // 0 * (1/0): an all-zero block
  EXPECT_EQ(mg::nf4_quantize_value(0.0f), 7);
  EXPECT_EQ(mg::nf4_quantize_value(1.0f), 15);
  EXPECT_EQ(mg::nf4_quantize_value(-1.0f), 0);
  EXPECT_EQ(mg::dynamic_map_quantize_value(mg::dynamic_map_signed(), 1.0f), 255);
  EXPECT_EQ(mg::dynamic_map_quantize_value(mg::dynamic_map_signed(), std::nanf("")), 0);
}

TEST(NF4, QuantizeIsByteIdenticalToBitsandbytesProcedure) {
  uint32_t seed = 1;
  for (const Shape& s : kShapes) {
    const std::vector<float> w = random_weights(s.rows, s.cols, seed++);
    const RefQuant ref = ref_quantize(w);
    const mg::NF4Weight q = mg::nf4_quantize(w.data(), s.rows, s.cols);
    SCOPED_TRACE(std::to_string(s.rows) + "x" + std::to_string(s.cols));
    mg::nf4_validate(q);
    ASSERT_EQ(q.packed.size(), ref.packed.size());
    int64_t bad = 0;
    for (size_t i = 0; i < ref.packed.size(); ++i) bad += q.packed[i] != ref.packed[i];
    EXPECT_EQ(bad, 0) << "packed bytes differing";
    ASSERT_EQ(q.absmax_codes.size(), ref.absmax_codes.size());
    bad = 0;
    for (size_t i = 0; i < ref.absmax_codes.size(); ++i)
      bad += q.absmax_codes[i] != ref.absmax_codes[i];
    EXPECT_EQ(bad, 0) << "absmax codes differing";
    ASSERT_EQ(q.absmax_scales.size(), ref.absmax_scales.size());
    for (size_t i = 0; i < ref.absmax_scales.size(); ++i)
      EXPECT_EQ(q.absmax_scales[i], ref.absmax_scales[i]) << "scale " << i;
    EXPECT_EQ(q.absmax_offset, ref.offset);
  }
}

TEST(NF4, QuantizeDoesNotDependOnThreadCount) {
  const std::vector<float> w = random_weights(300, 257, 11);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const mg::NF4Weight a = mg::nf4_quantize(w.data(), 300, 257);
  omp_set_num_threads(2);
  const mg::NF4Weight b = mg::nf4_quantize(w.data(), 300, 257);
  omp_set_num_threads(saved);
  EXPECT_EQ(a.packed, b.packed);
  EXPECT_EQ(a.absmax_codes, b.absmax_codes);
  EXPECT_EQ(a.absmax_scales, b.absmax_scales);
  EXPECT_EQ(a.absmax_offset, b.absmax_offset);
}

TEST(NF4, DequantizeMatchesReferenceAndErrorBound) {
  // Largest gap between neighbouring NF4 values: -1 .. -0.6961928.
  double max_gap = 0;
  for (int c = 0; c < 15; ++c) max_gap = std::max(max_gap, double(kRefNF4[c + 1]) - kRefNF4[c]);
  // Largest gap of the dynamic map inside [-1, 1] (0.99296875 .. 1) bounds the absmax error.
  const auto map = torch_dynamic_map();
  double map_gap = 1.0 + map[0];  // a centred absmax of -1 lands on map[0]
  for (int i = 0; i < 255; ++i) map_gap = std::max(map_gap, double(map[i + 1]) - map[i]);
  uint32_t seed = 100;
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(std::to_string(s.rows) + "x" + std::to_string(s.cols));
    const std::vector<float> w = random_weights(s.rows, s.cols, seed++);
    const RefQuant ref = ref_quantize(w);
    const mg::NF4Weight q = mg::nf4_quantize(w.data(), s.rows, s.cols);
    const std::vector<float> absmax = mg::nf4_absmax(q);
    const std::vector<float> deq = mg::nf4_dequantize(q);
    double worst_absmax = 0, worst_elem = 0;
    for (size_t b = 0; b < absmax.size(); ++b) {
      // dequantize_blockwise then `absmax += offset`: code * scale, then + offset.
      // volatile keeps the compiler from fusing product and sum into one fma (one rounding).
      volatile float product = map[ref.absmax_codes[b]] * ref.absmax_scales[b / 256];
      const float expect = product + ref.offset;
      ASSERT_EQ(absmax[b], expect) << "block " << b;
      const double err = std::fabs(double(absmax[b]) - ref.absmax[b]);
      const double bound = 0.5 * map_gap * ref.absmax_scales[b / 256] + 1e-6 * ref.absmax[b];
      worst_absmax = std::max(worst_absmax, err / bound);
    }
    for (size_t i = 0; i < w.size(); ++i) {
      const size_t b = i / 64;
      const uint8_t byte = ref.packed[i / 2];
      const int c = (i % 2 == 0) ? byte >> 4 : byte & 0x0F;
      ASSERT_EQ(deq[i], kRefNF4[c] * absmax[b]) << "element " << i;
      const double err = std::fabs(double(deq[i]) - w[i]);
      const double bound = 0.5 * max_gap * ref.absmax[b] +
                           std::fabs(double(absmax[b]) - ref.absmax[b]) + 1e-6 * ref.absmax[b];
      worst_elem = std::max(worst_elem, err / bound);
    }
    EXPECT_LE(worst_absmax, 1.0) << "absmax error / bound, worst";
    EXPECT_LE(worst_elem, 1.0) << "element error / bound, worst";
    // A row range equals the same rows of the whole.
    if (s.rows >= 3) {
      std::vector<float> part((s.rows - 2) * s.cols);
      mg::nf4_dequantize_rows(q, 1, s.rows - 1, part.data());
      for (size_t i = 0; i < part.size(); ++i)
        ASSERT_EQ(part[i], deq[s.cols + i]) << "rows [1, rows-1), element " << i;
    }
    // Error stats against a plain loop.
    double max_err = 0, sum2 = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      const double d = double(w[i]) - deq[i];
      max_err = std::max(max_err, std::fabs(d));
      sum2 += d * d;
    }
    const mg::NF4ErrorStats st = mg::nf4_error_stats(w.data(), q);
    EXPECT_EQ(st.max_abs_error, max_err);
    EXPECT_NEAR(st.rms_error, std::sqrt(sum2 / w.size()), 1e-12 + 1e-9 * st.rms_error);
    EXPECT_EQ(st.count, static_cast<int64_t>(w.size()));
  }
}

TEST(NF4, CodeValuesRoundTrip) {
  // Each block holds every NF4 value times a power of two, so x * (1/absmax) is exactly a code.
  const int64_t rows = 8, cols = 128;  // 16 blocks
  std::vector<float> w(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) w[i] = kRefNF4[(i * 7 + i / 64) % 16] * 0.5f;
  mg::NF4Weight q = mg::nf4_quantize(w.data(), rows, cols);
  for (int64_t i = 0; i < rows * cols; ++i) {
    const int c = (i % 2 == 0) ? q.packed[i / 2] >> 4 : q.packed[i / 2] & 0x0F;
    ASSERT_EQ(c, (i * 7 + i / 64) % 16) << "element " << i;
  }
  // Equal absmax everywhere: the centred absmax is 0, the scale 0, the offset the absmax, so
  // the round trip is exact.
  EXPECT_EQ(q.absmax_offset, 0.5f);
  EXPECT_EQ(mg::nf4_dequantize(q), w);

  // Different powers of two per block: exact up to the double-quantization error of absmax.
  for (int64_t i = 0; i < rows * cols; ++i)
    w[i] = kRefNF4[(i * 5 + 3) % 16] * std::ldexp(1.0f, int(i / 64) % 5 - 2);
  q = mg::nf4_quantize(w.data(), rows, cols);
  const std::vector<float> absmax = mg::nf4_absmax(q);
  const std::vector<float> deq = mg::nf4_dequantize(q);
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float true_absmax = std::ldexp(1.0f, int(i / 64) % 5 - 2);
    const int c = (i % 2 == 0) ? q.packed[i / 2] >> 4 : q.packed[i / 2] & 0x0F;
    ASSERT_EQ(c, (i * 5 + 3) % 16) << "element " << i;
    const double err = std::fabs(double(deq[i]) - w[i]);
    ASSERT_LE(err, std::fabs(double(absmax[i / 64]) - true_absmax) * std::fabs(kRefNF4[c]) + 1e-7)
        << "element " << i;
  }
}

void naive_matmul(const std::vector<float>& X, const std::vector<float>& W, int64_t M, int64_t rows,
                  int64_t cols, std::vector<double>& Y, std::vector<double>& absY) {
  Y.assign(M * rows, 0.0);
  absY.assign(M * rows, 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const double p = double(X[m * cols + c]) * W[r * cols + c];
        Y[m * rows + r] += p;
        absY[m * rows + r] += std::fabs(p);
      }
}

void naive_input_grad(const std::vector<float>& dY, const std::vector<float>& W, int64_t M,
                      int64_t rows, int64_t cols, std::vector<double>& dX,
                      std::vector<double>& absdX) {
  dX.assign(M * cols, 0.0);
  absdX.assign(M * cols, 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const double p = double(dY[m * rows + r]) * W[r * cols + c];
        dX[m * cols + c] += p;
        absdX[m * cols + c] += std::fabs(p);
      }
}

// max over elements of |got - want| / (sum |terms| + tiny): a relative error that does not
// blow up on outputs that cancel to ~0.
double worst_relative(const std::vector<float>& got, const std::vector<double>& want,
                      const std::vector<double>& abs_terms, const std::vector<float>& start) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double w = want[i] + (start.empty() ? 0.0 : start[i]);
    worst = std::max(worst, std::fabs(got[i] - w) / (abs_terms[i] + 1e-30));
  }
  return worst;
}

TEST(NF4, FusedMatmulsEqualDequantizeThenNaiveGemm) {
  struct Case {
    int64_t M, rows, cols;
  };
  // With 2 MiB tiles, 300x2100 gets 2 N tiles x 2 K tiles in the forward (2 threads) and in
  // the input grad (1 thread); 4200x130 gets 3 N tiles forward and 2 K tiles in the input
  // grad; then odd and short-block shapes, and M = 1.
  const Case cases[] = {{7, 300, 2100}, {5, 4200, 130}, {37, 33, 65},
                        {1, 129, 70},   {16, 64, 64},   {9, 65, 2049}};
  const mg::NF4MatmulVersion versions[] = {
      mg::NF4MatmulVersion::Auto, mg::NF4MatmulVersion::SharedTile,
      mg::NF4MatmulVersion::ThreadTile, mg::NF4MatmulVersion::Direct};
  const int saved = omp_get_max_threads();
  uint32_t seed = 500;
  for (const Case& k : cases) {
    const std::vector<float> w = random_weights(k.rows, k.cols, seed++);
    const mg::NF4Weight q = mg::nf4_quantize(w.data(), k.rows, k.cols);
    const std::vector<float> wd = mg::nf4_dequantize(q);
    std::mt19937 rng(seed++);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> X(k.M * k.cols), dY(k.M * k.rows), Y0(k.M * k.rows), dX0(k.M * k.cols);
    for (float& v : X) v = normal(rng);
    for (float& v : dY) v = normal(rng);
    for (float& v : Y0) v = normal(rng);
    for (float& v : dX0) v = normal(rng);
    std::vector<double> Yref, absY, dXref, absdX;
    naive_matmul(X, wd, k.M, k.rows, k.cols, Yref, absY);
    naive_input_grad(dY, wd, k.M, k.rows, k.cols, dXref, absdX);
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      for (auto v : versions) {
        for (bool acc : {false, true}) {
          SCOPED_TRACE("M=" + std::to_string(k.M) + " W " + std::to_string(k.rows) + "x" +
                       std::to_string(k.cols) + " threads=" + std::to_string(threads) +
                       " version=" + std::to_string(int(v)) + " accumulate=" + std::to_string(acc));
          std::vector<float> Y = acc ? Y0 : std::vector<float>(Y0.size(), 1e30f);
          mg::nf4_matmul(X.data(), q, Y.data(), k.M, acc, v);
          EXPECT_LE(worst_relative(Y, Yref, absY, acc ? Y0 : std::vector<float>{}), 1e-4)
              << "forward";
          std::vector<float> dX = acc ? dX0 : std::vector<float>(dX0.size(), 1e30f);
          mg::nf4_matmul_input_grad(dY.data(), q, dX.data(), k.M, acc, v);
          EXPECT_LE(worst_relative(dX, dXref, absdX, acc ? dX0 : std::vector<float>{}), 1e-4)
              << "input grad";
        }
      }
    }
  }
  omp_set_num_threads(saved);
}

TEST(NF4, FusedMatmulInsideParallelRegionRunsSerially) {
  // Called from inside an OpenMP team (e.g. per-expert work), each call stays on its thread.
  const std::vector<float> w = random_weights(96, 200, 9);
  const mg::NF4Weight q = mg::nf4_quantize(w.data(), 96, 200);
  const std::vector<float> wd = mg::nf4_dequantize(q);
  const int64_t M = 3;
  std::vector<float> X(M * 200);
  for (size_t i = 0; i < X.size(); ++i) X[i] = std::sin(0.1 * i);
  std::vector<double> Yref, absY;
  naive_matmul(X, wd, M, 96, 200, Yref, absY);
  // Calls 0-1 take the Direct kernel (M <= kNF4DirectMaxM), 2-3 the tiled sgemm one.
  std::vector<std::vector<float>> Y(4, std::vector<float>(M * 96));
  const mg::NF4MatmulVersion v[4] = {mg::NF4MatmulVersion::Auto, mg::NF4MatmulVersion::Direct,
                                     mg::NF4MatmulVersion::ThreadTile,
                                     mg::NF4MatmulVersion::SharedTile};
#pragma omp parallel for num_threads(2)
  for (int t = 0; t < 4; ++t) mg::nf4_matmul(X.data(), q, Y[t].data(), M, false, v[t]);
  for (int t = 0; t < 4; ++t) EXPECT_LE(worst_relative(Y[t], Yref, absY, {}), 1e-4) << "call " << t;
}

TEST(NF4, BitsPerParamOn4096Square) {
  const int64_t n = 4096;
  std::vector<float> w(n * n);
  uint64_t s = 0x9E3779B97F4A7C15ull;  // splitmix64: fast enough for 16.7M values under ASan
  for (float& v : w) {
    s += 0x9E3779B97F4A7C15ull;
    uint64_t z = (s ^ (s >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    v = static_cast<float>(static_cast<int64_t>(z >> 40) - (int64_t{1} << 23)) * 0x1p-23f * 0.02f;
  }
  const mg::NF4Weight q = mg::nf4_quantize(w.data(), n, n);
  // 8 MiB of codes + 256 Ki absmax codes + 1 Ki scales + the offset.
  EXPECT_EQ(q.bytes(), n * n / 2 + n * n / 64 + 4 * (n * n / 64 / 256) + 4);
  std::printf("[ NF4      ] 4096x4096: %lld bytes, %.4f bits/param\n",
              static_cast<long long>(q.bytes()), q.bits_per_param());
  EXPECT_NEAR(q.bits_per_param(), 4.127, 0.001);
}

TEST(NF4, ErrorsNameWhatIsWrong) {
  std::vector<float> w(4 * 70, 0.5f);
  w[2 * 70 + 3] = std::nanf("");
  try {
    mg::nf4_quantize(w.data(), 4, 70);
    FAIL() << "no error for a NaN weight";
  } catch (const mg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("W(2, 3)"), std::string::npos) << e.what();
  }
  w[2 * 70 + 3] = 0.5f;
  mg::NF4Weight q = mg::nf4_quantize(w.data(), 4, 70);
  q.packed.pop_back();
  EXPECT_THROW(mg::nf4_validate(q, "layers.0.mixer.in_proj.weight"), mg::Error);
  std::vector<float> x(70), y(4);
  EXPECT_THROW(mg::nf4_matmul(x.data(), q, y.data(), 1), mg::Error);
}

}  // namespace
