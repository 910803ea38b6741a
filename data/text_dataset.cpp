#include "data/text_dataset.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "autograd/error.h"
#include "data/tokenizer.h"

namespace mg {

namespace {
// Purposes mixed into derive_seed, so offsets and permutations draw unrelated numbers.
constexpr uint64_t kOffsetStream = 0x6F6666736574;  // "offset"
constexpr uint64_t kPermStream = 0x7065726D;        // "perm"
}  // namespace

// ---------------------------------------------------------------------------------------------
// WindowSampler
// ---------------------------------------------------------------------------------------------

WindowSampler::WindowSampler(int64_t n_tokens, int64_t seq_len, uint64_t seed)
    : n_(n_tokens), T_(seq_len), seed_(seed) {
  MG_CHECK(seq_len >= 1, "[WindowSampler] seq_len must be >= 1, got {}", seq_len);
  MG_CHECK(n_tokens >= seq_len + 1,
           "[data] the training split has {} tokens, fewer than one window of seq_len+1 = {}; "
           "add data or lower data.seq_len", n_tokens, seq_len + 1);
  start_epoch(0);
}

void WindowSampler::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  position_ = 0;
  // o_e < min(T, n - T) keeps at least one window: n - 1 - o_e >= T.
  const int64_t offsets = std::min(T_, n_ - T_);
  SplitMix64 g(derive_seed(seed_, kOffsetStream, static_cast<uint64_t>(epoch)));
  offset_ = static_cast<int64_t>(g.below(static_cast<uint64_t>(offsets)));
  const int64_t windows = (n_ - 1 - offset_) / T_;
  perm_ = seeded_permutation(windows, derive_seed(seed_, kPermStream, static_cast<uint64_t>(epoch)));
}

int64_t WindowSampler::next() {
  MG_CHECK(!perm_.empty(), "[WindowSampler] used before being constructed with data");
  int64_t start = offset_ + static_cast<int64_t>(perm_[static_cast<size_t>(position_)]) * T_;
  if (++position_ == windows_in_epoch()) start_epoch(epoch_ + 1);
  return start;
}

void WindowSampler::set_state(uint64_t seed, int64_t epoch, int64_t position) {
  MG_CHECK(epoch >= 0, "[WindowSampler] saved epoch {} is negative; the state is corrupt", epoch);
  seed_ = seed;
  start_epoch(epoch);
  MG_CHECK(position >= 0 && position < windows_in_epoch(),
           "[WindowSampler] saved position {} is outside epoch {}'s {} windows; the data or "
           "data.seq_len changed since the checkpoint", position, epoch, windows_in_epoch());
  position_ = position;
}

// ---------------------------------------------------------------------------------------------
// TextDataset
// ---------------------------------------------------------------------------------------------

TextDataset::TextDataset(const DatasetOptions& opt, const Tokenizer& tok)
    : T_(opt.seq_len), vocab_size_(tok.vocab_size()) {
  MG_CHECK(opt.seq_len >= 1, "[data.seq_len] must be >= 1, got {}", opt.seq_len);
  MG_CHECK(opt.val_fraction >= 0.0 && opt.val_fraction < 1.0,
           "[data.val_fraction] must be in [0, 1), got {}", opt.val_fraction);
  caches_.push_back(std::make_unique<TokenCache>(
      TokenCache::open_or_build(opt.path, tok, opt.cache_dir, opt.quiet)));
  const TokenCache& main = *caches_.back();
  if (!opt.val_path.empty()) {
    caches_.push_back(std::make_unique<TokenCache>(
        TokenCache::open_or_build(opt.val_path, tok, opt.cache_dir, opt.quiet)));
    train_ = {&main, 0, main.size()};
    val_ = {caches_.back().get(), 0, caches_.back()->size()};
  } else {
    const int64_t n = main.size();
    const auto n_val = static_cast<int64_t>(std::llround(opt.val_fraction * static_cast<double>(n)));
    train_ = {&main, 0, n - n_val};
    val_ = {&main, n - n_val, n};
  }
  MG_CHECK(val_.end - val_.begin == 0 || val_.end - val_.begin >= T_ + 1,
           "[data.val_fraction] the validation split has {} tokens, fewer than one window of "
           "seq_len+1 = {}; raise data.val_fraction, lower data.seq_len, or set it to 0 for no "
           "validation", val_.end - val_.begin, T_ + 1);
  sampler_ = WindowSampler(train_tokens(), T_, opt.seed);
}

void TextDataset::fill_window(const Range& range, int64_t start, int32_t* tokens,
                              int32_t* targets) const {
  // The shift by one: targets[t] = s[t+1] (two reads of the mapped ids, no temporary).
  range.cache->copy(range.begin + start, T_, tokens);
  range.cache->copy(range.begin + start + 1, T_, targets);
}

Batch TextDataset::next_train_batch(int64_t B) {
  MG_CHECK(B >= 1, "[TextDataset] batch size must be >= 1, got {}", B);
  Batch batch(B, T_);
  for (int64_t b = 0; b < B; ++b)
    fill_window(train_, sampler_.next(), batch.tokens_row(b), batch.targets_row(b));
  return batch;
}

std::vector<Batch> TextDataset::validation_batches(int64_t B, int64_t n) const {
  MG_CHECK(B >= 1, "[TextDataset] batch size must be >= 1, got {}", B);
  const int64_t n_val = val_.end - val_.begin;
  const int64_t windows = n_val > T_ ? (n_val - 1) / T_ : 0;
  return batches_of_rows(windows, B, T_, n, 0, [&](int64_t j, int32_t* tokens, int32_t* targets) {
    fill_window(val_, j * T_, tokens, targets);
  });
}

double TextDataset::epoch_progress() const {
  return static_cast<double>(sampler_.epoch()) +
         static_cast<double>(sampler_.position()) / static_cast<double>(sampler_.windows_in_epoch());
}

std::vector<uint64_t> TextDataset::state() const {
  return {kStateTag,
          kStateVersion,
          sampler_.seed(),
          static_cast<uint64_t>(sampler_.epoch()),
          static_cast<uint64_t>(sampler_.position()),
          static_cast<uint64_t>(train_tokens()),
          static_cast<uint64_t>(T_)};
}

void TextDataset::restore(const std::vector<uint64_t>& s) {
  check_state_header(s, kStateTag, kStateVersion, 7, "TextDataset");
  MG_CHECK(s[5] == static_cast<uint64_t>(train_tokens()) && s[6] == static_cast<uint64_t>(T_),
           "[TextDataset::restore] the checkpoint was taken on a training split of {} tokens "
           "with seq_len {}, this run has {} tokens and seq_len {}; resume with the same data, "
           "tokenizer and data.seq_len", s[5], s[6], train_tokens(), T_);
  sampler_.set_state(s[2], static_cast<int64_t>(s[3]), static_cast<int64_t>(s[4]));
}

std::string TextDataset::describe() const {
  const TokenCache& c = *train_.cache;
  return fmt::format(
      "text: {} file(s), {} tokens ({}-byte ids, cache {}); train {} / validation {} tokens{}; "
      "{} windows of {}+1 per epoch",
      c.inputs().size(), c.size(), c.bytes_per_token(), c.file().string(), train_tokens(),
      val_tokens(), caches_.size() > 1 ? " (separate validation files)" : "",
      sampler_.windows_in_epoch(), T_);
}

}  // namespace mg
