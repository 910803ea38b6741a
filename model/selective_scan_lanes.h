#pragma once
// Internal to model/selective_scan*.cpp: the scan kernels are written once over a "lanes"
// type L that holds W channels side by side:
//   Lanes<double>: W = 1, plain scalar code with std::exp/std::log1p (the exact path the
//                  gradient checks use);
//   Lanes<float> : W = 8 channels per AVX2 register (loads along D are contiguous) with a
//                  Cephes-style exp/log (rel. error ~1e-7); scalar like double when the
//                  build has no AVX2+FMA (MAGELLAN_ARCH=x86-64).
// Vectorizing over channels, not over N, keeps y_t = sum_n h[n]*C[n] a plain per-lane FMA
// chain; only dBm/dCm (sums over channels) need horizontal sums, done 8 at a time.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <new>

#include "model/selective_scan.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MG_SCAN_AVX2 1
#else
#define MG_SCAN_AVX2 0
#endif

namespace mg::scan_detail {

// Below this much work (B*T*D*N) the kernels run on the calling thread: waking a team costs
// more than it saves (and tiny calls are what gradient checks make by the thousand).
inline constexpr int64_t kParallelMinWork = int64_t(1) << 16;

// PyTorch's softplus (and mamba's kernel) return x itself above this threshold.
inline constexpr double kSoftplusThreshold = 20.0;

// ---------------------------------------------------------------------------------------
// Scalar lanes (W = 1): double always, float when there is no AVX2.
// ---------------------------------------------------------------------------------------
template <class T>
struct ScalarLanes {
  using Elem = T;
  using V = T;
  static constexpr int W = 1;
  static V zero() { return T(0); }
  static V set1(T x) { return x; }
  static V load(const T* p, int /*lanes*/) { return *p; }
  static void store(T* p, V v, int /*lanes*/) { *p = v; }
  static void to_array(V v, T* dst) { dst[0] = v; }
  static V from_array(const T* src) { return src[0]; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static V div(V a, V b) { return a / b; }
  static V exp(V x) { return std::exp(x); }
  // decay = exp(delta*A) = decay_exp(delta * (A*kDecayScale)); plain exp here.
  static constexpr double kDecayScale = 1.0;
  static V decay_exp(V x) { return std::exp(x); }
  static V sigmoid(V x) { return T(1) / (T(1) + std::exp(-x)); }
  static V softplus(V x) {
    return x <= T(kSoftplusThreshold) ? std::log1p(std::exp(x)) : x;
  }
  // softplus(x) (the same bits as softplus()) and its derivative sigmoid(x) = e/(1+e),
  // sharing e = exp(x); same threshold.
  static void softplus_with_grad(V x, V& sp, V& dsp) {
    if (x <= T(kSoftplusThreshold)) {
      const T e = std::exp(x);
      sp = std::log1p(e);
      dsp = e / (T(1) + e);
    } else {
      sp = x;
      dsp = T(1);
    }
  }
  // dst[k] = sum over lanes of v[k], k < count.
  static void write_lane_sums(const V* v, int64_t count, T* dst) {
    for (int64_t k = 0; k < count; ++k) dst[k] = v[k];
  }
};

#if MG_SCAN_AVX2
// ---------------------------------------------------------------------------------------
// AVX2 lanes for float: 8 channels per __m256. exp and log follow Cephes (expf.c, logf.c,
// S. Moshier) as vectorized in sse_mathfun/avx_mathfun: range reduction to [-ln2/2, ln2/2]
// then a degree-6 polynomial; NaN propagates.
// ---------------------------------------------------------------------------------------
struct Avx2Lanes {
  using Elem = float;
  using V = __m256;
  static constexpr int W = 8;

  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static __m256i lane_mask(int lanes) {  // all-ones in lanes [0, lanes)
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  // The last channel block may be partial: masked lanes read as 0 and are never written.
  static V load(const float* p, int lanes) {
    return lanes == W ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lane_mask(lanes));
  }
  static void store(float* p, V v, int lanes) {
    if (lanes == W) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, lane_mask(lanes), v);
  }
  static void to_array(V v, float* dst) { _mm256_storeu_ps(dst, v); }
  static V from_array(const float* src) { return _mm256_loadu_ps(src); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }

