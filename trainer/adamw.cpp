#include "trainer/adamw.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "autograd/error.h"
#include "trainer/adamw_constants.h"

namespace mg {

namespace {

constexpr int64_t kLanes = 8;                       // floats per AVX2 register
constexpr int64_t kFp32Chunk = 4096;                // elements per OpenMP work item (fp32 kernel)
constexpr int64_t kParallelMin = int64_t{1} << 15;  // below this, thread start-up dominates

// Per-step constants shared by both kernels (trainer/adamw_constants.h, also the GPU's),
// broadcast to 8 lanes where the kernels use them as vectors.
struct AdamWConstants {
  float beta1, sqrt_beta2;  // scalars: the fp16 kernel folds them into per-block scales
  __m256 beta1_v, beta2_v;
  __m256 m_grad_coef;   // (1 - beta1) * grad_scale
  __m256 v_grad_coef;   // (1 - beta2) * grad_scale^2
  __m256 decay;         // 1 - lr * weight_decay
  __m256 step_size;     // lr / (1 - beta1^t)
  __m256 inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^t)
  __m256 eps;
};

AdamWConstants make_constants(const AdamWHyper& h, float grad_scale) {
  const AdamWStepConstants s =
      adamw_step_constants(h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.step, grad_scale);
  AdamWConstants c;
  c.beta1 = s.beta1;
  c.sqrt_beta2 = s.sqrt_beta2;
  c.beta1_v = _mm256_set1_ps(s.beta1);
  c.beta2_v = _mm256_set1_ps(s.beta2);
  c.m_grad_coef = _mm256_set1_ps(s.m_grad_coef);
  c.v_grad_coef = _mm256_set1_ps(s.v_grad_coef);
  c.decay = _mm256_set1_ps(s.decay);
  c.step_size = _mm256_set1_ps(s.step_size);
  c.inv_sqrt_bc2 = _mm256_set1_ps(s.inv_sqrt_bc2);
  c.eps = _mm256_set1_ps(s.eps);
  return c;
}

// From the new moments to the new parameter, on 8 lanes: PyTorch's
//   p = p * (1 - lr*wd) - step_size * m / (sqrt(v) / sqrt(bc2) + eps)
// sqrt and division stay IEEE exact, as in PyTorch: Newton-refined rcp/rsqrt estimates were
// measured slower here, since the kernel is bound by instruction count, not by the divider.
inline __m256 adamw_param_update(const AdamWConstants& c, __m256 p, __m256 m, __m256 v_sqrt) {
  const __m256 denom = _mm256_fmadd_ps(v_sqrt, c.inv_sqrt_bc2, c.eps);
  return _mm256_fnmadd_ps(c.step_size, _mm256_div_ps(m, denom), _mm256_mul_ps(p, c.decay));
}

inline float horizontal_max(__m256 x) {
  __m128 r = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  r = _mm_max_ps(r, _mm_movehl_ps(r, r));
  r = _mm_max_ss(r, _mm_shuffle_ps(r, r, 1));
  return _mm_cvtss_f32(r);
}

// fp32 kernel over `count` elements, count a multiple of kLanes.
//   param, grad, m, v: (count)
void adamw_fp32_span(const AdamWConstants& c, int64_t count, float* param, const float* grad,
                     float* m, float* v) {
  for (int64_t i = 0; i < count; i += kLanes) {
    const __m256 g = _mm256_loadu_ps(grad + i);
    const __m256 m_new =
        _mm256_fmadd_ps(c.beta1_v, _mm256_loadu_ps(m + i), _mm256_mul_ps(c.m_grad_coef, g));
    const __m256 v_new = _mm256_fmadd_ps(c.beta2_v, _mm256_loadu_ps(v + i),
                                         _mm256_mul_ps(_mm256_mul_ps(c.v_grad_coef, g), g));
    const __m256 p =
        adamw_param_update(c, _mm256_loadu_ps(param + i), m_new, _mm256_sqrt_ps(v_new));
    _mm256_storeu_ps(param + i, p);
    _mm256_storeu_ps(m + i, m_new);
    _mm256_storeu_ps(v + i, v_new);
  }
}

// lowbias32 (C. Wellons, "Prospecting for hash functions", 2018): a 32-bit integer hash with
// good avalanche; mixes the step number into the key of the noise sequence below.
uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  return x ^ (x >> 16);
}

