#pragma once
// SGD with optional momentum, exactly torch.optim.SGD (foreach=False, maximize=False):
//   g = grad_scale * grad + weight_decay * p          (L2 penalty added to the gradient,
//                                                       not decoupled as in AdamW)
//   if momentum != 0:
//     buf = g                                   on the first step (step == 1)
//     buf = momentum * buf + (1 - dampening) * g  afterwards
//     g = nesterov ? g + momentum * buf : buf
//   p -= lr * g
// A raw kernel over one flat array; the trainer loops it over Parameters.
#include <cstdint>

namespace mg {

struct SgdHyper {
  float lr = 1e-2f;
  float momentum = 0.0f;      // 0 = plain SGD, no buffer needed
  float dampening = 0.0f;     // PyTorch default 0
  float weight_decay = 0.0f;  // L2: added to the gradient
  bool nesterov = false;      // needs momentum > 0 and dampening == 0 (as PyTorch checks)
  int64_t step = 1;           // 1-based; step 1 initialises the momentum buffer to g
};

// Throws mg::Error for invalid hyperparameters (negative lr/momentum, nesterov misuse).
void validate_sgd_hyper(const SgdHyper& hyper);

// One SGD step over n elements, threaded with OpenMP. grad_scale multiplies the gradient
// first (clip coefficient, 1/accumulation steps).
//   param           (n)  updated in place
//   grad            (n)  read only
//   momentum_buffer (n)  updated in place; may be null when hyper.momentum == 0
void sgd_step(const SgdHyper& hyper, float grad_scale, int64_t n, float* param, const float* grad,
              float* momentum_buffer);

}  // namespace mg
