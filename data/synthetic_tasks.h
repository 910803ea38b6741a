#pragma once
// Synthetic tasks of the Mamba paper (Gu & Dao 2023, arXiv 2312.00752, §4.1 and appendix
// E.1), generated on the fly from a seed: no downloads, endless and exactly reproducible.
//
// Token ids (n = n_tokens data tokens):
//   data tokens  0 .. n-1
//   selective copying: blank (noise) = n, marker = n+1           vocab_size_needed = n+2
//   induction heads:   trigger = n                               vocab_size_needed = n+1
//
// Selective copying (the generator of state-spaces' torch_copying_data with variable=True):
// a sequence of T = L + M tokens. The first L positions are blank except M positions drawn
// uniformly without replacement, which hold M data tokens drawn uniformly (repeats allowed);
// then M markers. targets[L + i] = the i-th data token in position order; every other
// target is -1. The model must recall content at content-dependent positions.
//
// Induction heads: T tokens drawn uniformly from the n data tokens, except that a trigger is
// placed at a uniform position p in [0, T-3] and another at T-1 (the only two triggers);
// tokens[p+1] is the answer (a uniform data token). targets[T-1] = tokens[p+1]; every other
// target is -1. The paper uses n = 16 and trains at T = 256.
//
// Examples: training example i comes from derive_seed(seed, train stream, i), validation
// example j from derive_seed(seed, validation stream, j): fixed and distinct from training.
// An epoch is a nominal `examples_per_epoch` examples (the stream never repeats); the state is
// (seed, examples drawn). Accuracy = fraction of answer positions (targets != -1) whose argmax
// prediction equals the target exactly (Dataset::task_accuracy).
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace mg {

enum class SyntheticTaskKind { SelectiveCopy, Induction };

// Special ids of a task with n data tokens.
inline int32_t selective_copy_blank_id(int n_tokens) { return n_tokens; }
inline int32_t selective_copy_marker_id(int n_tokens) { return n_tokens + 1; }
inline int32_t induction_trigger_id(int n_tokens) { return n_tokens; }

// One example of each task into tokens (T) and targets (T), from a 64-bit example seed.
void generate_selective_copy(uint64_t example_seed, int64_t T, int n_memorize, int n_tokens,
                             int32_t* tokens, int32_t* targets);
void generate_induction(uint64_t example_seed, int64_t T, int n_tokens, int32_t* tokens,
                        int32_t* targets);

class SyntheticTaskDataset : public Dataset {
 public:
  static constexpr uint64_t kStateTag = 0x53594E54;  // "SYNT"
  static constexpr uint64_t kStateVersion = 1;

  // Reads opt.seq_len (T), opt.n_tokens, opt.n_memorize (selective copy), opt.seed and
  // opt.examples_per_epoch; throws mg::Error naming the option that is out of range.
  SyntheticTaskDataset(SyntheticTaskKind task, const DatasetOptions& opt);

  std::string kind() const override;
  std::string describe() const override;
  int64_t seq_len() const override { return T_; }
  int32_t vocab_size_needed() const override;

  Batch next_train_batch(int64_t B) override;
  // Validation examples 0 .. n*B-1 in batches of B (n < 0: the first 1024 examples).
  std::vector<Batch> validation_batches(int64_t B, int64_t n) const override;

  int64_t epoch() const override { return static_cast<int64_t>(drawn_ / per_epoch_); }
  double epoch_progress() const override {
    return static_cast<double>(drawn_) / static_cast<double>(per_epoch_);
  }
  // {tag, version, seed, examples drawn, task, T, n_tokens, n_memorize (0 for induction)}
  std::vector<uint64_t> state() const override;
  void restore(const std::vector<uint64_t>& state) override;

  bool has_task_metric() const override { return true; }

  // Writes example `index` of the training (or validation) stream.
  void example(bool validation, uint64_t index, int32_t* tokens, int32_t* targets) const;

 private:
  uint64_t memorize_in_state() const {
    return task_ == SyntheticTaskKind::SelectiveCopy ? static_cast<uint64_t>(n_memorize_) : 0;
  }

  SyntheticTaskKind task_;
  int64_t T_;
  int n_tokens_, n_memorize_;
  uint64_t seed_;
  uint64_t per_epoch_;
  uint64_t drawn_ = 0;  // training examples handed out so far
};

}  // namespace mg