constexpr uint32_t kWeyl = 0x9e3779b9u;  // 2^32 / golden ratio

// Stochastic rounding fp32 -> fp16 of non-negative x (Gupta et al. 2015; Croci et al. 2022):
// fp16 keeps the top 10 of fp32's 23 mantissa bits, so adding a uniform integer in [0, 2^13)
// to the fp32 bit pattern and truncating toward zero rounds up with probability equal to the
// dropped fraction: E[fp16(x)] = x. Exact for results in fp16's normal range (all of a block
// down to 2^-29 of its maximum); smaller results truncate part of the noise, immaterial there.
// `weyl` holds i * kWeyl + hash(step) (mod 2^32) for element i: its top 13 bits are a Weyl
// sequence over the elements, shifted by a random offset each step (Cranley-Patterson
// rotation), so every element's noise is uniform from step to step, at 2 integer ops per 8
// elements, and reproducible from (step, index) for bit-exact resumes.
inline __m128i fp32_to_fp16_stochastic(__m256 x, __m256i weyl) {
  const __m256i noise = _mm256_srli_epi32(weyl, 32 - 13);
  const __m256 dithered = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(x), noise));
  return _mm256_cvtps_ph(dithered, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
}

// A block maximum so small that its scale (max / 2^15) would be subnormal is stored as an
// all-zero block. Without this, 2^15 / max overflows to inf and 0 * inf gives NaN codes: the
// first moment of a parameter whose gradient stays exactly zero (an MoE expert that gets no
// tokens) decays as beta1^t and reaches this range after ~700 steps, and NaN weights follow.
// Values this small (< 2^-111) have no effect on the update, which eps dominates. NaN passes.
inline float flush_tiny_block_max(float block_max) {
  constexpr float kMinBlockMax = std::numeric_limits<float>::min() * kAdamWFp16ScaleTarget;
  return block_max > 0.0f && block_max < kMinBlockMax ? 0.0f : block_max;
}

// One fp16-state block of `count` <= kAdamWFp16Block elements, count a multiple of kLanes.
// Pass 1 streams param/grad/codes and keeps the new fp32 m and sqrt(v) in L1 (1 KiB); pass 2
// writes the codes under the block's new scales. Memory is still touched once.
// sqrt(v) is rounded stochastically and m to nearest (why: trainer/adamw.h); m moves ~10% a
// step (beta1 = 0.9), far more than an ulp, and showed no bias in the same measurement.
//   param, grad, m_q, v_sqrt_q: (count); m_scale, v_sqrt_scale: this block's scale (in/out)
//   first_index: index of the block's first element in the whole array (noise sequence)
//   step_key: hash of the step number (noise sequence offset)
void adamw_fp16_block(const AdamWConstants& c, int64_t count, float* param, const float* grad,
                      uint16_t* m_q, uint16_t* v_sqrt_q, float* m_scale, float* v_sqrt_scale,
                      int64_t first_index, uint32_t step_key) {
  alignas(32) float m_new[kAdamWFp16Block];
  alignas(32) float v_sqrt_new[kAdamWFp16Block];
  // beta1 * m_old = code * (m_scale * beta1)
  // beta2 * v_old = (code * (v_sqrt_scale * sqrt(beta2)))^2
  const __m256 m_decay = _mm256_set1_ps(*m_scale * c.beta1);
  const __m256 v_sqrt_decay = _mm256_set1_ps(*v_sqrt_scale * c.sqrt_beta2);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m_absmax = _mm256_setzero_ps(), v_sqrt_max = _mm256_setzero_ps();
  for (int64_t i = 0; i < count; i += kLanes) {
    const __m256 g = _mm256_loadu_ps(grad + i);
    const __m256 m_code =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(m_q + i)));
    const __m256 v_code =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v_sqrt_q + i)));
    const __m256 m = _mm256_fmadd_ps(m_code, m_decay, _mm256_mul_ps(c.m_grad_coef, g));
    const __m256 v_sqrt_decayed = _mm256_mul_ps(v_code, v_sqrt_decay);
    const __m256 v = _mm256_fmadd_ps(v_sqrt_decayed, v_sqrt_decayed,
                                     _mm256_mul_ps(_mm256_mul_ps(c.v_grad_coef, g), g));
    const __m256 v_sqrt = _mm256_sqrt_ps(v);
    const __m256 p = adamw_param_update(c, _mm256_loadu_ps(param + i), m, v_sqrt);
    _mm256_storeu_ps(param + i, p);
    _mm256_store_ps(m_new + i, m);
    _mm256_store_ps(v_sqrt_new + i, v_sqrt);
    m_absmax = _mm256_max_ps(m_absmax, _mm256_and_ps(m, abs_mask));
    v_sqrt_max = _mm256_max_ps(v_sqrt_max, v_sqrt);
  }
  const float m_max = flush_tiny_block_max(horizontal_max(m_absmax));
  const float v_sqrt_max_s = flush_tiny_block_max(horizontal_max(v_sqrt_max));
  *m_scale = m_max / kAdamWFp16ScaleTarget;
  *v_sqrt_scale = v_sqrt_max_s / kAdamWFp16ScaleTarget;
  const __m256 m_inv = _mm256_set1_ps(m_max > 0.0f ? kAdamWFp16ScaleTarget / m_max : 0.0f);
  const __m256 v_inv =
      _mm256_set1_ps(v_sqrt_max_s > 0.0f ? kAdamWFp16ScaleTarget / v_sqrt_max_s : 0.0f);
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  __m256i weyl = _mm256_add_epi32(
      _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(first_index) * kWeyl + step_key)),
      _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                         _mm256_set1_epi32(static_cast<int>(kWeyl))));
  const __m256i weyl_stride = _mm256_set1_epi32(static_cast<int>(kWeyl * kLanes));
  for (int64_t i = 0; i < count; i += kLanes) {
    const __m128i mq = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_load_ps(m_new + i), m_inv), kRound);
    const __m128i vq =
        fp32_to_fp16_stochastic(_mm256_mul_ps(_mm256_load_ps(v_sqrt_new + i), v_inv), weyl);
    weyl = _mm256_add_epi32(weyl, weyl_stride);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(m_q + i), mq);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(v_sqrt_q + i), vq);
  }
}

