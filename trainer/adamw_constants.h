#pragma once
// AdamW's per-step constants, computed once per step in double like PyTorch's Python floats
// (bias_correction1 = 1 - beta1**step, ...). The CPU kernels (trainer/adamw.cpp) and the GPU
// kernels (cuda/optimizer_kernels.cu) both start from these, so the two give the same bits.
// grad_scale is folded into the gradient coefficients (a multiply saved per element).
// Header-only and C++17: nvcc compiles the GPU side. None of the expressions can change under
// FMA contraction: the one multiply-add, 1 - lr * wd, multiplies two floats, exact in double.
#include <cmath>
#include <cstdint>

namespace mg {

struct AdamWStepConstants {
  float beta1, beta2, sqrt_beta2;
  float m_grad_coef;   // (1 - beta1) * grad_scale
  float v_grad_coef;   // (1 - beta2) * grad_scale^2
  float decay;         // 1 - lr * weight_decay
  float step_size;     // lr / (1 - beta1^t)
  float inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^t)
  float eps;
};

inline AdamWStepConstants adamw_step_constants(float lr, float beta1, float beta2, float eps, float weight_decay,
                                               int64_t step, float grad_scale) {
  const double t = static_cast<double>(step), gs = grad_scale;
  const double bc1 = 1.0 - std::pow(double(beta1), t);
  const double bc2 = 1.0 - std::pow(double(beta2), t);
  AdamWStepConstants c;
  c.beta1 = beta1;
  c.beta2 = beta2;
  c.sqrt_beta2 = static_cast<float>(std::sqrt(double(beta2)));
  c.m_grad_coef = static_cast<float>((1.0 - beta1) * gs);
  c.v_grad_coef = static_cast<float>((1.0 - beta2) * gs * gs);
  c.decay = static_cast<float>(1.0 - double(lr) * double(weight_decay));
  c.step_size = static_cast<float>(lr / bc1);
  c.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  c.eps = eps;
  return c;
}

}  // namespace mg
