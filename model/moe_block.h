#pragma once
// Mixture-of-Experts mixer (design.md §3), Switch/Mixtral-style top-k routing:
//   logits = router(h)            (M, E), M = B*T tokens, in fp32 (or f64 in gradient checks)
//   p      = softmax(logits)
//   idx    = top-k of p per token (ties: lower expert index first)
//   w      = p[idx] / sum(p[idx])                               renormalized, differentiable
//   out    = sum_j w_j * expert_{idx_j}(h)
//   L_aux  = E * sum_i f_i P_i,  f_i = (#assignments to i)/(M k),  P_i = mean_t p_t,i
//   L_z    = mean_t logsumexp(logits_t)^2
// Dispatch groups tokens by expert (gather rows, one GEMM pair per expert, weighted
// scatter-add), never running every expert on every token. With capacity_factor set, an
// expert takes at most ceil(cf * M * k / E) assignments in token order; the rest are dropped
// (that token gets only its other experts' outputs; the residual carries it) and counted.
#include <memory>
#include <vector>

#include "autograd/module.h"
#include "experiments/config.h"
#include "model/expert_source.h"
#include "model/linear.h"

namespace mg {

class Expert : public Module {
 public:
  Expert(int64_t C, int64_t F, ExpertMlp mlp, DType dtype, bool meta = false);
  Tensor forward(const Tensor& x, Rng* rng, bool training) const;  // (n, C) -> (n, C)
  void init(Rng& rng);
  void release_weights();  // Linear::release_weights on each of up, down, gate
  ExpertMlp mlp;
  Linear up, down;
  std::unique_ptr<Linear> gate;  // swiglu only
};

struct RoutingStats {
  std::vector<int64_t> tokens_per_expert;  // (E) assignments kept
  int64_t dropped = 0;                      // assignments over capacity
  double aux_loss = 0, z_loss = 0;
};

struct MoeOutput {
  Tensor out;    // (B,T,C)
  Tensor aux;    // [] L_aux
  Tensor z;      // [] L_z
  RoutingStats stats;
};

class MoeMixer : public Module {
 public:
  MoeMixer(const ModelConfig& cfg, DType dtype, bool meta = false);
  MoeOutput forward(const Tensor& h, Rng* rng = nullptr, bool training = false) const;  // h (B,T,C)
  void init(Rng& rng);

  // The router's top-k choice for h (B,T,C) -> (B*T*k) expert ids: exactly what forward would
  // pick for this input (no autograd). Used to guess the next MoE layer's experts for prefetch.
  std::vector<int32_t> route(const Tensor& h) const;

  // Inference only: from now on experts come from `source` (model layer index `layer`), and
  // the resident expert weights are freed. Only the experts that tokens are routed to are
  // acquired, at most source->max_acquire() at a time.
  void stream_experts(ExpertSource* source, int layer);
  bool streams_experts() const { return source_ != nullptr; }

  int64_t C, E, k, F;
  std::optional<double> capacity_factor;
  Linear router;
  std::vector<std::unique_ptr<Expert>> experts;

 private:
  ExpertSource* source_ = nullptr;  // not owned
  int layer_index_ = -1;
};

// Top-k expert choice per row of p (M, E): idx (M, k) i32, ties to the lower index.
std::vector<int32_t> topk_experts(const Tensor& p, int64_t k);

namespace ops {
// w (M, k) = p[m, idx[m, j]] / sum_j p[m, idx[m, j]], differentiable in p (M, E).
//   dp[m, idx_j] += (dw_j - sum_l dw_l w_l) / S_m
// `p_host`: p's values on the CPU when the caller already copied them (p on the GPU), so the
// copy is made once per layer; undefined = copy here.
Tensor routing_weights(const Tensor& p, const std::vector<int32_t>& idx, int64_t k, const Tensor& p_host = Tensor());
}  // namespace ops

}  // namespace mg