  static V exp(V x) {
    const V hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-88.3762626647949f);
    // min/max return their SECOND operand when one is NaN: x last keeps NaN.
    x = _mm256_max_ps(lo, _mm256_min_ps(hi, x));
    // n = round(x / ln2) (floor(x*log2e + 0.5) as Cephes; below ~-87.7 it gives a zero
    // exponent field and the result flushes to 0, true value < 1e-38).
    V fx = _mm256_floor_ps(fma(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    // r = x - n*ln2 in two parts (C1 exact in float) for accuracy.
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    const V r2 = _mm256_mul_ps(x, x);
    V p = _mm256_set1_ps(1.9875691500E-4f);
    p = fma(p, x, _mm256_set1_ps(1.3981999507E-3f));
    p = fma(p, x, _mm256_set1_ps(8.3334519073E-3f));
    p = fma(p, x, _mm256_set1_ps(4.1665795894E-2f));
    p = fma(p, x, _mm256_set1_ps(1.6666665459E-1f));
    p = fma(p, x, _mm256_set1_ps(5.0000001201E-1f));
    p = fma(p, r2, _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i n = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(0x7f));
    n = _mm256_slli_epi32(n, 23);  // 2^n as float bits
    return _mm256_mul_ps(p, _mm256_castsi256_ps(n));
  }

  // 2^x for x <= 0 (Cephes exp2f.c: x = k + f, |f| <= 1/2, 2^f = 1 + f*P(f), rel. error
  // ~1e-7), the exponent k added straight into the float's exponent field. Below x = -125 the
  // result stays at about 2^-125 (~2e-38) instead of going to 0. The scan's decay exponent
  // delta*A is never positive (delta = softplus >= 0, A = -exp(A_log) < 0).
  static V exp2_nonpositive(V x) {
    x = _mm256_max_ps(_mm256_set1_ps(-125.0f), x);  // NaN kept (second operand)
    const V k = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const V f = _mm256_sub_ps(x, k);
    V p = _mm256_set1_ps(1.535336188319500E-4f);
    p = fma(p, f, _mm256_set1_ps(1.339887440266574E-3f));
    p = fma(p, f, _mm256_set1_ps(9.618437357674640E-3f));
    p = fma(p, f, _mm256_set1_ps(5.550332471162809E-2f));
    p = fma(p, f, _mm256_set1_ps(2.402264791363012E-1f));
    p = fma(p, f, _mm256_set1_ps(6.931472028550421E-1f));
    p = fma(p, f, _mm256_set1_ps(1.0f));
    const __m256i k_bits = _mm256_slli_epi32(_mm256_cvtps_epi32(k), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), k_bits));
  }
  // decay = exp(delta*A) = 2^(delta * (A*log2(e))) with A scaled once per block: a multiply
  // and the two-step ln2 reduction fewer than exp(), on the scan's hottest line.
  static constexpr double kDecayScale = 1.4426950408889634;  // log2(e)
  static V decay_exp(V x) { return exp2_nonpositive(x); }

