#pragma once
// The optimizer over a model's trainable parameters: AdamW (fp16 or fp32 state, fused
// kernels in trainer/adamw.h) or SGD (trainer/sgd.h), with decoupled weight decay skipped for
// parameters matching optimizer.no_decay. State is saved to and loaded from a checkpoint
// group, by parameter name, so a resumed run continues bit-exactly.
//
// The state lives on the parameters' device (all trainable parameters share one): on the GPU
// the step and the gradient norm run there (cuda/optimizer_kernels.h, bit-identical to the CPU
// kernels), and save/load copy the state through the host, so a checkpoint has the same
// datasets whichever device wrote it and loads on either.
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.h"
#include "checkpoints/h5_file.h"
#include "experiments/config.h"

namespace mg {

class Optimizer {
 public:
  Optimizer(const OptimizerConfig& cfg, std::vector<std::pair<std::string, Tensor>> params);

  // One update of every parameter that has a gradient; g is scaled by grad_scale first
  // (1/accumulation * clip coefficient). Increments step_count().
  void step(double lr, float grad_scale);

  // sqrt(sum of squared gradients) over all parameters (before scaling).
  double grad_norm() const;
  void zero_grad();

  int64_t step_count() const { return step_; }
  int64_t num_parameters() const;
  int64_t state_bytes() const;
  const std::vector<std::pair<std::string, Tensor>>& params() const { return params_; }

  void save(H5File& f, const std::string& group) const;
  void load(const H5File& f, const std::string& group);  // names and sizes must match

 private:
  // 1-d tensors on device_; undefined when the optimizer does not use them.
  struct State {
    bool decay = true;
    Tensor m, v;                    // F32: fp32 AdamW / SGD momentum (m)
    Tensor m_q, v_sqrt_q;           // F16: fp16 AdamW codes
    Tensor m_scale, v_sqrt_scale;   // F32: fp16 AdamW per-block scales
  };
  OptimizerConfig cfg_;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<State> state_;
  Device device_ = Device::CPU;  // where the parameters, their gradients and the state live
  int64_t step_ = 0;
};

}  // namespace mg
