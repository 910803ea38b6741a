#pragma once
// Plain-text language-model data: a token cache (data/token_cache.h) split into train and
// validation, read as fixed-length windows.
//
// Split (deterministic, no randomness): the validation split is the LAST
// round(val_fraction * n) tokens of the cached stream (files in sorted order, eos between
// documents), the training split everything before it, like nanoGPT's 90/10 cut of
// TinyShakespeare. With data.val_path the validation split is those files instead and the
// whole of data.path trains. Windows never cross the split point.
//
// Windows: a window is T+1 consecutive tokens s[0..T]; tokens = s[0..T), targets = s[1..T].
// Window starts are spaced T apart, so consecutive windows share one token and every token of
// a pass is a target exactly once (the first token of the split and a tail shorter than a
// window are not).
//
// Epoch e (WindowSampler): an offset o_e, uniform in [0, min(T, n - T)) from (seed, e), shifts
// the grid of starts o_e + j*T, j in [0, (n - 1 - o_e) / T), so window boundaries move from
// pass to pass; the windows are visited in a seeded permutation of j. epoch() counts completed
// passes; the state is (seed, epoch, position in the permutation), from which the permutation
// is recomputed, so restore() continues bit-exactly.
//
// Validation windows: starts split_begin + j*T in order, the same for every call.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/token_cache.h"

namespace mg {

class Tokenizer;

// Seeded epochs of non-overlapping windows over a token range of n tokens (starts relative
// to the range). Exposed for tests and for any dataset that windows a stream.
class WindowSampler {
 public:
  WindowSampler() = default;  // empty; assign a constructed one before use
  WindowSampler(int64_t n_tokens, int64_t seq_len, uint64_t seed);

  // Start of the next window (its T+1 tokens are [start, start + T]); advances, and starts
  // the next epoch after the last window of this one.
  int64_t next();

  void set_state(uint64_t seed, int64_t epoch, int64_t position);  // throws if out of range
  uint64_t seed() const { return seed_; }
  int64_t epoch() const { return epoch_; }
  int64_t position() const { return position_; }
  int64_t windows_in_epoch() const { return static_cast<int64_t>(perm_.size()); }
  int64_t offset() const { return offset_; }  // o_e of the current epoch

 private:
  void start_epoch(int64_t epoch);

  int64_t n_ = 0, T_ = 0;
  uint64_t seed_ = 0;
  int64_t epoch_ = 0, position_ = 0, offset_ = 0;
  std::vector<uint32_t> perm_;  // (windows in this epoch) grid indices j in visiting order
};

class TextDataset : public Dataset {
 public:
  static constexpr uint64_t kStateTag = 0x54455854;  // "TEXT"
  static constexpr uint64_t kStateVersion = 1;

  TextDataset(const DatasetOptions& opt, const Tokenizer& tok);

  std::string kind() const override { return "text"; }
  std::string describe() const override;
  int64_t seq_len() const override { return T_; }
  int32_t vocab_size_needed() const override { return vocab_size_; }

  Batch next_train_batch(int64_t B) override;
  std::vector<Batch> validation_batches(int64_t B, int64_t n) const override;

  int64_t epoch() const override { return sampler_.epoch(); }
  double epoch_progress() const override;
  // {tag, version, seed, epoch, position, train tokens, T}
  std::vector<uint64_t> state() const override;
  void restore(const std::vector<uint64_t>& state) override;

  int64_t train_tokens() const { return train_.end - train_.begin; }
  int64_t val_tokens() const { return val_.end - val_.begin; }
  const TokenCache& train_cache() const { return *train_.cache; }

 private:
  struct Range {
    const TokenCache* cache = nullptr;
    int64_t begin = 0, end = 0;  // [begin, end) in cache's stream
  };
  // tokens (T) <- s[0..T), targets (T) <- s[1..T] for the window at `start` of `range`.
  void fill_window(const Range& range, int64_t start, int32_t* tokens, int32_t* targets) const;

  std::vector<std::unique_ptr<TokenCache>> caches_;
  Range train_, val_;
  int64_t T_ = 0;
  int32_t vocab_size_ = 0;
  WindowSampler sampler_;
};

}  // namespace mg
