#pragma once
// Instruction / document data in JSON Lines: one JSON object per line, either
//   {"prompt": "...", "completion": "..."}   loss on the completion (and its eos) only
//   {"text": "..."}                           loss on every token
// Other keys (ids, sources, ...) are ignored; blank lines are skipped; anything else (bad JSON,
// a non-object, both "text" and "prompt", a missing or non-string field) is an error naming
// the file and line. Directories contribute their *.jsonl files (data/token_cache.h rules).
//
// Example tokens: s = encode(prompt) ++ encode(completion) ++ [eos] (prompt and completion
// are encoded separately, so the boundary is exact). Every example ends with the tokenizer's
// eos id (a tokenizer without one is refused). Target rule: s[i] is a counted target iff
// i >= len(encode(prompt)); prompt tokens are context only (targets -1).
//
// Truncation: an example longer than T+1 tokens keeps its first T+1 (right truncation, as
// Hugging Face's default truncation_side="right"): the end of a long completion and its eos
// are lost. An example left with no counted target (a prompt of T+1 tokens or more, or empty
// text) is skipped; both counts are reported by describe().
//
// Rows, padded (default, pack = false): one example per row: tokens = s[0..n-1), targets[t] =
// s[t+1] when counted, the rest of the row is eos with targets -1. An epoch is a seeded
// permutation of the training examples, one row each.
// Rows, packed (pack = true): the epoch's permuted examples are concatenated into one stream,
// cut like text windows (T+1 tokens, starts T apart, targets shifted by one); an example may
// straddle two rows and the model sees the previous example (through its eos) as context,
// as in GPT-style packing. The tail shorter than a window is dropped for that epoch.
//
// Split: the last round(val_fraction * examples) examples in file order (files sorted) are
// validation, or data.val_path's files when given. Validation rows are in file order.
// State: (seed, epoch, position in rows of the epoch).
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace mg {

class Tokenizer;

class JsonlDataset : public Dataset {
 public:
  static constexpr uint64_t kStateTag = 0x4A534E4C;  // "JSNL"
  static constexpr uint64_t kStateVersion = 1;

  JsonlDataset(const DatasetOptions& opt, const Tokenizer& tok);

  std::string kind() const override { return "jsonl"; }
  std::string describe() const override;
  int64_t seq_len() const override { return T_; }
  int32_t vocab_size_needed() const override { return vocab_size_; }

  Batch next_train_batch(int64_t B) override;
  std::vector<Batch> validation_batches(int64_t B, int64_t n) const override;

  int64_t epoch() const override { return epoch_; }
  double epoch_progress() const override;
  // {tag, version, seed, epoch, position, train examples, train tokens, T, pack}
  std::vector<uint64_t> state() const override;
  void restore(const std::vector<uint64_t>& state) override;

  int64_t train_examples() const { return train_.size(); }
  int64_t val_examples() const { return val_.size(); }
  int64_t truncated_examples() const { return truncated_; }
  int64_t skipped_examples() const { return skipped_; }

 private:
  // Examples stored flat: example i is ids[offsets[i], offsets[i+1]), its first prompt_len[i]
  // ids are prompt.
  struct Examples {
    std::vector<int32_t> ids;
    std::vector<int64_t> offsets{0};
    std::vector<int32_t> prompt_len;
    int64_t size() const { return static_cast<int64_t>(prompt_len.size()); }
    int64_t tokens() const { return static_cast<int64_t>(ids.size()); }
  };
  // Reads, tokenizes, truncates and filters every line of `files` into `out`.
  void load(const std::vector<std::string>& paths, const Tokenizer& tok, bool quiet, Examples& out);

  // An epoch's view of a set: the visiting order and, when packed, where each example starts
  // in the concatenated stream (prefix sums of lengths in that order).
  struct Order {
    std::vector<uint32_t> perm;    // (examples) example ids in visiting order
    std::vector<int64_t> starts;   // (examples + 1) packed only: stream offset of perm[i]
    int64_t rows = 0;
  };
  Order make_order(const Examples& ex, std::vector<uint32_t> perm) const;
  // Row r of `order` over `ex` into tokens (T) and targets (T) (preset: eos and -1).
  void fill_row(const Examples& ex, const Order& order, int64_t r, int32_t* tokens,
                int32_t* targets) const;
  void start_epoch(int64_t epoch);

  Examples train_, val_;
  int64_t T_;
  int32_t vocab_size_;
  int32_t eos_;
  bool pack_;
  uint64_t seed_;
  int64_t truncated_ = 0, skipped_ = 0;
  int64_t epoch_ = 0, position_ = 0;
  Order order_;  // of the current epoch
};

}  // namespace mg
