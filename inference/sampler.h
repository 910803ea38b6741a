#pragma once
// Next-token sampling with the knobs of llama.cpp and HF generate():
//   repeat_penalty (llama.cpp: a logit of a recently seen token is divided by the penalty if
//   positive, multiplied if negative), temperature (0 = greedy argmax), top_k (0 = off),
//   top_p nucleus (1 = off), applied in that order; a seeded RNG makes runs reproducible.
#include <cstdint>
#include <span>
#include <vector>

#include "autograd/rng.h"

namespace mg {

struct SamplingOptions {
  double temperature = 0.8;
  int top_k = 40;
  double top_p = 0.95;
  double repeat_penalty = 1.0;
  int repeat_last_n = 64;  // how many recent tokens the penalty looks at
  uint64_t seed = 1;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& o) : opts_(o), rng_(o.seed) {}
  // logits (V) of the next token; `history` = tokens so far (for the repeat penalty).
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history);

 private:
  SamplingOptions opts_;
  Rng rng_;
};

}  // namespace mg
