#pragma once
// The built-in demo experiment (`magellan demo`, the README's first command): a small hybrid
// Mamba + MoE model learns the induction-heads task of the Mamba paper (Gu & Dao 2023, §4.1)
// from synthetic data generated on the fly: no downloads, no files needed. Sized to finish in
// a few minutes on 2 cores. Measured (2 threads of a Xeon, same seed): eval accuracy 0.45 at
// step 250 and 1.00 from step 500 on (chance: 1/16); d_model 64 needed ~1000 steps for 0.97.
namespace mg::cli {

inline constexpr const char* kDemoConfigYaml = R"(# magellan demo   (the same as: magellan train <this file>)
experiment: demo
seed: 1234
model:
  d_model: 128
  vocab_size: 32
  layer_pattern: "MEME"
  d_state: 16
  n_experts: 4
  top_k: 2
  expert_hidden: 256
data:
  source: synthetic
  task: induction
  seq_len: 64
  n_tokens: 16
optimizer:
  lr: 0.003
  weight_decay: 0.01
scheduler:
  name: cosine
  warmup_steps: 50
  min_lr: 0.0003
training:
  steps: 1000
  batch_size: 16
  log_every: 100
eval:
  every: 250
  batches: 16
checkpoint:
  every: 250
  keep_last: 2
)";

}  // namespace mg::cli
