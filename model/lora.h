#pragma once
// Turning a model into a QLoRA / LoRA / full fine-tuning setup (design.md §5):
//   qlora.enabled  every Linear's base weight becomes frozen NF4 (lm_head excepted, see below),
//                  and so does embedding.weight (the tied head too) unless
//                  qlora.quantize_embedding is false
//   lora.enabled   adapters on every Linear whose dotted name matches lora.target_modules;
//                  every other parameter frozen unless it matches lora.trainable
//   neither        plain float32 training: everything trainable
// Patterns are config.h's pattern_matches (substring glob), matched against module names
// ("layers.0.mixer.in_proj") for target_modules and parameter names ("layers.0.norm.weight")
// for trainable. Every pattern is checked before the model is touched, so a bad config
// leaves the model as it was.
//
// lm_head (untied models only) stays float32 under QLoRA and takes no adapter, by policy:
// keeping the head in full precision is bitsandbytes' default (llm_int8_skip_modules =
// ["lm_head"]). HybridLM runs the untied head through Linear::forward, so lifting this policy
// needs no change there.
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "experiments/config.h"
#include "model/hybrid_lm.h"

namespace mg {

struct LoraReport {
  std::vector<std::string> adapted;    // module names given adapters, in model order
  int quantized = 0;                   // NF4 weights afterwards: Linear bases + the embedding
  bool embedding_quantized = false;    // embedding.weight is NF4 afterwards
  int64_t trainable_params = 0, frozen_params = 0;  // element counts (NF4 bases count as frozen)
  std::string summary() const;         // one line for the log
};

// Deterministic from `seed` (the adapters' A matrices are drawn in model order from it).
// Throws mg::Error, before changing anything, on a target_modules pattern that matches no
// Linear, a trainable pattern that matches no parameter, a trainable pattern naming an NF4
// base weight (it gets no gradient: train an adapter on it instead) or an NF4 embedding (set
// qlora.quantize_embedding: false), or an lm_head target.
LoraReport apply_lora(HybridLM& model, const LoraConfig& lora, const QloraConfig& qlora, uint64_t seed);

// Adapter parameter names: "layers.0.mixer.in_proj" -> "layers.0.mixer.in_proj.lora_A".
std::string lora_A_name(std::string_view module);
std::string lora_B_name(std::string_view module);
bool is_adapter_param(std::string_view param_name);  // ends in .lora_A or .lora_B

// The parameters the optimizer updates, by name, in model order.
std::vector<std::pair<std::string, Tensor>> trainable_parameters(HybridLM& model);

// --- merging (the merge-lora command, and checking an adapter against its merge) ---------------
struct MergeReport {
  int merged = 0;
  int dequantized = 0;  // NF4 weights without an adapter (and the embedding) made float32
  // Of re-quantizing the merged weights to NF4 (when requested), over all merged elements:
  double max_abs_error = 0, rms_error = 0, rms_weight = 0;
};
// W += scale * B A for every adapter (NF4 bases are dequantized to float32 first), then the
// adapters are dropped: the model becomes a plain one. Without requantize the whole model is
// then float32: NF4 weights that had no adapter (and an NF4 embedding) are dequantized too.
// With requantize, the merged weights are quantized to NF4 again and the error
// (nf4_error_stats) reported; the other NF4 weights stay as they are.
MergeReport merge_all_lora(HybridLM& model, bool requantize);
// Merge keeping the adapters (Linear::merge_lora), so unmerge_adapters can subtract them
// again. Return the number of layers merged / unmerged.
int merge_adapters(HybridLM& model);
int unmerge_adapters(HybridLM& model);

}  // namespace mg
