// Optimizer kernels (cuda/optimizer_kernels.h): AdamW fp32/fp16 state, SGD, gradient L2 norm.
//
// Bit-identity with the CPU kernels (trainer/adamw.cpp, trainer/sgd.cpp). nvcc contracts
// a * b + c into one FMA by default, which would change roundings, so every float operation
// below is an explicitly rounded intrinsic that mirrors the CPU's instruction:
//   __fmaf_rn  <- _mm256_fmadd_ps / fnmadd (one rounding), or an FMA GCC contracted
//   __fmul_rn  <- _mm256_mul_ps, a separate multiply
//   __fdiv_rn, __fsqrt_rn <- the IEEE divide and square root (no fast approximations)
// The per-step constants are the CPU's own, computed on the host in double
// (trainer/adamw_constants.h).
#include <cuda_fp16.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "cuda/check.h"
#include "cuda/launch.cuh"
#include "cuda/optimizer_kernels.h"
#include "cuda/runtime.h"
#include "trainer/adamw_constants.h"

namespace mg::cuda {

namespace {

// ---- AdamW ------------------------------------------------------------------------------

// The per-step constants, from the expressions the CPU kernels use (trainer/adamw_constants.h).
using AdamWConstants = AdamWStepConstants;

AdamWConstants make_constants(const AdamWArgs& h, float grad_scale) {
  return adamw_step_constants(h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.step, grad_scale);
}

void check_adamw_args(const char* where, const AdamWArgs& h, int64_t n) {
  MG_CHECK(h.step >= 1, "[{}] step = {} must be >= 1 (1-based)", where, h.step);
  MG_CHECK(n >= 0, "[{}] n = {} must be >= 0", where, n);
}

// adamw_param_update: p * decay - step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps), as
//   denom = fmadd(v_sqrt, inv_sqrt_bc2, eps);  fnmadd(step_size, m / denom, p * decay)
// fnmadd(a, b, c) = -(a * b) + c rounded once = fma(-a, b, c) (negation is exact).
__device__ __forceinline__ float adamw_param_update(const AdamWConstants& c, float p, float m,
                                                    float v_sqrt) {
  const float denom = __fmaf_rn(v_sqrt, c.inv_sqrt_bc2, c.eps);
  return __fmaf_rn(-c.step_size, __fdiv_rn(m, denom), __fmul_rn(p, c.decay));
}

// adamw_fp32_span, one element a thread (grid-stride).
__global__ void adamw_fp32_kernel(AdamWConstants c, size_t n, float* __restrict__ param,
                                  const float* __restrict__ grad, float* __restrict__ m,
                                  float* __restrict__ v) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const float g = grad[i];
    const float m_new = __fmaf_rn(c.beta1, m[i], __fmul_rn(c.m_grad_coef, g));
    const float v_new = __fmaf_rn(c.beta2, v[i], __fmul_rn(__fmul_rn(c.v_grad_coef, g), g));
    param[i] = adamw_param_update(c, param[i], m_new, __fsqrt_rn(v_new));
    m[i] = m_new;
    v[i] = v_new;
  }
}

// ---- AdamW, fp16 state ---------------------------------------------------------------------

constexpr int kFp16Block = 128;               // trainer/adamw.h's kAdamWFp16Block
constexpr float kScaleTarget = 32768.0f;      // kAdamWFp16ScaleTarget
constexpr int kCpuLanes = 8;                  // the CPU kernel's AVX2 lanes (see the block max)
constexpr uint32_t kWeyl = 0x9e3779b9u;

// trainer/adamw.cpp's hash32 (lowbias32).
uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  return x ^ (x >> 16);
}

__device__ __forceinline__ float flush_tiny_block_max(float block_max) {
  constexpr float kMinBlockMax = FLT_MIN * kScaleTarget;
  return block_max > 0.0f && block_max < kMinBlockMax ? 0.0f : block_max;
}

// x86 maxps: a > b ? a : b (the second operand when either is NaN).
__device__ __forceinline__ float x86_max(float a, float b) { return a > b ? a : b; }

