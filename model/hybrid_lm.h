#pragma once
// The hybrid Mamba + MoE language model (design.md §3):
//   x = embedding.weight[tokens]                             (B,T,C)
//   for each layer i (kind 'M' Mamba or 'E' MoE):  x = x + mixer_i(rmsnorm_i(x))
//   logits = rmsnorm_f(x) @ embedding.weight^T                (tied; lm_head when untied)
//   loss = CE + aux_loss_coef * mean_MoE(L_aux) + z_loss_coef * mean_MoE(L_z)
// Under QLoRA the embedding table may be frozen NF4 (model/embedding.h), for the lookup and
// the tied head alike.
#include <memory>
#include <vector>

#include "autograd/module.h"
#include "experiments/config.h"
#include "model/embedding.h"
#include "model/mamba_block.h"
#include "model/moe_block.h"
#include "model/rmsnorm.h"

namespace mg {

class HybridLayer : public Module {
 public:
  HybridLayer(const ModelConfig& cfg, char kind, DType dtype, bool meta);
  char kind;
  RMSNorm norm;
  std::unique_ptr<MambaMixer> mamba;  // kind 'M'
  std::unique_ptr<MoeMixer> moe;      // kind 'E'
};

struct ForwardOptions {
  bool training = false;
  bool want_logits = true;
  GradCheckpointing checkpointing = GradCheckpointing::None;
  int checkpoint_every_n = 2;
  Rng* rng = nullptr;  // LoRA dropout
};

struct LmOutput {
  Tensor logits;   // (B*T, V) when requested
  Tensor loss;     // [] total (when targets were given)
  Tensor ce_loss;  // [] cross-entropy alone
  Tensor aux_loss, z_loss;  // [] means over MoE layers (undefined without MoE layers)
  std::vector<RoutingStats> routing;  // one per MoE layer, in layer order
};

class HybridLM : public Module {
 public:
  // meta = build the exact parameter list without allocating (magellan info).
  HybridLM(const ModelConfig& cfg, DType dtype = DType::F32, bool meta = false);

  // Fresh weights per design.md §3, from `seed`. With quantize_linears (QLoRA from scratch),
  // the embedding (unless quantize_embedding is false: qlora.quantize_embedding) is quantized
  // to NF4 right after it is drawn, and each layer's Linears (lm_head excepted, as apply_lora)
  // right after that layer is drawn, so only one layer's float32 weights are ever resident
  // (large Storage is lazily mmapped, and quantizing unmaps it). Same draws, same order: the
  // result equals init(seed) followed by quantize() on the embedding and quantize_base on
  // those Linears, which is what apply_lora does.
  void init(uint64_t seed, bool quantize_linears = false, bool quantize_embedding = true);

  // tokens, targets: I32 (B,T); targets may be undefined (then no loss).
  LmOutput forward(const Tensor& tokens, const Tensor& targets, const ForwardOptions& opts = {}) const;

  // Per-layer recurrent state for generation.
  struct DecodeState {
    std::vector<MambaState> mamba;  // indexed by layer (unused for MoE layers)
  };
  // One token per sequence: tokens I32 (B) -> logits (B, V). O(1) in the sequence length.
  // With streamed experts whose source wants prefetch, each MoE layer's experts are guessed
  // as early as possible: its router applied to the residual stream before the layers in
  // between have run (they change it little), so reads overlap with their compute.
  Tensor decode_step(const Tensor& tokens, DecodeState& state) const;
  // Starts decoding with a whole prompt: tokens I32 (B,T) -> logits (B, V) of the last
  // position, leaving `state` (fresh) where T decode_steps would; the layers run batched
  // (GEMM, chunked scan) instead of token by token.
  Tensor prefill(const Tensor& tokens, DecodeState& state) const;

  // Inference with expert streaming (model/expert_source.h): every MoE layer takes its
  // experts from `source` and its resident expert weights are freed. Call before loading a
  // checkpoint to never allocate them (read_model skips the freed, meta, weights).
  void stream_experts(ExpertSource* source);

  // The LM head, the one place logits are made: h (M, C) -> logits (M, V) through the tied
  // embedding (float32 or NF4, Embedding::attend) or the untied lm_head. `rng` draws the LoRA
  // dropout of an adapted lm_head when training.
  Tensor head(const Tensor& h, Rng* rng = nullptr, bool training = false) const;

  const ModelConfig& config() const { return cfg_; }
  DType dtype() const { return dtype_; }

  Embedding embedding;
  std::vector<std::unique_ptr<HybridLayer>> layers;
  RMSNorm norm_f;
  std::unique_ptr<Linear> lm_head;  // untied only

 private:
  Tensor run_layer(int i, const Tensor& x, const ForwardOptions& opts, std::vector<Tensor>& extra,
                   std::vector<RoutingStats>& stats) const;
  ModelConfig cfg_;
  DType dtype_;
  ExpertSource* expert_source_ = nullptr;  // not owned
};

// Visits every Linear in the model with its dotted name ("layers.0.mixer.in_proj"): the
// units LoRA targets and QLoRA quantizes.
void visit_linears(HybridLM& model, const std::function<void(const std::string&, Linear&)>& fn);
// The same for one layer; `prefix` is "layers.<i>.mixer.".
void visit_layer_linears(HybridLayer& layer, const std::string& prefix,
                         const std::function<void(const std::string&, Linear&)>& fn);

}  // namespace mg
