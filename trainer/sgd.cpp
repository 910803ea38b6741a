#include "trainer/sgd.h"

#include <cmath>

#include "autograd/error.h"

namespace mg {

void validate_sgd_hyper(const SgdHyper& h) {
  MG_CHECK(std::isfinite(h.lr) && h.lr >= 0.0f, "[sgd] lr = {} must be finite and >= 0", h.lr);
  MG_CHECK(std::isfinite(h.momentum) && h.momentum >= 0.0f,
           "[sgd] momentum = {} must be finite and >= 0", h.momentum);
  MG_CHECK(std::isfinite(h.dampening), "[sgd] dampening = {} must be finite", h.dampening);
  MG_CHECK(std::isfinite(h.weight_decay) && h.weight_decay >= 0.0f,
           "[sgd] weight_decay = {} must be finite and >= 0", h.weight_decay);
  MG_CHECK(!h.nesterov || (h.momentum > 0.0f && h.dampening == 0.0f),
           "[sgd] nesterov momentum requires momentum > 0 and dampening = 0 (got momentum {}, "
           "dampening {}); set them or turn nesterov off",
           h.momentum, h.dampening);
  MG_CHECK(h.step >= 1, "[sgd] step = {} must be >= 1 (1-based step counter)", h.step);
}

// The loop bodies are plain element-wise code with no cross-element dependence; GCC
// vectorises them at -O3 -march=x86-64-v3, and the pass is memory bound anyway.
void sgd_step(const SgdHyper& h, float grad_scale, int64_t n, float* param, const float* grad,
              float* momentum_buffer) {
  validate_sgd_hyper(h);
  MG_CHECK(n >= 0, "[sgd] n = {} must be >= 0", n);
  if (n == 0) return;
  MG_CHECK(param && grad, "[sgd] param and grad must be non-null for n = {}", n);
  const float lr = h.lr, wd = h.weight_decay, mu = h.momentum;
  const bool parallel = n >= (int64_t{1} << 15);  // below this, thread start-up dominates

  if (mu == 0.0f) {
#pragma omp parallel for simd schedule(static) if (parallel)
    for (int64_t i = 0; i < n; ++i) {
      const float g = grad_scale * grad[i] + wd * param[i];
      param[i] -= lr * g;
    }
    return;
  }

  MG_CHECK(momentum_buffer, "[sgd] momentum = {} needs a momentum buffer of {} floats", mu, n);
  const bool first = h.step == 1;
  const float keep_g = 1.0f - h.dampening;
  const bool nesterov = h.nesterov;
#pragma omp parallel for simd schedule(static) if (parallel)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad_scale * grad[i] + wd * param[i];
    // PyTorch: buf = clone(g) on the first step, else buf.mul_(mu).add_(g, alpha=1-dampening).
    const float buf = first ? g : mu * momentum_buffer[i] + keep_g * g;
    momentum_buffer[i] = buf;
    param[i] -= lr * (nesterov ? g + mu * buf : buf);
  }
}

}  // namespace mg