// A zero-padded copy of a ragged tail (`count` < Cap elements), so the tail runs through the
// same vector code as the body; the caller copies `count` elements back. Padding has zero grad
// and state, so it stays zero and never raises a block maximum.
template <typename T, size_t Cap>
struct Padded {
  alignas(32) T data[Cap] = {};
  Padded(const T* src, int64_t count) { std::memcpy(data, src, sizeof(T) * count); }
};

int64_t round_up_lanes(int64_t count) { return (count + kLanes - 1) / kLanes * kLanes; }

}  // namespace

void validate_adamw_hyper(const AdamWHyper& h) {
  MG_CHECK(std::isfinite(h.lr) && h.lr >= 0.0f, "[adamw] lr = {} must be finite and >= 0", h.lr);
  MG_CHECK(h.beta1 >= 0.0f && h.beta1 < 1.0f, "[adamw] beta1 = {} must lie in [0, 1)", h.beta1);
  MG_CHECK(h.beta2 >= 0.0f && h.beta2 < 1.0f, "[adamw] beta2 = {} must lie in [0, 1)", h.beta2);
  MG_CHECK(std::isfinite(h.eps) && h.eps > 0.0f, "[adamw] eps = {} must be finite and > 0", h.eps);
  MG_CHECK(std::isfinite(h.weight_decay) && h.weight_decay >= 0.0f,
           "[adamw] weight_decay = {} must be finite and >= 0", h.weight_decay);
  MG_CHECK(h.step >= 1,
           "[adamw] step = {} must be >= 1 (1-based; bias corrections divide by "
           "1 - beta^step)",
           h.step);
}

