#pragma once
// Byte-level BPE training (Sennrich et al. 2016, as Hugging Face tokenizers' BpeTrainer with a
// ByteLevel pre-tokenizer and the full 256-byte initial alphabet):
//   ids: the special tokens first, then the 256 byte symbols ordered by their byte-level code
//   point, then one id per merge. Each step merges the most frequent adjacent pair over all
//   pre-tokens (weighted by how often the pre-token occurs); ties go to the smaller (left id,
//   right id), HF's order. Pair counts are updated incrementally, touching only the words that
//   hold the merged pair.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "data/bpe_tokenizer.h"

namespace mg {

struct BpeTrainOptions {
  int32_t vocab_size = 10000;  // total ids: specials + 256 byte symbols + merges
  std::vector<std::string> specials = {"<|endoftext|>"};  // added tokens, ids 0, 1, ...
  int64_t min_frequency = 0;   // stop when the best pair occurs fewer times than this
  bool show_progress = true;   // a Progress line (util/progress.h) on stderr
};

struct BpeTrainStats {
  std::vector<int64_t> merge_counts;  // how often each merge's pair occurred when it was chosen
  int64_t pretokens = 0;              // pre-tokens in the corpus
  int64_t unique_pretokens = 0;
  double seconds = 0.0;
};

// Trains on `texts` (concatenated as separate documents; specials in them are cut out, never
// merged across). Stops at vocab_size, or earlier when no pair is left or min_frequency is not
// met. Deterministic: the same inputs give the same tokenizer. Throws mg::Error when vocab_size
// cannot hold the specials and the 256 bytes, or a special is empty or not valid UTF-8.
std::unique_ptr<BpeTokenizer> train_bpe(std::span<const std::string_view> texts,
                                        const BpeTrainOptions& options,
                                        BpeTrainStats* stats = nullptr);
std::unique_ptr<BpeTokenizer> train_bpe(std::span<const std::string> texts, int32_t vocab_size,
                                        std::vector<std::string> specials = {"<|endoftext|>"});

}  // namespace mg
