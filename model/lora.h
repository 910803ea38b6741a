#pragma once
// Turning a model into a QLoRA / LoRA / full fine-tuning setup (design.md §5):
//   qlora.enabled  every Linear's base weight becomes frozen NF4
//   lora.enabled   adapters on every Linear whose dotted name matches lora.target_modules;
//                  every other parameter frozen unless it matches lora.trainable
//   neither        plain float32 training: everything trainable
#include <string>
#include <vector>

#include "experiments/config.h"
#include "model/hybrid_lm.h"

namespace mg {

struct LoraReport {
  std::vector<std::string> adapted;    // module names given adapters
  int quantized = 0;                   // Linears turned NF4
  int64_t trainable_params = 0, frozen_params = 0;  // element counts (NF4 bases count as frozen)
  std::string summary() const;         // one line for the log
};

LoraReport apply_lora(HybridLM& model, const LoraConfig& lora, const QloraConfig& qlora, uint64_t seed);

// The parameters the optimizer updates, by name, in model order.
std::vector<std::pair<std::string, Tensor>> trainable_parameters(HybridLM& model);

struct MergeReport {
  int merged = 0;
  double max_abs_error = 0, rms_error = 0;  // of re-quantizing to NF4 (when requested)
};
// W += scale * B A for every adapter (NF4 bases are dequantized to float32 first); with
// requantize, the merged weights are quantized to NF4 again and the error reported.
MergeReport merge_all_lora(HybridLM& model, bool requantize);

}  // namespace mg