// The CPU's block maximum over `padded` elements x[0..padded) (the ragged last block padded to
// a multiple of 8 with zero-gradient elements): lane j of an 8-lane accumulator (starting at 0)
// takes x[j], x[j+8], ... in order, then horizontal_max folds lanes (j, j+4), (j, j+2), (0, 1).
// Without NaNs any order gives the same maximum; with one, x86 max is order-dependent, so this
// replays the CPU's exact order (run by one thread, only for blocks holding a NaN).
__device__ float cpu_block_max(const float* x, int padded) {
  float lane[kCpuLanes] = {};
  for (int k = 0; k < padded; ++k) lane[k % kCpuLanes] = x86_max(lane[k % kCpuLanes], x[k]);
  float r[4];
  for (int k = 0; k < 4; ++k) r[k] = x86_max(lane[k], lane[k + 4]);
  return x86_max(x86_max(r[0], r[2]), x86_max(r[1], r[3]));
}

// adamw_fp16_block: one thread block of kFp16Block threads per 128-element state block, one
// element a thread; the new fp32 m and sqrt(v) stay in registers between the two passes.
__global__ void __launch_bounds__(kFp16Block)
    adamw_fp16_kernel(AdamWConstants c, int64_t n, float* __restrict__ param,
                      const float* __restrict__ grad, uint16_t* __restrict__ m_q,
                      uint16_t* __restrict__ v_sqrt_q, float* __restrict__ m_scale,
                      float* __restrict__ v_sqrt_scale, uint32_t step_key) {
  __shared__ float warp_m[kFp16Block / 32], warp_v[kFp16Block / 32];
  __shared__ float all_m[kFp16Block], all_v[kFp16Block];
  __shared__ float inv_m, inv_v;
  const int64_t b = blockIdx.x;
  const int64_t begin = b * kFp16Block;
  const int count = static_cast<int>(min(int64_t{kFp16Block}, n - begin));
  const int padded = (count + kCpuLanes - 1) / kCpuLanes * kCpuLanes;  // CPU: round_up_lanes
  const int t = threadIdx.x;
  const int64_t i = begin + t;

  // beta1 * m_old = code * (m_scale * beta1); beta2 * v_old = (code * (v_sqrt_scale * sqrt(beta2)))^2
  const float m_decay = __fmul_rn(m_scale[b], c.beta1);
  const float v_sqrt_decay = __fmul_rn(v_sqrt_scale[b], c.sqrt_beta2);
  // Elements past `count` are the CPU's zero padding: zero grad, param and codes.
  float g = 0.0f, p = 0.0f;
  unsigned short m_bits = 0, v_bits = 0;
  if (t < count) {
    g = grad[i];
    p = param[i];
    m_bits = m_q[i];
    v_bits = v_sqrt_q[i];
  }
  const float m_code = __half2float(__ushort_as_half(m_bits));
  const float v_code = __half2float(__ushort_as_half(v_bits));
  const float m = __fmaf_rn(m_code, m_decay, __fmul_rn(c.m_grad_coef, g));
  const float v_sqrt_decayed = __fmul_rn(v_code, v_sqrt_decay);
  const float v = __fmaf_rn(v_sqrt_decayed, v_sqrt_decayed,
                            __fmul_rn(__fmul_rn(c.v_grad_coef, g), g));
  const float v_sqrt = __fsqrt_rn(v);
  const float p_new = adamw_param_update(c, p, m, v_sqrt);
  if (t < count) param[i] = p_new;

  // Block maxima of |m| and sqrt(v) over the CPU's (padded) elements.
  const bool part = t < padded;
  const float m_abs = part ? fabsf(m) : 0.0f;  // fabsf clears the sign bit, as the CPU's mask
  const float v_abs = part ? v_sqrt : 0.0f;     // sqrt(v) >= +0: v is a sum of squares
  const bool any_nan = __syncthreads_or(isnan(m_abs) || isnan(v_abs));
  if (!any_nan) {
    // No NaN: max is associative and commutative on these values (all >= +0, none -0), so a
    // tree gives the CPU's lane-order result; the non-participants' 0 is the CPU's start value.
    float mm = m_abs, vv = v_abs;
    for (int off = 16; off > 0; off /= 2) {
      mm = fmaxf(mm, __shfl_xor_sync(0xffffffffu, mm, off));
      vv = fmaxf(vv, __shfl_xor_sync(0xffffffffu, vv, off));
    }
    if ((t & 31) == 0) {
      warp_m[t / 32] = mm;
      warp_v[t / 32] = vv;
    }
  } else {
    all_m[t] = m_abs;
    all_v[t] = v_abs;
  }
  __syncthreads();
  if (t == 0) {
    float m_max, v_max;
    if (!any_nan) {
      m_max = fmaxf(fmaxf(warp_m[0], warp_m[1]), fmaxf(warp_m[2], warp_m[3]));
      v_max = fmaxf(fmaxf(warp_v[0], warp_v[1]), fmaxf(warp_v[2], warp_v[3]));
    } else {
      m_max = cpu_block_max(all_m, padded);
      v_max = cpu_block_max(all_v, padded);
    }
    m_max = flush_tiny_block_max(m_max);
    v_max = flush_tiny_block_max(v_max);
    // Every thread read the old scales above, before the __syncthreads_or.
    m_scale[b] = __fdiv_rn(m_max, kScaleTarget);
    v_sqrt_scale[b] = __fdiv_rn(v_max, kScaleTarget);
    inv_m = m_max > 0.0f ? __fdiv_rn(kScaleTarget, m_max) : 0.0f;
    inv_v = v_max > 0.0f ? __fdiv_rn(kScaleTarget, v_max) : 0.0f;
  }
  __syncthreads();
  if (t < count) {
    // m: round to nearest even (_mm256_cvtps_ph, _MM_FROUND_TO_NEAREST_INT).
    m_q[i] = __half_as_ushort(__float2half_rn(__fmul_rn(m, inv_m)));
    // sqrt(v): stochastic rounding, fp32_to_fp16_stochastic: add the top 13 bits of
    // i * kWeyl + hash(step) (mod 2^32) to the fp32 bits, then convert toward zero.
    // A NaN (inf * 0 in a poisoned block) gets no noise: the GPU's NaN is 0x7fffffff, which
    // the addition would wrap to a negative tiny number (code -0), where the CPU's NaNs
    // (0xffc00000 or a propagated quiet NaN) stay NaN codes.
    const uint32_t weyl = static_cast<uint32_t>(i) * kWeyl + step_key;
    const float x = __fmul_rn(v_sqrt, inv_v);
    const uint32_t noise = isnan(x) ? 0u : weyl >> (32 - 13);
    v_sqrt_q[i] = __half_as_ushort(__float2half_rz(__uint_as_float(__float_as_uint(x) + noise)));
  }
}

