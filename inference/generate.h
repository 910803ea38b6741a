#pragma once
// Recurrent generation: the prompt is fed token by token through HybridLM::decode_step (the
// same layer code as training; Mamba carries its conv and SSM state, so each new token costs
// O(1) in the sequence length), then tokens are sampled until -n or an end-of-text id.
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "inference/sampler.h"
#include "model/hybrid_lm.h"

namespace mg {

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated only (not the prompt)
  double prompt_s = 0, generate_s = 0;
  bool stopped_at_eos = false;
};

// on_token is called after each generated token (for streaming output).
GenerateResult generate(const HybridLM& model, const std::vector<int32_t>& prompt, int64_t max_new_tokens,
                        const SamplingOptions& sampling, std::optional<int32_t> eos_id,
                        const std::function<void(int32_t)>& on_token = {});

}  // namespace mg