  // Natural log for positive finite x (Cephes logf): x = m * 2^e with m in [sqrt(.5), sqrt(2)).
  static V log(V x) {
    x = _mm256_max_ps(_mm256_set1_ps(1.17549435e-38f), x);  // smallest normal; NaN kept
    __m256i e_bits = _mm256_srli_epi32(_mm256_castps_si256(x), 23);
    x = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(~0x7f800000)));
    x = _mm256_or_ps(x, _mm256_set1_ps(0.5f));  // mantissa in [0.5, 1)
    V e = _mm256_cvtepi32_ps(_mm256_sub_epi32(e_bits, _mm256_set1_epi32(0x7e)));
    const V small = _mm256_cmp_ps(x, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
    e = _mm256_sub_ps(e, _mm256_and_ps(_mm256_set1_ps(1.0f), small));
    x = _mm256_add_ps(_mm256_sub_ps(x, _mm256_set1_ps(1.0f)), _mm256_and_ps(x, small));
    const V x2 = _mm256_mul_ps(x, x);
    V p = _mm256_set1_ps(7.0376836292E-2f);
    p = fma(p, x, _mm256_set1_ps(-1.1514610310E-1f));
    p = fma(p, x, _mm256_set1_ps(1.1676998740E-1f));
    p = fma(p, x, _mm256_set1_ps(-1.2420140846E-1f));
    p = fma(p, x, _mm256_set1_ps(1.4249322787E-1f));
    p = fma(p, x, _mm256_set1_ps(-1.6668057665E-1f));
    p = fma(p, x, _mm256_set1_ps(2.0000714765E-1f));
    p = fma(p, x, _mm256_set1_ps(-2.4999993993E-1f));
    p = fma(p, x, _mm256_set1_ps(3.3333331174E-1f));
    p = _mm256_mul_ps(_mm256_mul_ps(p, x), x2);
    p = fma(e, _mm256_set1_ps(-2.12194440e-4f), p);
    p = fma(x2, _mm256_set1_ps(-0.5f), p);
    x = _mm256_add_ps(x, p);
    return fma(e, _mm256_set1_ps(0.693359375f), x);
  }

  static V sigmoid(V x) {
    const V one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp(_mm256_sub_ps(_mm256_setzero_ps(), x))));
  }

  // log1p(exp(x)) for x <= 20, x above. log1p(e) = log(1+e) * e / ((1+e) - 1) recovers the
  // bits lost in 1+e (Goldberg, "What every computer scientist should know...", thm. 4).
  // Also returns e = exp(min(x, 20)) and 1+e for the derivative.
  static V softplus_core(V x, V& e, V& w) {
    const V one = _mm256_set1_ps(1.0f), thr = _mm256_set1_ps(float(kSoftplusThreshold));
    e = exp(_mm256_min_ps(thr, x));
    w = _mm256_add_ps(one, e);
    const V wm1 = _mm256_sub_ps(w, one);
    const V exact = _mm256_cmp_ps(wm1, _mm256_setzero_ps(), _CMP_EQ_OQ);  // 1+e rounded to 1
    const V ratio = _mm256_div_ps(e, _mm256_blendv_ps(wm1, one, exact));
    const V l1p = _mm256_blendv_ps(_mm256_mul_ps(log(w), ratio), e, exact);
    return _mm256_blendv_ps(l1p, x, _mm256_cmp_ps(x, thr, _CMP_GT_OQ));
  }
  static V softplus(V x) {
    V e, w;
    return softplus_core(x, e, w);
  }
  // softplus(x) (the same bits as softplus()) and its derivative sigmoid(x) = e/(1+e),
  // which is 1 above the threshold, as PyTorch's softplus backward.
  static void softplus_with_grad(V x, V& sp, V& dsp) {
    V e, w;
    sp = softplus_core(x, e, w);
    const V above = _mm256_cmp_ps(x, _mm256_set1_ps(float(kSoftplusThreshold)), _CMP_GT_OQ);
    dsp = _mm256_blendv_ps(_mm256_div_ps(e, w), _mm256_set1_ps(1.0f), above);
  }

  // dst[k] = sum over the 8 lanes of v[k], k < count: eight vectors at a time through a
  // transpose-and-add (3 levels of hadd), so a sum costs about one instruction.
  static void write_lane_sums(const V* v, int64_t count, float* dst) {
    int64_t k = 0;
    for (; k + 8 <= count; k += 8) {
      const V a = _mm256_hadd_ps(v[k + 0], v[k + 1]), b = _mm256_hadd_ps(v[k + 2], v[k + 3]);
      const V c = _mm256_hadd_ps(v[k + 4], v[k + 5]), d = _mm256_hadd_ps(v[k + 6], v[k + 7]);
      const V ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);
      // ab = [s0 s1 s2 s3 | s0' s1' s2' s3'] (low/high 128-bit halves), same for cd.
      const V lo = _mm256_permute2f128_ps(ab, cd, 0x20), hi = _mm256_permute2f128_ps(ab, cd, 0x31);
      _mm256_storeu_ps(dst + k, _mm256_add_ps(lo, hi));
    }
    for (; k < count; ++k) {
      __m128 s = _mm_add_ps(_mm256_castps256_ps128(v[k]), _mm256_extractf128_ps(v[k], 1));
      s = _mm_hadd_ps(s, s);
      s = _mm_hadd_ps(s, s);
      dst[k] = _mm_cvtss_f32(s);
    }
  }
};
#endif