// ---- SGD -----------------------------------------------------------------------------------
// trainer/sgd.cpp is plain scalar C++ that GCC (-O3 -march=x86-64-v3, -std=gnu++20, so
// -ffp-contract=fast) contracts into FMAs. Read from its assembly (GCC 12.2, scalar and
// vector loops alike):
//   g   = fma(grad_scale, grad, wd * p)
//   buf = fma(mu, buf_old, keep_g * g)          (not the first step)
//   upd = nesterov ? fma(mu, buf, g) : buf      (mu == 0: upd = g)
//   p   = fma(-lr, upd, p)                      (vfnmadd: p - lr * upd, one rounding)
// A different compiler could contract differently; tests/cuda/test_cuda_optimizer.cpp would
// show it.

struct SgdConstants {
  float lr, wd, mu, keep_g, grad_scale;
};

template <bool kMomentum, bool kFirst, bool kNesterov>
__global__ void sgd_kernel(SgdConstants c, size_t n, float* __restrict__ param,
                           const float* __restrict__ grad, float* __restrict__ buffer) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const float p = param[i];
    const float g = __fmaf_rn(c.grad_scale, grad[i], __fmul_rn(c.wd, p));
    float upd = g;
    if constexpr (kMomentum) {
      const float buf = kFirst ? g : __fmaf_rn(c.mu, buffer[i], __fmul_rn(c.keep_g, g));
      buffer[i] = buf;
      upd = kNesterov ? __fmaf_rn(c.mu, buf, g) : buf;
    }
    param[i] = __fmaf_rn(-c.lr, upd, p);
  }
}