void adamw_step_fp32(const AdamWHyper& hyper, float grad_scale, int64_t n, float* param,
                     const float* grad, float* m, float* v) {
  validate_adamw_hyper(hyper);
  MG_CHECK(n >= 0, "[adamw_step_fp32] n = {} must be >= 0", n);
  if (n == 0) return;
  MG_CHECK(param && grad && m && v, "[adamw_step_fp32] null buffer for n = {}", n);
  const AdamWConstants c = make_constants(hyper, grad_scale);
  const int64_t n_chunks = (n + kFp32Chunk - 1) / kFp32Chunk;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
    const int64_t begin = chunk * kFp32Chunk, count = std::min(kFp32Chunk, n - begin);
    const int64_t body = count / kLanes * kLanes, tail = count - body;
    adamw_fp32_span(c, body, param + begin, grad + begin, m + begin, v + begin);
    if (tail == 0) continue;
    const int64_t at = begin + body;
    Padded<float, kLanes> p(param + at, tail), g(grad + at, tail), mm(m + at, tail),
        vv(v + at, tail);
    adamw_fp32_span(c, kLanes, p.data, g.data, mm.data, vv.data);
    std::memcpy(param + at, p.data, sizeof(float) * tail);
    std::memcpy(m + at, mm.data, sizeof(float) * tail);
    std::memcpy(v + at, vv.data, sizeof(float) * tail);
  }
}

AdamWFp16Layout AdamWFp16Layout::for_size(int64_t n) {
  MG_CHECK(n >= 0, "[AdamWFp16Layout] n = {} must be >= 0", n);
  return AdamWFp16Layout{n, (n + kAdamWFp16Block - 1) / kAdamWFp16Block};
}

void adamw_step_fp16(const AdamWHyper& hyper, float grad_scale, int64_t n, float* param,
                     const float* grad, const AdamWFp16State& s) {
  validate_adamw_hyper(hyper);
  MG_CHECK(n >= 0, "[adamw_step_fp16] n = {} must be >= 0", n);
  if (n == 0) return;
  MG_CHECK(param && grad && s.m_q && s.v_sqrt_q && s.m_scale && s.v_sqrt_scale,
           "[adamw_step_fp16] null buffer for n = {}", n);
  const AdamWConstants c = make_constants(hyper, grad_scale);
  const int64_t n_blocks = AdamWFp16Layout::for_size(n).n_blocks;
  const uint32_t step_key = hash32(static_cast<uint32_t>(hyper.step) ^
                                   hash32(static_cast<uint32_t>(uint64_t(hyper.step) >> 32)));
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t begin = b * kAdamWFp16Block, count = std::min(kAdamWFp16Block, n - begin);
    if (count % kLanes == 0) {
      adamw_fp16_block(c, count, param + begin, grad + begin, s.m_q + begin, s.v_sqrt_q + begin,
                       s.m_scale + b, s.v_sqrt_scale + b, begin, step_key);
      continue;
    }
    // Last, ragged block: run it on zero-padded copies.
    Padded<float, kAdamWFp16Block> p(param + begin, count), g(grad + begin, count);
    Padded<uint16_t, kAdamWFp16Block> mq(s.m_q + begin, count), vq(s.v_sqrt_q + begin, count);
    adamw_fp16_block(c, round_up_lanes(count), p.data, g.data, mq.data, vq.data, s.m_scale + b,
                     s.v_sqrt_scale + b, begin, step_key);
    std::memcpy(param + begin, p.data, sizeof(float) * count);
    std::memcpy(s.m_q + begin, mq.data, sizeof(uint16_t) * count);
    std::memcpy(s.v_sqrt_q + begin, vq.data, sizeof(uint16_t) * count);
  }
}

void adamw_fp16_state_decode(int64_t n, const AdamWFp16State& s, float* m, float* v) {
  MG_CHECK(n >= 0, "[adamw_fp16_state_decode] n = {} must be >= 0", n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = i / kAdamWFp16Block;
    m[i] = fp16_to_fp32(s.m_q[i]) * s.m_scale[b];
    const float v_sqrt = fp16_to_fp32(s.v_sqrt_q[i]) * s.v_sqrt_scale[b];
    v[i] = v_sqrt * v_sqrt;
  }
}