template <class T> struct LanesFor { using type = ScalarLanes<T>; };
#if MG_SCAN_AVX2
template <> struct LanesFor<float> { using type = Avx2Lanes; };
#endif
template <class T> using Lanes = typename LanesFor<T>::type;

// Over-aligned scratch of lane vectors (a std::vector<__m256> would drop the alignment
// attribute of its template argument).
template <class L>
class LaneBuffer {
 public:
  using V = typename L::V;
  explicit LaneBuffer(size_t count)
      : p_(static_cast<V*>(::operator new(sizeof(V) * (count ? count : 1), std::align_val_t{64}))) {}
  ~LaneBuffer() { ::operator delete(p_, std::align_val_t{64}); }
  LaneBuffer(const LaneBuffer&) = delete;
  LaneBuffer& operator=(const LaneBuffer&) = delete;
  V* data() { return p_; }
  V& operator[](size_t i) { return p_[i]; }

 private:
  V* p_;
};

// The kernel inputs, bundled: u, dt (B,T,D), dt_bias (D), A_log (D,N), Bm, Cm (B,T,N),
// Dskip (D), z (B,T,D) or nullptr. (For step(): T = 1.)
template <class T>
struct ScanInputs {
  const T *u, *dt, *dt_bias, *A_log, *Bm, *Cm, *Dskip, *z;
};

// Argument checks shared by the entry points (defined in selective_scan.cpp).
void check_scan_shape(const ScanShape& s, const char* where);
void check_not_null(const void* p, const char* where, const char* name);
template <class T>
void check_inputs(const ScanInputs<T>& in, const char* where) {
  check_not_null(in.u, where, "u");
  check_not_null(in.dt, where, "dt");
  check_not_null(in.dt_bias, where, "dt_bias");
  check_not_null(in.A_log, where, "A_log");
  check_not_null(in.Bm, where, "Bm");
  check_not_null(in.Cm, where, "Cm");
  check_not_null(in.Dskip, where, "Dskip");
}

// Channels are split into lane blocks of W, and blocks into groups of consecutive blocks:
// one work item is (batch row, group). A group is wide enough that each time step reads a
// few contiguous cache lines of every (B,T,D) row (rows are D apart, a new page per step, so
// a single 8-channel block per item would stall on the memory system), and there are at
// least 16 groups when D allows, for threads. The split depends on the shape alone, which
// keeps the backward's sums over groups in a fixed order.
struct GroupSplit {
  GroupSplit(int64_t D, int W) : n_blocks((D + W - 1) / W) {
    constexpr int64_t kMinGroups = 16, kMaxGroupBlocks = 16;
    blocks_per_group = std::min(kMaxGroupBlocks, (n_blocks + kMinGroups - 1) / kMinGroups);
    n_groups = (n_blocks + blocks_per_group - 1) / blocks_per_group;
  }
  int64_t begin(int64_t g) const { return g * blocks_per_group; }
  int64_t end(int64_t g) const { return std::min(n_blocks, (g + 1) * blocks_per_group); }
  int64_t n_blocks, blocks_per_group, n_groups;
};

// Prefetch the [c0, c1) part of one row into cache (one hint per 64-byte line).
template <class T>
inline void prefetch_row(const T* row, int64_t c0, int64_t c1) {
  const char* p = reinterpret_cast<const char*>(row + c0);
  const char* e = reinterpret_cast<const char*>(row + c1);
  for (; p < e; p += 64) __builtin_prefetch(p);
}