template <bool kMomentum, bool kFirst, bool kNesterov>
void launch_sgd(const SgdConstants& c, size_t n, float* param, const float* grad, float* buffer) {
  sgd_kernel<kMomentum, kFirst, kNesterov>
      <<<grid_for(n), kBlock, 0, compute_stream()>>>(c, n, param, grad, buffer);
}

// ---- gradient L2 norm ----------------------------------------------------------------------

constexpr int kNormThreads = 256;
constexpr int64_t kNormChunk = 65536;  // elements per thread block
constexpr int kFinalThreads = 1024;

struct NormArray {
  const float* data;
  int64_t size;
  int64_t first_chunk;  // index of its first chunk among all arrays' chunks
};

// Fixed-order tree sum of s[0..kThreads) into s[0] (all threads of the block call it).
template <int kThreads>
__device__ void block_tree_sum(double* s) {
  for (int half = kThreads / 2; half > 0; half /= 2) {
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < half) s[threadIdx.x] += s[threadIdx.x + half];
  }
  __syncthreads();
}

// partial[chunk] = sum of squares of one chunk (in double: the squares of floats are exact).
__global__ void __launch_bounds__(kNormThreads)
    sum_squares_chunks(const NormArray* __restrict__ arrays, int n_arrays,
                       double* __restrict__ partial) {
  __shared__ double s[kNormThreads];
  const int64_t chunk = blockIdx.x;
  int lo = 0, hi = n_arrays - 1;  // the last array whose first chunk is <= chunk
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (arrays[mid].first_chunk <= chunk) lo = mid; else hi = mid - 1;
  }
  const NormArray a = arrays[lo];
  const int64_t begin = (chunk - a.first_chunk) * kNormChunk;
  const int64_t count = min(kNormChunk, a.size - begin);
  const float* x = a.data + begin;
  double acc = 0.0;
  for (int64_t k = threadIdx.x; k < count; k += kNormThreads) {
    const double d = x[k];
    acc = __fma_rn(d, d, acc);
  }
  s[threadIdx.x] = acc;
  block_tree_sum<kNormThreads>(s);
  if (threadIdx.x == 0) partial[chunk] = s[0];
}

// *out = the partials summed in a fixed order (one block).
__global__ void __launch_bounds__(kFinalThreads)
    sum_partials(const double* __restrict__ partial, int64_t n, double* __restrict__ out) {
  __shared__ double s[kFinalThreads];
  double acc = 0.0;
  for (int64_t k = threadIdx.x; k < n; k += kFinalThreads) acc += partial[k];
  s[threadIdx.x] = acc;
  block_tree_sum<kFinalThreads>(s);
  if (threadIdx.x == 0) *out = s[0];
}

