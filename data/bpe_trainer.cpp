// Byte-level BPE training with incremental pair counts. The loop follows Hugging Face
// tokenizers' BpeTrainer (`tokenizers/src/models/bpe/trainer.rs`): a max-heap of (count, pair)
// whose stale entries are refreshed when popped, and a pair -> words index so that a merge
// rewrites only the words holding the pair.
#include "data/bpe_trainer.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <queue>
#include <unordered_map>

#include "autograd/error.h"
#include "data/byte_unicode.h"
#include "data/pretokenize.h"
#include "util/progress.h"

namespace mg {
namespace {

uint64_t pack(int32_t left, int32_t right) {
  return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
}
int32_t left_of(uint64_t pair) { return int32_t(pair >> 32); }
int32_t right_of(uint64_t pair) { return int32_t(pair & 0xFFFFFFFFu); }

struct HeapItem {
  int64_t count;
  uint64_t pair;
};
// Max-heap order: the larger count first, then the smaller (left, right) pair.
struct HeapLess {
  bool operator()(const HeapItem& a, const HeapItem& b) const {
    return a.count != b.count ? a.count < b.count : a.pair > b.pair;
  }
};

struct Word {
  std::vector<int32_t> symbols;  // token ids, left to right
  int64_t count;                 // occurrences of this pre-token in the corpus
};

// Calls on_piece for the text between occurrences of the specials (leftmost, longest first).
template <class OnPiece>
void split_on_specials(std::string_view text, const std::vector<std::string>& specials,
                       OnPiece&& on_piece) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t best = std::string_view::npos, best_len = 0;
    for (const std::string& s : specials) {
      size_t at = text.find(s, pos);
      if (at < best || (at == best && at != std::string_view::npos && s.size() > best_len)) {
        best = at;
        best_len = s.size();
      }
    }
    if (best == std::string_view::npos) break;
    if (best > pos) on_piece(text.substr(pos, best - pos));
    pos = best + best_len;
  }
  if (pos < text.size()) on_piece(text.substr(pos));
}

}  // namespace

