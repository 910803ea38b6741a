#pragma once
// Fused AdamW kernels (fp32 state and fp16 state) and the global gradient-norm clip helpers.
// Raw kernels over one flat array each; the trainer loops them over Parameters.
//
// AdamW follows torch.optim.AdamW (Loshchilov & Hutter 2019, decoupled weight decay), with
// t = hyper.step (1-based) and g = grad_scale * grad:
//   p -= lr * weight_decay * p
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g^2
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// Each kernel is one pass over memory: param, grad and the state are each read once and
// written once (grad only read), AVX2 vectorised, OpenMP threaded over fixed chunks, so the
// result does not depend on the thread count.
//
// ---- FP16 state format (what checkpoints store for optimizer "adamw_fp16") ----------------
// Plain fp16 m and v lose small gradients: v's increment (1 - beta2) g^2 is an fp16 subnormal
// (few significant bits) for |g| < 0.25 and rounds to zero for |g| < 5.5e-3, and m turns
// subnormal below 6.1e-5. So, as in blockwise 8-bit Adam
// (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization"), the state is split
// into blocks of kAdamWFp16Block = 128 consecutive elements (the last block may be shorter),
// each with its own fp32 scale, and the second moment is stored as its square root:
//   m[i]       = fp16_to_fp32(m_q[i])      * m_scale[i / 128]
//   sqrt(v[i]) = fp16_to_fp32(v_sqrt_q[i]) * v_sqrt_scale[i / 128]         (v_sqrt_q >= 0)
// sqrt(v) has the dynamic range of |g| instead of g^2 (half the exponent span), and it is
// what the update divides by anyway. After each step a block's scale is re-chosen from its new
// absolute maximum so that the maximum maps to kAdamWFp16ScaleTarget = 32768 (2^15):
//   scale = absmax / 32768,  q = fp16(x / scale)
// so every element down to absmax * 2^-29 is an fp16 normal number with 11 significant bits.
// m codes round to nearest even. sqrt(v) codes round stochastically (unbiased): with
// beta2 = 0.999 one step moves sqrt(v) by ~5e-4 relative, below half an fp16 ulp, and
// round-to-nearest then freezes or biases v (measured: -4% in v after 4000 steps in a block
// whose largest element is steady). The rounding noise is a fixed function of (step, index of
// the element in the array passed), so runs and resumes are bit-exact and independent of the
// thread count.
// An all-zero block has scale 0 and codes 0 (the initial state: everything zero).
// The update of step t uses the new m and sqrt(v) in fp32 before they are rounded; rounding
// affects only what step t+1 reads. A non-finite gradient element poisons its block's scale
// (the trainer skips steps whose gradient norm is not finite).
#include <cstdint>
#include <span>

namespace mg {

struct AdamWHyper {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 1e-2f;  // decoupled: p *= 1 - lr * weight_decay
  int64_t step = 1;            // t, 1-based (bias corrections 1 - beta^t)
};

// Throws mg::Error for out-of-range hyperparameters (betas outside [0, 1), eps <= 0, step < 1).
void validate_adamw_hyper(const AdamWHyper& hyper);

// One AdamW step with fp32 state.
//   param (n) updated in place      grad (n) read only
//   m (n), v (n) first and second moments, updated in place (zero-initialised before step 1)
void adamw_step_fp32(const AdamWHyper& hyper, float grad_scale, int64_t n, float* param,
                     const float* grad, float* m, float* v);

// ---- FP16 state ---------------------------------------------------------------------------
inline constexpr int64_t kAdamWFp16Block = 128;
inline constexpr float kAdamWFp16ScaleTarget = 32768.0f;

// Sizes of the fp16 state of an n-element parameter.
struct AdamWFp16Layout {
  int64_t n = 0;         // elements: length of m_q and v_sqrt_q
  int64_t n_blocks = 0;  // ceil(n / kAdamWFp16Block): length of m_scale and v_sqrt_scale

  static AdamWFp16Layout for_size(int64_t n);
  int64_t state_bytes() const { return 2 * 2 * n + 2 * 4 * n_blocks; }
};

// Views of caller-owned state buffers (zero-fill all four before step 1).
struct AdamWFp16State {
  uint16_t* m_q = nullptr;        // (n) IEEE fp16 bits
  uint16_t* v_sqrt_q = nullptr;   // (n) IEEE fp16 bits, non-negative
  float* m_scale = nullptr;       // (n_blocks)
  float* v_sqrt_scale = nullptr;  // (n_blocks)
};

// One AdamW step with the fp16 state above; math in fp32, master params fp32.
//   param (n) updated in place      grad (n) read only
void adamw_step_fp16(const AdamWHyper& hyper, float grad_scale, int64_t n, float* param,
                     const float* grad, const AdamWFp16State& state);

// Decode the fp16 state into fp32 m (n) and v (n) (v = square of the decoded sqrt(v)); the
// state is only read. Used to switch state precision, to inspect, and by tests.
void adamw_fp16_state_decode(int64_t n, const AdamWFp16State& state, float* m, float* v);
// Encode fp32 m (n) and v (n) (v >= 0) into the fp16 state, choosing scales as a step does
// (both codes round to nearest here: a one-off conversion has no drift to avoid).
void adamw_fp16_state_encode(int64_t n, const float* m, const float* v,
                             const AdamWFp16State& state);

// IEEE binary16 <-> binary32, round to nearest even, subnormals kept (F16C semantics).
uint16_t fp32_to_fp16(float x);
float fp16_to_fp32(uint16_t h);
void fp32_to_fp16(int64_t n, const float* in, uint16_t* out);  // in (n) -> out (n)
void fp16_to_fp32(int64_t n, const uint16_t* in, float* out);  // in (n) -> out (n)

// ---- Global gradient-norm clipping (torch.nn.utils.clip_grad_norm_) ------------------------
// L2 norm over all arrays together: sqrt(sum_a sum_i a[i]^2), accumulated in double over
// fixed 16384-element chunks (threaded) whose partial sums are added in a fixed order, so the
// result is the same for any thread count (needed for bit-exact resume).
double global_grad_l2_norm(std::span<const std::span<const float>> arrays);

// PyTorch's clip coefficient: min(1, max_norm / (norm + 1e-6)) (NaN for a NaN norm, 0 for an
// infinite one, as torch). Pass it as grad_scale.
float clip_coefficient(double norm, double max_norm);

}  // namespace mg