// A device_alloc'd buffer freed on scope exit (stream-ordered, so after the queued kernels).
struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) : ptr(device_alloc(bytes)) {}
  ~DeviceBuffer() { device_free(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace

void adamw_step_fp32(const AdamWArgs& args, float grad_scale, int64_t n, float* param,
                     const float* grad, float* m, float* v) {
  check_adamw_args("cuda adamw_step_fp32", args, n);
  if (n == 0) return;
  MG_CHECK(param && grad && m && v, "[cuda adamw_step_fp32] null buffer for n = {}", n);
  const AdamWConstants c = make_constants(args, grad_scale);
  const size_t count = static_cast<size_t>(n);
  adamw_fp32_kernel<<<grid_for(count), kBlock, 0, compute_stream()>>>(c, count, param, grad, m, v);
  MG_CUDA_CHECK_LAUNCH("adamw_fp32_kernel");
}

void adamw_step_fp16(const AdamWArgs& args, float grad_scale, int64_t n, float* param,
                     const float* grad, uint16_t* m_q, uint16_t* v_sqrt_q, float* m_scale,
                     float* v_sqrt_scale) {
  check_adamw_args("cuda adamw_step_fp16", args, n);
  if (n == 0) return;
  MG_CHECK(param && grad && m_q && v_sqrt_q && m_scale && v_sqrt_scale,
           "[cuda adamw_step_fp16] null buffer for n = {}", n);
  const AdamWConstants c = make_constants(args, grad_scale);
  const int64_t n_blocks = (n + kFp16Block - 1) / kFp16Block;
  MG_CHECK(n_blocks <= 0x7fffffff, "[cuda adamw_step_fp16] n = {} is too large for one launch", n);
  const uint32_t step_key = hash32(static_cast<uint32_t>(args.step) ^
                                   hash32(static_cast<uint32_t>(uint64_t(args.step) >> 32)));
  adamw_fp16_kernel<<<static_cast<unsigned>(n_blocks), kFp16Block, 0, compute_stream()>>>(
      c, n, param, grad, m_q, v_sqrt_q, m_scale, v_sqrt_scale, step_key);
  MG_CUDA_CHECK_LAUNCH("adamw_fp16_kernel");
}

void sgd_step(const SgdArgs& h, float grad_scale, int64_t n, float* param, const float* grad,
              float* momentum_buffer) {
  MG_CHECK(h.step >= 1, "[cuda sgd] step = {} must be >= 1 (1-based)", h.step);
  MG_CHECK(!h.nesterov || (h.momentum > 0.0f && h.dampening == 0.0f),
           "[cuda sgd] nesterov needs momentum > 0 and dampening = 0");
  MG_CHECK(n >= 0, "[cuda sgd] n = {} must be >= 0", n);
  if (n == 0) return;
  MG_CHECK(param && grad, "[cuda sgd] param and grad must be non-null for n = {}", n);
  const SgdConstants c{h.lr, h.weight_decay, h.momentum, 1.0f - h.dampening, grad_scale};
  const size_t count = static_cast<size_t>(n);
  if (h.momentum == 0.0f) {
    launch_sgd<false, false, false>(c, count, param, grad, nullptr);
  } else {
    MG_CHECK(momentum_buffer, "[cuda sgd] momentum = {} needs a momentum buffer of {} floats",
             h.momentum, n);
    const bool first = h.step == 1;
    if (first && h.nesterov) launch_sgd<true, true, true>(c, count, param, grad, momentum_buffer);
    else if (first) launch_sgd<true, true, false>(c, count, param, grad, momentum_buffer);
    else if (h.nesterov) launch_sgd<true, false, true>(c, count, param, grad, momentum_buffer);
    else launch_sgd<true, false, false>(c, count, param, grad, momentum_buffer);
  }
  MG_CUDA_CHECK_LAUNCH("sgd_kernel");
}

double global_grad_l2_norm(const std::vector<DeviceFloats>& arrays) {
  std::vector<NormArray> table;
  int64_t n_chunks = 0;
  for (const DeviceFloats& a : arrays) {
    MG_CHECK(a.size >= 0, "[cuda grad norm] negative array size {}", a.size);
    if (a.size == 0) continue;
    MG_CHECK(a.data, "[cuda grad norm] null array of {} floats", a.size);
    table.push_back({a.data, a.size, n_chunks});
    n_chunks += (a.size + kNormChunk - 1) / kNormChunk;
  }
  if (n_chunks == 0) return 0.0;
  MG_CHECK(n_chunks <= 0x7fffffff && table.size() <= 0x7fffffff,
           "[cuda grad norm] {} chunks is too many for one launch", n_chunks);
  DeviceBuffer d_table(table.size() * sizeof(NormArray));
  DeviceBuffer d_partial(static_cast<size_t>(n_chunks) * sizeof(double));
  DeviceBuffer d_out(sizeof(double));
  copy_host_to_device(d_table.ptr, table.data(), table.size() * sizeof(NormArray));
  sum_squares_chunks<<<static_cast<unsigned>(n_chunks), kNormThreads, 0, compute_stream()>>>(
      static_cast<const NormArray*>(d_table.ptr), static_cast<int>(table.size()),
      static_cast<double*>(d_partial.ptr));
  MG_CUDA_CHECK_LAUNCH("sum_squares_chunks");
  sum_partials<<<1, kFinalThreads, 0, compute_stream()>>>(static_cast<const double*>(d_partial.ptr),
                                                          n_chunks, static_cast<double*>(d_out.ptr));
  MG_CUDA_CHECK_LAUNCH("sum_partials");
  double total = 0.0;
  copy_device_to_host(&total, d_out.ptr, sizeof(double));
  return std::sqrt(total);
}

}  // namespace mg::cuda
