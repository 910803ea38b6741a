#include "inference/generate.h"

#include <chrono>

#include "autograd/tape.h"

namespace mg {

GenerateResult generate(const HybridLM& model, const std::vector<int32_t>& prompt, int64_t max_new_tokens,
                        const SamplingOptions& sampling, std::optional<int32_t> eos_id,
                        const std::function<void(int32_t)>& on_token) {
  MG_CHECK(!prompt.empty(), "[generate] the prompt is empty: give at least one token");
  NoGradGuard no_grad;
  using Clock = std::chrono::steady_clock;
  GenerateResult res;
  HybridLM::DecodeState state;
  std::vector<int32_t> history = prompt;
  Sampler sampler(sampling);
  auto t0 = Clock::now();
  Tensor logits;
  // The prompt in one batched pass (GEMM, chunked scan), then one token at a time.
  logits = model.prefill(Tensor::from_ids(prompt, {1, static_cast<int64_t>(prompt.size())}), state);  // (1, V)
  auto t1 = Clock::now();
  res.prompt_s = std::chrono::duration<double>(t1 - t0).count();
  for (int64_t i = 0; i < max_new_tokens; ++i) {
    const int64_t V = logits.dim(-1);
    int32_t next = sampler.sample(std::span<const float>(logits.data<float>(), static_cast<size_t>(V)), history);
    if (eos_id && next == *eos_id) {
      res.stopped_at_eos = true;
      break;
    }
    res.tokens.push_back(next);
    history.push_back(next);
    if (on_token) on_token(next);
    if (i + 1 < max_new_tokens) logits = model.decode_step(Tensor::from_ids({next}, {1}), state);
  }
  res.generate_s = std::chrono::duration<double>(Clock::now() - t1).count();
  return res;
}

}  // namespace mg
