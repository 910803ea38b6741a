#pragma once
// The Dataset interface the trainer uses, the options that pick one, and the seeded
// randomness every dataset shares.
//
// Contract, for every implementation:
//  * next_train_batch(B) is a pure function of (seed, state()): two datasets built from the
//    same data and options, restored to the same state, return bit-identical batches forever
//    after. That is what makes resume-from-checkpoint bit-exact (design.md §6, /data).
//  * validation_batches(B, n) is fixed: it depends on the data and options only, never on
//    how far training has gone, so eval losses of different steps and runs are comparable.
//  * An epoch is one pass over the training examples in a seeded order (each dataset says
//    precisely what an example is); epoch() counts completed passes. Batches run across
//    epoch boundaries: a batch may end one epoch and start the next.
//  * state() is a short vector of integers (tag, version, seed, epoch, position and the
//    size of the data it was taken on); restore() rejects a state taken on other data or
//    with other options, naming what differs, rather than resuming on the wrong stream.
//
// Randomness is our own SplitMix64 + Fisher-Yates (not std::shuffle or
// std::uniform_int_distribution, whose outputs differ between standard libraries), so a
// seed gives the same batches with every compiler.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/batch.h"

namespace mg {

class Tokenizer;

// Exact-match counts over answer positions (targets != -1). Sums over batches, so the
// accuracy of an eval set is sum(correct) / sum(counted), not a mean of batch accuracies.
struct TaskScore {
  int64_t correct = 0;
  int64_t counted = 0;
  double accuracy() const { return counted > 0 ? static_cast<double>(correct) / counted : 0.0; }
  TaskScore& operator+=(const TaskScore& o) {
    correct += o.correct, counted += o.counted;
    return *this;
  }
};

class Dataset {
 public:
  virtual ~Dataset() = default;

  virtual std::string kind() const = 0;           // "text", "jsonl", "selective_copy", "induction"
  virtual std::string describe() const = 0;       // one line for the log: sizes, split, epoch size
  virtual int64_t seq_len() const = 0;            // T of every batch
  virtual int32_t vocab_size_needed() const = 0;  // every token/target id is < this

  // The next B training rows; advances the position (and the epoch when a pass ends).
  virtual Batch next_train_batch(int64_t B) = 0;
  // Up to n batches of B rows from the validation split, always the same ones. n < 0: all of
  // it. The last batch is filled up to B with rows whose targets are all -1 (they add nothing
  // to the summed loss or counts). Empty when the dataset has no validation split.
  virtual std::vector<Batch> validation_batches(int64_t B, int64_t n) const = 0;

  virtual int64_t epoch() const = 0;           // completed passes over the training split
  virtual double epoch_progress() const = 0;   // epoch() + fraction of the current pass done

  virtual std::vector<uint64_t> state() const = 0;
  virtual void restore(const std::vector<uint64_t>& state) = 0;

  // True when the data has a task metric (the synthetic tasks): exact match of the argmax
  // prediction on answer positions. task_accuracy() works for every dataset (it is then next-
  // token accuracy on counted targets), but only a task's number is worth reporting.
  virtual bool has_task_metric() const { return false; }
  // predictions: (B,T) argmax ids for `batch`. Counts positions with batch.targets != -1.
  TaskScore task_accuracy(const Batch& batch, const std::vector<int32_t>& predictions) const;
};

// Everything that selects and shapes a dataset. Field names follow experiments' DataConfig
// (data.source, data.task, data.path, ...) so the trainer copies them across one to one.
struct DatasetOptions {
  std::string source = "synthetic";       // "synthetic" | "text" | "jsonl"
  std::string task = "selective_copy";    // synthetic only: "selective_copy" | "induction"
  std::vector<std::string> path;          // text/jsonl: files or directories (recursive)
  std::vector<std::string> val_path;      // optional: separate validation files (then
                                          // val_fraction is not used)
  int64_t seq_len = 128;                  // T
  double val_fraction = 0.05;             // last fraction held out (text: tokens; jsonl: examples)
  uint64_t seed = 1234;
  std::string cache_dir = ".cache/tokens";  // text: where token caches live
  bool pack = false;                      // jsonl: pack examples into rows (else one per row)
  int n_memorize = 8;                     // synthetic: M data tokens to copy (selective_copy)
  int n_tokens = 16;                      // synthetic: data vocabulary size
  int64_t examples_per_epoch = 65536;     // synthetic: nominal epoch (the stream is endless)
  bool quiet = false;                     // no progress lines
};

// Builds the dataset `opt.source` names. `tokenizer` is needed for text and jsonl (it may be
// null for synthetic tasks). Throws mg::Error naming the option or file that is wrong.
std::unique_ptr<Dataset> make_dataset(const DatasetOptions& opt, const Tokenizer* tokenizer);

// ---------------------------------------------------------------------------------------------
// Shared seeded randomness.
// ---------------------------------------------------------------------------------------------

// SplitMix64 (Steele, Lea, Flood 2014; the seeder of xoshiro): a full-period 64-bit generator
// whose every output is a strong mix of a counter, so nearby seeds give unrelated streams.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n > 0, by Lemire's multiply-shift (bias < n / 2^64: negligible here).
  uint64_t below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }

 private:
  uint64_t s_;
};

// A seed for one purpose: mixes (seed, a, b) so that e.g. epoch 3's permutation, epoch 3's
// offset and example 3 of a synthetic stream all draw from unrelated generators.
uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b = 0);

// A uniformly random permutation of [0, n), n < 2^32 (Fisher-Yates, Knuth TAOCP 3.4.2
// Algorithm P). 32-bit entries: an epoch of 10^8 windows costs 400 MB less than with 64.
std::vector<uint32_t> seeded_permutation(int64_t n, uint64_t seed);

// validation_batches() helper: rows [0, rows) cut into batches of B, at most n batches
// (n < 0: all), the last one filled up with empty rows (tokens `pad`, targets -1).
// fill(row, tokens (T), targets (T)) writes one row; targets arrive preset to -1.
template <class FillRow>
std::vector<Batch> batches_of_rows(int64_t rows, int64_t B, int64_t T, int64_t n, int32_t pad,
                                   FillRow&& fill) {
  std::vector<Batch> out;
  for (int64_t first = 0; first < rows && (n < 0 || static_cast<int64_t>(out.size()) < n);
       first += B) {
    Batch batch(B, T);
    std::fill(batch.tokens.begin(), batch.tokens.end(), pad);
    for (int64_t b = 0; b < B && first + b < rows; ++b)
      fill(first + b, batch.tokens_row(b), batch.targets_row(b));
    out.push_back(std::move(batch));
  }
  return out;
}

// restore() helper: throws mg::Error "[where] ..." unless `state` has `size` entries and
// starts with (tag, version).
void check_state_header(const std::vector<uint64_t>& state, uint64_t tag, uint64_t version,
                        size_t size, const char* where);

}  // namespace mg
