#include "data/synthetic_tasks.h"

#include <algorithm>
#include <numeric>

#include <fmt/format.h>

#include "autograd/error.h"

namespace mg {

namespace {
constexpr uint64_t kTrainStream = 0x747261696E;  // "train"
constexpr uint64_t kValStream = 0x76616C;        // "val"
// validation_batches(B, n < 0): this many examples (a fixed eval set of a useful size).
constexpr int64_t kDefaultValidationExamples = 1024;
}  // namespace

void generate_selective_copy(uint64_t example_seed, int64_t T, int n_memorize, int n_tokens,
                             int32_t* tokens, int32_t* targets) {
  const int64_t M = n_memorize, L = T - M;
  SplitMix64 rng(example_seed);
  // M distinct positions among the first L: the first M steps of a Fisher-Yates shuffle.
  std::vector<int64_t> slots(static_cast<size_t>(L));
  std::iota(slots.begin(), slots.end(), int64_t{0});
  for (int64_t i = 0; i < M; ++i) {
    auto j = i + static_cast<int64_t>(rng.below(static_cast<uint64_t>(L - i)));
    std::swap(slots[static_cast<size_t>(i)], slots[static_cast<size_t>(j)]);
  }
  std::sort(slots.begin(), slots.begin() + M);

  std::fill(tokens, tokens + L, selective_copy_blank_id(n_tokens));
  std::fill(tokens + L, tokens + T, selective_copy_marker_id(n_tokens));
  std::fill(targets, targets + T, -1);
  for (int64_t i = 0; i < M; ++i) {
    auto data = static_cast<int32_t>(rng.below(static_cast<uint64_t>(n_tokens)));
    tokens[slots[static_cast<size_t>(i)]] = data;
    targets[L + i] = data;  // recalled, in order, at the i-th marker
  }
}

void generate_induction(uint64_t example_seed, int64_t T, int n_tokens, int32_t* tokens,
                        int32_t* targets) {
  SplitMix64 rng(example_seed);
  for (int64_t t = 0; t < T; ++t)
    tokens[t] = static_cast<int32_t>(rng.below(static_cast<uint64_t>(n_tokens)));
  std::fill(targets, targets + T, -1);
  const auto p = static_cast<int64_t>(rng.below(static_cast<uint64_t>(T - 2)));  // [0, T-3]
  const int32_t trigger = induction_trigger_id(n_tokens);
  tokens[p] = trigger;
  tokens[T - 1] = trigger;
  targets[T - 1] = tokens[p + 1];  // p+1 <= T-2: a data token, never the final trigger
}

SyntheticTaskDataset::SyntheticTaskDataset(SyntheticTaskKind task, const DatasetOptions& opt)
    : task_(task),
      T_(opt.seq_len),
      n_tokens_(opt.n_tokens),
      n_memorize_(opt.n_memorize),
      seed_(opt.seed),
      per_epoch_(static_cast<uint64_t>(std::max<int64_t>(opt.examples_per_epoch, 1))) {
  MG_CHECK(opt.n_tokens >= 2, "[data.n_tokens] synthetic tasks need at least 2 data tokens, got {}",
           opt.n_tokens);
  MG_CHECK(opt.examples_per_epoch >= 1, "[data] examples_per_epoch must be >= 1, got {}",
           opt.examples_per_epoch);
  if (task == SyntheticTaskKind::SelectiveCopy) {
    MG_CHECK(opt.n_memorize >= 1, "[data.n_memorize] must be >= 1, got {}", opt.n_memorize);
    MG_CHECK(opt.seq_len >= 2 * static_cast<int64_t>(opt.n_memorize),
             "[data.seq_len] selective_copy needs seq_len >= 2 * n_memorize (L = seq_len - M "
             "slots for M data tokens, then M markers); got seq_len {} with n_memorize {}",
             opt.seq_len, opt.n_memorize);
  } else {
    MG_CHECK(opt.seq_len >= 3, "[data.seq_len] induction needs seq_len >= 3 (trigger, answer, "
             "final trigger), got {}", opt.seq_len);
  }
}

std::string SyntheticTaskDataset::kind() const {
  return task_ == SyntheticTaskKind::SelectiveCopy ? "selective_copy" : "induction";
}

int32_t SyntheticTaskDataset::vocab_size_needed() const {
  return task_ == SyntheticTaskKind::SelectiveCopy ? n_tokens_ + 2 : n_tokens_ + 1;
}

void SyntheticTaskDataset::example(bool validation, uint64_t index, int32_t* tokens,
                                   int32_t* targets) const {
  uint64_t s = derive_seed(seed_, validation ? kValStream : kTrainStream, index);
  if (task_ == SyntheticTaskKind::SelectiveCopy) {
    generate_selective_copy(s, T_, n_memorize_, n_tokens_, tokens, targets);
  } else {
    generate_induction(s, T_, n_tokens_, tokens, targets);
  }
}

Batch SyntheticTaskDataset::next_train_batch(int64_t B) {
  MG_CHECK(B >= 1, "[SyntheticTaskDataset] batch size must be >= 1, got {}", B);
  Batch batch(B, T_);
  for (int64_t b = 0; b < B; ++b) example(false, drawn_++, batch.tokens_row(b), batch.targets_row(b));
  return batch;
}

std::vector<Batch> SyntheticTaskDataset::validation_batches(int64_t B, int64_t n) const {
  MG_CHECK(B >= 1, "[SyntheticTaskDataset] batch size must be >= 1, got {}", B);
  const int64_t rows = n < 0 ? kDefaultValidationExamples : n * B;
  return batches_of_rows(rows, B, T_, -1, 0, [&](int64_t j, int32_t* tokens, int32_t* targets) {
    example(true, static_cast<uint64_t>(j), tokens, targets);
  });
}

std::vector<uint64_t> SyntheticTaskDataset::state() const {
  return {kStateTag,
          kStateVersion,
          seed_,
          drawn_,
          static_cast<uint64_t>(task_),
          static_cast<uint64_t>(T_),
          static_cast<uint64_t>(n_tokens_),
          memorize_in_state()};
}

void SyntheticTaskDataset::restore(const std::vector<uint64_t>& s) {
  check_state_header(s, kStateTag, kStateVersion, 8, "SyntheticTaskDataset");
  MG_CHECK(s[4] == static_cast<uint64_t>(task_) && s[5] == static_cast<uint64_t>(T_) &&
               s[6] == static_cast<uint64_t>(n_tokens_) &&
               s[7] == memorize_in_state(),
           "[SyntheticTaskDataset::restore] the checkpoint was taken with task {} seq_len {} "
           "n_tokens {} n_memorize {}, this run has {} {} {} {}; resume with the same data.* "
           "settings", s[4] == 0 ? "selective_copy" : "induction", s[5], s[6], s[7], kind(), T_,
           n_tokens_, n_memorize_);
  seed_ = s[2];
  drawn_ = s[3];
}

std::string SyntheticTaskDataset::describe() const {
  if (task_ == SyntheticTaskKind::SelectiveCopy)
    return fmt::format("selective_copy: T {} = {} slots + {} markers, {} data tokens (blank {}, "
                       "marker {}), vocab {}, nominal epoch {} examples",
                       T_, T_ - n_memorize_, n_memorize_, n_tokens_,
                       selective_copy_blank_id(n_tokens_), selective_copy_marker_id(n_tokens_),
                       vocab_size_needed(), per_epoch_);
  return fmt::format("induction: T {}, {} data tokens (trigger {}), vocab {}, nominal epoch {} "
                     "examples", T_, n_tokens_, induction_trigger_id(n_tokens_),
                     vocab_size_needed(), per_epoch_);
}

}  // namespace mg
