#pragma once
// The optimizer kernels on the GPU: AdamW with fp32 or block-scaled fp16 state, SGD with
// momentum, and the global gradient L2 norm. Pointers are device pointers; the kernels run on
// the compute stream (cuda/runtime.h) and return without synchronizing, except the norm, which
// returns its value to the host.
//
// The update math, the order of float operations, the fp16 state format and its stochastic
// rounding are those of the CPU kernels (trainer/adamw.h, trainer/sgd.h), written operation by
// operation with explicitly rounded intrinsics, so the GPU produces the same bits as the CPU
// from the same state: params, m, v, fp16 codes and block scales alike (tests/cuda/
// test_cuda_optimizer.cpp checks this). The one known exception is NaN bits: where the CPU
// has a NaN (param, m, v, a code or a block scale) the GPU has one too, but x86's default NaN
// is 0xffc00000 and the GPU's 0x7fffffff (fp16 codes: 0xfe00 / 0x7fff), so the payload bits
// may differ; the trainer skips steps whose gradient norm is not finite anyway. Block maxima
// with a NaN replay x86's order-dependent max exactly, so which blocks a NaN or inf gradient
// poisons, and how, is the same.
//
// This header is CUDA-free and C++17 (trainer/adamw.h is C++20); the caller validates the
// hyperparameters (mg::validate_adamw_hyper / validate_sgd_hyper), these check only sizes,
// pointers and step >= 1.
#include <cstdint>
#include <vector>

namespace mg::cuda {

// trainer/adamw.h's AdamWHyper, field for field.
struct AdamWArgs {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 1e-2f;  // decoupled: p *= 1 - lr * weight_decay
  int64_t step = 1;            // t, 1-based
};

// One AdamW step with fp32 state (one kernel launch), as mg::adamw_step_fp32.
//   param (n) updated in place      grad (n) read only
//   m (n), v (n) updated in place (zero before step 1)
void adamw_step_fp32(const AdamWArgs& args, float grad_scale, int64_t n, float* param,
                     const float* grad, float* m, float* v);

// One AdamW step with the fp16 state of trainer/adamw.h (128-element blocks, one fp32 scale
// per block for m and one for sqrt(v), sqrt(v) codes rounded stochastically from (step, index),
// scales re-chosen from each block's new absolute maximum), as mg::adamw_step_fp16: one fused
// kernel, one thread block per 128-element block.
//   param (n) updated in place      grad (n) read only
//   m_q (n), v_sqrt_q (n): IEEE fp16 bits      m_scale, v_sqrt_scale: (ceil(n / 128))
void adamw_step_fp16(const AdamWArgs& args, float grad_scale, int64_t n, float* param,
                     const float* grad, uint16_t* m_q, uint16_t* v_sqrt_q, float* m_scale,
                     float* v_sqrt_scale);

// trainer/sgd.h's SgdHyper, field for field.
struct SgdArgs {
  float lr = 1e-2f;
  float momentum = 0.0f;
  float dampening = 0.0f;
  float weight_decay = 0.0f;  // L2: added to the gradient
  bool nesterov = false;
  int64_t step = 1;  // 1-based; step 1 initialises the momentum buffer to g
};

// One SGD step, as mg::sgd_step (one kernel launch).
//   param (n) updated in place      grad (n) read only
//   momentum_buffer (n) updated in place; may be null when args.momentum == 0
void sgd_step(const SgdArgs& args, float grad_scale, int64_t n, float* param, const float* grad,
              float* momentum_buffer);

// One device array of floats.
struct DeviceFloats {
  const float* data = nullptr;
  int64_t size = 0;
};

// sqrt(sum_a sum_i a[i]^2) over all arrays together, accumulated in double: each array in
// fixed chunks of 65536 elements, one thread block a chunk summing in a fixed tree order, then
// the chunk partials in a fixed order (no atomics), so the result is the same on every run.
// Agrees with mg::global_grad_l2_norm to rounding of the double sums (~1e-15 relative; the
// squares themselves are exact in double). Synchronizes: returns the value to the host.
double global_grad_l2_norm(const std::vector<DeviceFloats>& arrays);

}  // namespace mg::cuda
