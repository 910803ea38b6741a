// BPE training: hand-computed merges on a tiny corpus, every merge's count and choice replayed by
// a naive recount, determinism, and the tokenizer.json round trip.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "autograd/error.h"
#include "data/bpe_trainer.h"
#include "data/byte_unicode.h"
#include "tests/data/test_tokenizer_common.h"

namespace {

mg::BpeTrainOptions quiet(int32_t vocab_size) {
  mg::BpeTrainOptions o;
  o.vocab_size = vocab_size;
  o.show_progress = false;
  return o;
}

using Merge = std::pair<std::string, std::string>;

TEST(TokenizerTrainer, HandComputedMerges) {
  // Pre-tokens (byte-level, Ġ = space): "hug" x1, "Ġhug" x2, "Ġpug", "Ġpun", "Ġbun", "Ġhugs".
  // Pair counts: u g = 1+2+1+1 = 5 (hug, Ġhug x2, pug, hugs) is the most frequent, then
  //   h ug = 4, Ġ hug = 3. Then u n = 2 and Ġ p = 2 tie: the smaller (left id, right id) wins,
  //   and 'u' (U+0075) sorts before 'Ġ' (U+0120) in the alphabet, so u n comes first. Last, all
  //   pairs are 1 and b un has the smallest left id ('b').
  std::vector<std::string_view> texts = {"hug hug hug pug", " pun bun hugs"};
  mg::BpeTrainStats stats;
  auto tok = mg::train_bpe(texts, quiet(257 + 6), &stats);
  std::vector<Merge> want = {{"u", "g"},          {"h", "ug"},        {"\xC4\xA0", "hug"},
                             {"u", "n"},          {"\xC4\xA0", "p"},  {"b", "un"}};
  EXPECT_EQ(tok->merges(), want);
  EXPECT_EQ(stats.merge_counts, (std::vector<int64_t>{5, 4, 3, 2, 2, 1}));
  EXPECT_EQ(stats.pretokens, 7);
  EXPECT_EQ(stats.unique_pretokens, 6);
  // ids: <|endoftext|> 0, the 256 byte symbols by code point ('!' first; 'Ā' = byte 0x00 is the
  // 189th; 'Ġ' = 0x20 is 32 after it), then one id per merge in order.
  EXPECT_EQ(tok->token_to_id("<|endoftext|>"), 0);
  EXPECT_EQ(tok->token_to_id("!"), 1);
  EXPECT_EQ(tok->token_to_id("\xC4\x80"), 189);
  EXPECT_EQ(tok->token_to_id("\xC4\xA0"), 221);
  EXPECT_EQ(tok->token_to_id("ug"), 257);
  EXPECT_EQ(tok->token_to_id("bun"), 262);
  EXPECT_EQ(tok->vocab_size(), 263);
  EXPECT_EQ(tok->encode(" hugs<|endoftext|>"), (std::vector<int32_t>{259, *tok->token_to_id("s"), 0}));
  // Specials cut the corpus: no pair spans "<|endoftext|>", and it is never merged into.
  auto cut = mg::train_bpe(std::vector<std::string_view>{"ab<|endoftext|>ab"}, quiet(257 + 1), &stats);
  EXPECT_EQ(cut->merges(), (std::vector<Merge>{{"a", "b"}}));
  EXPECT_EQ(stats.merge_counts, (std::vector<int64_t>{2}));
  EXPECT_THROW(mg::train_bpe(texts, quiet(100)), mg::Error);
}

// Replays training naively: pre-tokens counted with the reference splitter, every pair recounted
// from scratch before each merge. The trainer's choice must be the most frequent pair (ties: the
// smaller (left id, right id)) and its count the recount.
TEST(TokenizerTrainer, EveryMergeMatchesANaiveRecount) {
  const std::string corpus = tok_test::shakespeare().substr(0, 20000);
  mg::BpeTrainStats stats;
  auto tok = mg::train_bpe(std::vector<std::string_view>{corpus}, quiet(257 + 120), &stats);
  ASSERT_EQ(tok->merges().size(), 120u);

  std::map<std::string, int64_t> counts;
  for (const std::string& w : ref::pretokenize(corpus)) ++counts[w];
  std::vector<std::pair<std::vector<std::string>, int64_t>> words;
  for (const auto& [w, c] : counts) {
    std::vector<std::string> symbols;
    for (unsigned char b : w) symbols.push_back(ref::bytes_to_unicode()[b]);
    words.push_back({symbols, c});
  }
  auto id = [&](const std::string& s) { return tok->token_to_id(s).value(); };
  for (size_t k = 0; k < tok->merges().size(); ++k) {
    std::map<Merge, int64_t> pairs;
    for (const auto& [symbols, c] : words)
      for (size_t i = 0; i + 1 < symbols.size(); ++i) pairs[{symbols[i], symbols[i + 1]}] += c;
    Merge best;
    int64_t best_count = -1;
    for (const auto& [p, c] : pairs) {
      auto key = std::make_pair(id(p.first), id(p.second));
      if (c > best_count ||
          (c == best_count && key < std::make_pair(id(best.first), id(best.second)))) {
        best = p;
        best_count = c;
      }
    }
    ASSERT_EQ(tok->merges()[k], best) << "merge #" << k;
    ASSERT_EQ(stats.merge_counts[k], best_count) << "merge #" << k;
    for (auto& [symbols, c] : words) {  // apply the merge, left to right
      std::vector<std::string> merged;
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == best.first && symbols[i + 1] == best.second) {
          merged.push_back(symbols[i] + symbols[i + 1]);
          ++i;
        } else {
          merged.push_back(symbols[i]);
        }
      }
      symbols = merged;
    }
  }
}

TEST(TokenizerTrainer, DeterministicAndRoundTripsThroughHfJson) {
  namespace fs = std::filesystem;
  const std::string corpus = tok_test::shakespeare().substr(0, 300000);
  std::vector<std::string_view> texts = {corpus};
  auto a = mg::train_bpe(texts, quiet(2000));
  auto b = mg::train_bpe(texts, quiet(2000));
  EXPECT_EQ(a->merges(), b->merges());
  EXPECT_EQ(a->fingerprint(), b->fingerprint());
  EXPECT_EQ(a->vocab_size(), 2000);
  EXPECT_EQ(a->eos_id(), 0);

  fs::path dir = fs::path(MAGELLAN_BINARY_DIR) / "test_tokenizer_trainer";
  fs::create_directories(dir);
  std::string path = (dir / "tokenizer.json").string();
  a->save_hf_json(path);
  auto back = mg::load_tokenizer(path);
  EXPECT_EQ(back->fingerprint(), a->fingerprint());
  const std::string& all = tok_test::shakespeare();
  std::vector<int32_t> ids = a->encode(all);
  EXPECT_EQ(back->encode(all), ids);
  EXPECT_EQ(back->decode(ids), all);
  // A 2000-token vocab trained on this text compresses it well below 1 id per 2 bytes.
  EXPECT_LT(ids.size(), all.size() / 2);
  // The written file, parsed independently, encodes the same.
  ref::Bpe reference = ref::Bpe::from_hf_json(path);
  std::string sample = all.substr(500000, 50000) + "<|endoftext|>caf\xC3\xA9 \xFF";
  EXPECT_EQ(tok_test::as_int(back->encode(sample)), reference.encode(sample));
}

}  // namespace