// ---------------------------------------------------------------------------------------
// Pieces shared by forward, step and backward, so the backward's recomputed states are
// bit-identical to the forward's.
// ---------------------------------------------------------------------------------------

// For the `lanes` channels at d0: A_scaled[n] = A * L::kDecayScale (what scan_advance
// takes) and, when A is not null, A[n] = -exp(A_log) itself. Computed in double, rounded once.
//   A_log (D,N); A_scaled, A (N) lane vectors.
template <class L>
inline void load_A_block(const typename L::Elem* A_log, int64_t d0, int lanes, int64_t N,
                         typename L::V* A_scaled, typename L::V* A) {
  using T = typename L::Elem;
  T scaled[L::W] = {}, plain[L::W] = {};
  for (int64_t n = 0; n < N; ++n) {
    for (int l = 0; l < lanes; ++l) {
      const double a = -std::exp(double(A_log[(d0 + l) * N + n]));
      scaled[l] = T(a * L::kDecayScale);
      plain[l] = T(a);
    }
    A_scaled[n] = L::from_array(scaled);
    if (A) A[n] = L::from_array(plain);
  }
}

// state slab (D,N) at channel d0 -> h (N) lane vectors (transposes lanes x N).
template <class L>
inline void load_state_block(const typename L::Elem* slab, int64_t d0, int lanes, int64_t N,
                             typename L::V* h) {
  using T = typename L::Elem;
  T tmp[L::W] = {};
  for (int64_t n = 0; n < N; ++n) {
    for (int l = 0; l < lanes; ++l) tmp[l] = slab[(d0 + l) * N + n];
    h[n] = L::from_array(tmp);
  }
}

// h (N) lane vectors -> state slab (D,N) at channel d0.
template <class L>
inline void store_state_block(const typename L::V* h, int64_t d0, int lanes, int64_t N,
                              typename L::Elem* slab) {
  using T = typename L::Elem;
  T tmp[L::W];
  for (int64_t n = 0; n < N; ++n) {
    L::to_array(h[n], tmp);
    for (int l = 0; l < lanes; ++l) slab[(d0 + l) * N + n] = tmp[l];
  }
}

// One recurrence step for W channels (state h (N) in place):
//   decay[n] = exp(delta*A[n]);  h[n] = decay[n]*h[n] + delta_u*B[n];  returns sum_n h[n]*C[n]
// A_scaled (N) = A * L::kDecayScale, from load_A_block.
// Brow, Cm row (N) are shared by all channels. With kSave, h_prev is read from `h_prev`
// and the new state goes to `h` (the backward keeps every state of a chunk), and the decays
// are kept in `decay_out` (N).
template <class L, bool kSave>
inline typename L::V scan_advance(int64_t N, const typename L::V* A_scaled, typename L::V delta,
                                  typename L::V delta_u, const typename L::Elem* Brow,
                                  const typename L::Elem* Crow, const typename L::V* h_prev,
                                  typename L::V* h, typename L::V* decay_out) {
  using V = typename L::V;
  V y0 = L::zero(), y1 = L::zero();  // two chains hide the FMA latency
  int64_t n = 0;
  auto one = [&](int64_t i, V& y) {
    const V decay = L::decay_exp(delta * A_scaled[i]);
    const V hn = L::fma(decay, h_prev[i], delta_u * L::set1(Brow[i]));
    h[i] = hn;
    if constexpr (kSave) decay_out[i] = decay;
    y = L::fma(hn, L::set1(Crow[i]), y);
  };
  for (; n + 2 <= N; n += 2) {
    one(n, y0);
    one(n + 1, y1);
  }
  if (n < N) one(n, y0);
  return y0 + y1;
}

// silu(z) = z * sigmoid(z); the gate is out = y * silu(z).
template <class L>
inline typename L::V silu(typename L::V z) {
  return z * L::sigmoid(z);
}

}  // namespace mg::scan_detail