void adamw_fp16_state_encode(int64_t n, const float* m, const float* v, const AdamWFp16State& s) {
  MG_CHECK(n >= 0, "[adamw_fp16_state_encode] n = {} must be >= 0", n);
  const int64_t n_blocks = AdamWFp16Layout::for_size(n).n_blocks;
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t begin = b * kAdamWFp16Block, end = std::min(n, begin + kAdamWFp16Block);
    float m_max = 0.0f, v_sqrt_max = 0.0f;
    for (int64_t i = begin; i < end; ++i) {
      MG_CHECK(v[i] >= 0.0f,
               "[adamw_fp16_state_encode] v[{}] = {} is negative; the second "
               "moment must be >= 0",
               i, v[i]);
      m_max = std::max(m_max, std::fabs(m[i]));
      v_sqrt_max = std::max(v_sqrt_max, std::sqrt(v[i]));
    }
    m_max = flush_tiny_block_max(m_max);
    v_sqrt_max = flush_tiny_block_max(v_sqrt_max);
    s.m_scale[b] = m_max / kAdamWFp16ScaleTarget;
    s.v_sqrt_scale[b] = v_sqrt_max / kAdamWFp16ScaleTarget;
    const float m_inv = m_max > 0.0f ? kAdamWFp16ScaleTarget / m_max : 0.0f;
    const float v_inv = v_sqrt_max > 0.0f ? kAdamWFp16ScaleTarget / v_sqrt_max : 0.0f;
    for (int64_t i = begin; i < end; ++i) {
      s.m_q[i] = fp32_to_fp16(m[i] * m_inv);
      s.v_sqrt_q[i] = fp32_to_fp16(std::sqrt(v[i]) * v_inv);
    }
  }
}

uint16_t fp32_to_fp16(float x) {
  return static_cast<uint16_t>(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

float fp16_to_fp32(uint16_t h) { return _cvtsh_ss(h); }

void fp32_to_fp16(int64_t n, const float* in, uint16_t* out) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m128i h =
        _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
  }
  for (; i < n; ++i) out[i] = fp32_to_fp16(in[i]);
}

void fp16_to_fp32(int64_t n, const uint16_t* in, float* out) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) out[i] = fp16_to_fp32(in[i]);
}

// ---- Global gradient norm -------------------------------------------------------------------

namespace {

constexpr int64_t kNormChunk = 16384;

// sum x[i]^2 in double; four independent accumulators hide the FMA latency.
double sum_squares(const float* x, int64_t count) {
  __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
  __m256d acc2 = _mm256_setzero_pd(), acc3 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    const __m256d a0 = _mm256_cvtps_pd(_mm256_castps256_ps128(a));
    const __m256d a1 = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
    const __m256d b0 = _mm256_cvtps_pd(_mm256_castps256_ps128(b));
    const __m256d b1 = _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1));
    acc0 = _mm256_fmadd_pd(a0, a0, acc0);
    acc1 = _mm256_fmadd_pd(a1, a1, acc1);
    acc2 = _mm256_fmadd_pd(b0, b0, acc2);
    acc3 = _mm256_fmadd_pd(b1, b1, acc3);
  }
  const __m256d acc = _mm256_add_pd(_mm256_add_pd(acc0, acc1), _mm256_add_pd(acc2, acc3));
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, acc);
  double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  for (; i < count; ++i) sum += static_cast<double>(x[i]) * x[i];
  return sum;
}

}  // namespace

double global_grad_l2_norm(std::span<const std::span<const float>> arrays) {
  struct Chunk {
    const float* data;
    int64_t count;
  };
  std::vector<Chunk> chunks;
  for (const std::span<const float>& a : arrays) {
    const auto size = static_cast<int64_t>(a.size());
    for (int64_t begin = 0; begin < size; begin += kNormChunk) {
      chunks.push_back({a.data() + begin, std::min(kNormChunk, size - begin)});
    }
  }
  const auto n_chunks = static_cast<int64_t>(chunks.size());
  std::vector<double> partial(chunks.size());
#pragma omp parallel for schedule(static) if (n_chunks >= 4)
  for (int64_t c = 0; c < n_chunks; ++c) partial[c] = sum_squares(chunks[c].data, chunks[c].count);
  double total = 0.0;
  for (double p : partial) total += p;  // fixed order: independent of the thread count
  return std::sqrt(total);
}

float clip_coefficient(double norm, double max_norm) {
  MG_CHECK(std::isfinite(max_norm) && max_norm > 0.0,
           "[clip_coefficient] max_norm = {} must be positive and finite; set e.g. "
           "grad_clip: 1.0",
           max_norm);
  // Written so that a NaN norm gives a NaN coefficient, as torch.clamp does, instead of 1.
  const double coef = max_norm / (norm + 1e-6);
  return static_cast<float>(coef > 1.0 ? 1.0 : coef);
}

}  // namespace mg