std::unique_ptr<BpeTokenizer> train_bpe(std::span<const std::string_view> texts,
                                        const BpeTrainOptions& options, BpeTrainStats* stats) {
  const auto t0 = std::chrono::steady_clock::now();
  for (const std::string& s : options.specials)
    MG_CHECK(!s.empty() && is_valid_utf8(s),
             "[train_bpe] special token '{}' must be non-empty valid UTF-8", s);
  const int32_t base = int32_t(options.specials.size()) + 256;
  MG_CHECK(options.vocab_size >= base,
           "[train_bpe] vocab_size {} cannot hold {} special tokens and the 256 byte symbols; use "
           "at least {}",
           options.vocab_size, options.specials.size(), base);

  // 1. Count pre-tokens (views into `texts`, which outlive this function's use of them).
  std::unordered_map<std::string_view, int64_t> counts;
  int64_t n_pretokens = 0;
  std::vector<std::string_view> pieces;
  for (std::string_view text : texts) {
    split_on_specials(text, options.specials, [&](std::string_view piece) {
      pieces.clear();
      gpt2_pretokenize(piece, pieces);
      for (std::string_view w : pieces) ++counts[w];
      n_pretokens += int64_t(pieces.size());
    });
  }

  // 2. Initial ids: specials, then the byte symbols in code point order (HF sorts its alphabet).
  std::vector<std::string> id_to_token(options.specials.begin(), options.specials.end());
  std::unordered_map<std::string, int32_t> token_to_id;
  for (size_t i = 0; i < id_to_token.size(); ++i)
    MG_CHECK(token_to_id.emplace(id_to_token[i], int32_t(i)).second,
             "[train_bpe] special token '{}' is listed twice", id_to_token[i]);
  std::vector<int> bytes_by_codepoint(256);
  for (int b = 0; b < 256; ++b) bytes_by_codepoint[size_t(b)] = b;
  std::sort(bytes_by_codepoint.begin(), bytes_by_codepoint.end(),
            [](int a, int b) { return byte_to_codepoint(uint8_t(a)) < byte_to_codepoint(uint8_t(b)); });
  std::array<int32_t, 256> byte_symbol{};
  for (int b : bytes_by_codepoint) {
    std::string token(byte_to_utf8(uint8_t(b)));
    MG_CHECK(!token_to_id.count(token),
             "[train_bpe] special token '{}' is a single byte symbol; choose another", token);
    byte_symbol[size_t(b)] = int32_t(id_to_token.size());
    token_to_id.emplace(token, int32_t(id_to_token.size()));
    id_to_token.push_back(std::move(token));
  }

  // 3. Words, in a fixed order (the result does not depend on it; logs and timing do).
  std::vector<std::pair<std::string_view, int64_t>> unique(counts.begin(), counts.end());
  std::sort(unique.begin(), unique.end());
  std::vector<Word> words;
  words.reserve(unique.size());
  for (const auto& [text, count] : unique) {
    Word w{{}, count};
    w.symbols.reserve(text.size());
    for (unsigned char c : text) w.symbols.push_back(byte_symbol[c]);
    words.push_back(std::move(w));
  }

  // 4. Pair counts and the pair -> words index.
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> words_with;
  pair_count.reserve(1 << 16);
  for (size_t wi = 0; wi < words.size(); ++wi) {
    const Word& w = words[wi];
    for (size_t i = 0; i + 1 < w.symbols.size(); ++i) {
      uint64_t p = pack(w.symbols[i], w.symbols[i + 1]);
      pair_count[p] += w.count;
      auto& list = words_with[p];
      if (list.empty() || list.back() != int32_t(wi)) list.push_back(int32_t(wi));
    }
  }
  std::priority_queue<HeapItem, std::vector<HeapItem>, HeapLess> heap;
  for (const auto& [p, c] : pair_count)
    if (c > 0) heap.push({c, p});

  // 5. Merge until the vocab is full.
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<int64_t> merge_counts;
  std::vector<int32_t> last_rewritten(words.size(), -1);
  std::vector<int32_t> rewritten;
  std::vector<uint64_t> touched;
  Progress progress("bpe train", options.vocab_size - base, "merge", !options.show_progress);
  while (int32_t(id_to_token.size()) < options.vocab_size && !heap.empty()) {
    HeapItem top = heap.top();
    heap.pop();
    int64_t current = pair_count[top.pair];
    if (top.count != current) {  // stale: its words changed since it was pushed
      if (current > 0) heap.push({current, top.pair});
      continue;
    }
    if (current < 1 || current < options.min_frequency) break;

    const int32_t left = left_of(top.pair), right = right_of(top.pair);
    std::string merged_text = id_to_token[size_t(left)] + id_to_token[size_t(right)];
    auto [it, is_new] = token_to_id.try_emplace(merged_text, int32_t(id_to_token.size()));
    const int32_t merged = it->second;  // an existing token is reused, as HF does
    if (is_new) id_to_token.push_back(merged_text);
    const int32_t merge_index = int32_t(merges.size());
    merges.emplace_back(id_to_token[size_t(left)], id_to_token[size_t(right)]);
    merge_counts.push_back(current);

    std::vector<int32_t> candidates = std::move(words_with[top.pair]);
    words_with.erase(top.pair);
    touched.clear();
    for (int32_t wi : candidates) {
      if (last_rewritten[size_t(wi)] == merge_index) continue;
      last_rewritten[size_t(wi)] = merge_index;
      Word& w = words[size_t(wi)];
      rewritten.clear();
      for (size_t i = 0; i < w.symbols.size(); ++i) {
        if (i + 1 < w.symbols.size() && w.symbols[i] == left && w.symbols[i + 1] == right) {
          rewritten.push_back(merged);
          ++i;
        } else {
          rewritten.push_back(w.symbols[i]);
        }
      }
      if (rewritten.size() == w.symbols.size()) continue;  // stale index entry: pair gone
      // Replace the word's pair counts: remove the old word's pairs, add the new word's.
      for (size_t i = 0; i + 1 < w.symbols.size(); ++i)
        pair_count[pack(w.symbols[i], w.symbols[i + 1])] -= w.count;
      for (size_t i = 0; i + 1 < rewritten.size(); ++i) {
        uint64_t p = pack(rewritten[i], rewritten[i + 1]);
        pair_count[p] += w.count;
        // Only pairs holding the merged id can have gained: those are (re)indexed and pushed.
        if (rewritten[i] == merged || rewritten[i + 1] == merged) {
          auto& list = words_with[p];
          if (list.empty() || list.back() != wi) list.push_back(wi);
          touched.push_back(p);
        }
      }
      w.symbols.swap(rewritten);
    }
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint64_t p : touched)
      if (pair_count[p] > 0) heap.push({pair_count[p], p});
    progress.update(int64_t(merges.size()));
  }
  progress.finish(fmt::format("{} merges, vocab {}", merges.size(), id_to_token.size()));

  if (stats) {
    stats->merge_counts = std::move(merge_counts);
    stats->pretokens = n_pretokens;
    stats->unique_pretokens = int64_t(words.size());
    stats->seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::vector<std::pair<std::string, int32_t>> vocab;
  vocab.reserve(id_to_token.size());
  for (size_t i = 0; i < id_to_token.size(); ++i) vocab.emplace_back(id_to_token[i], int32_t(i));
  std::vector<AddedToken> added;
  for (size_t i = 0; i < options.specials.size(); ++i)
    added.push_back({int32_t(i), options.specials[i], true, false, false, false});
  return std::make_unique<BpeTokenizer>(std::move(vocab), std::move(merges), std::move(added),
                                        BpeOptions{}, "train_bpe");
}

std::unique_ptr<BpeTokenizer> train_bpe(std::span<const std::string> texts, int32_t vocab_size,
                                        std::vector<std::string> specials) {
  std::vector<std::string_view> views(texts.begin(), texts.end());
  BpeTrainOptions options;
  options.vocab_size = vocab_size;
  options.specials = std::move(specials);
  return train_bpe(std::span<const std::string_view>(views), options);
}

}  // namespace mg
