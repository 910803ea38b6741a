// The fast encoder against the slow reference (test_tokenizer_reference_bpe.h) on all of
// TinyShakespeare and on adversarial random text, for GPT-2 and GPT-NeoX; the two GPT-2 loaders
// against each other; decode(encode(x)) == x on all of it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "data/nfc.h"
#include "tests/data/test_tokenizer_common.h"

namespace {

using tok_test::as_int;

// First index where two id sequences differ, with context, for failure messages.
std::string first_difference(const std::vector<int>& got, const std::vector<int>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  if (i == got.size() && i == want.size()) return "identical";
  auto window = [&](const std::vector<int>& v) {
    std::string s;
    for (size_t k = i; k < std::min(v.size(), i + 8); ++k) s += std::to_string(v[k]) + " ";
    return s;
  };
  return "first difference at id #" + std::to_string(i) + " of " + std::to_string(got.size()) +
         "/" + std::to_string(want.size()) + ": got [" + window(got) + "] want [" + window(want) +
         "]";
}

TEST(TokenizerReference, Gpt2MatchesReferenceOnShakespeare) {
  const std::string& text = tok_test::shakespeare();
  std::vector<int> got = as_int(tok_test::gpt2().encode(text));
  std::vector<int> want = tok_test::ref_gpt2().encode(text);
  ASSERT_EQ(got, want) << first_difference(got, want);
  EXPECT_EQ(tok_test::gpt2().decode(tok_test::gpt2().encode(text)), text);
  // About 0.3 tokens per byte on English: a sanity bound against a degenerate encoder.
  EXPECT_LT(got.size(), text.size() / 3);
}

TEST(TokenizerReference, NeoxMatchesReferenceOnShakespeare) {
  const std::string& text = tok_test::shakespeare();
  std::vector<int> got = as_int(tok_test::neox().encode(text));
  std::vector<int> want = tok_test::ref_neox().encode(text);
  ASSERT_EQ(got, want) << first_difference(got, want);
  EXPECT_EQ(tok_test::neox().decode(tok_test::neox().encode(text)), text);
  EXPECT_LT(got.size(), text.size() / 3);
}

TEST(TokenizerReference, MatchesReferenceOnRandomText) {
  std::mt19937 rng(2024);
  for (int trial = 0; trial < 400; ++trial) {
    bool invalid = trial % 2 == 1;
    std::string text = trial % 5 == 4 ? tok_test::random_bytes(rng, 80)
                                      : tok_test::random_text(rng, 60, invalid);
    // The reference is run without its cache: each pre-token is merged from scratch.
    std::vector<int> got = as_int(tok_test::gpt2().encode(text));
    std::vector<int> want = tok_test::ref_gpt2().encode(text, false);
    ASSERT_EQ(got, want) << "GPT-2 trial " << trial << ": " << first_difference(got, want);
    ASSERT_EQ(tok_test::gpt2().decode(tok_test::gpt2().encode(text)), text);

    got = as_int(tok_test::neox().encode(text));
    want = tok_test::ref_neox().encode(text, false);
    ASSERT_EQ(got, want) << "NeoX trial " << trial << ": " << first_difference(got, want);
    // NeoX normalizes to NFC, and its vocab has no symbol for the bytes C0, C1, F5..FF (never
    // in UTF-8), which are dropped: it round-trips to the NFC form of the text without them.
    std::string expected;
    for (char c : mg::nfc(text)) {
      unsigned char b = static_cast<unsigned char>(c);
      if (!(b == 0xC0 || b == 0xC1 || b >= 0xF5)) expected += c;
    }
    ASSERT_EQ(tok_test::neox().decode(tok_test::neox().encode(text)), expected);
  }
}

TEST(TokenizerReference, LongPreTokensUseTheHeapPath) {
  // Pre-tokens longer than the cache limit, and long repetitive ones where merges cascade.
  std::mt19937 rng(9);
  std::vector<std::string> texts = {std::string(500, 'a'), std::string(333, '!'),
                                    "abababababababababababababababababababababababababababab",
                                    std::string(200, '\n') + "x", std::string(3000, ' ')};
  std::string letters;
  for (int i = 0; i < 2000; ++i) letters += char('a' + rng() % 26);
  texts.push_back(letters);
  for (const std::string& text : texts) {
    std::vector<int> got = as_int(tok_test::gpt2().encode(text));
    std::vector<int> want = tok_test::ref_gpt2().encode(text, false);
    EXPECT_EQ(got, want) << first_difference(got, want);
    got = as_int(tok_test::neox().encode(text));
    want = tok_test::ref_neox().encode(text, false);
    EXPECT_EQ(got, want) << first_difference(got, want);
  }
}

// GPT-2 as a Hugging Face tokenizer.json built from encoder.json + vocab.bpe (the layout of the
// hub's gpt2/tokenizer.json) must encode exactly as the encoder.json + vocab.bpe loader does.
TEST(TokenizerReference, Gpt2LoadersAgreeOnShakespeare) {
  nlohmann::json encoder = nlohmann::json::parse(ref::read_file(tok_test::data_path("gpt2/encoder.json")));
  std::istringstream lines(ref::read_file(tok_test::data_path("gpt2/vocab.bpe")));
  nlohmann::json merges = nlohmann::json::array();
  std::string line;
  std::getline(lines, line);  // #version
  while (std::getline(lines, line))
    if (!line.empty()) merges.push_back(line);
  nlohmann::json hf = {
      {"version", "1.0"},
      {"added_tokens",
       {{{"id", 50256}, {"content", "<|endoftext|>"}, {"single_word", false}, {"lstrip", false},
         {"rstrip", false}, {"normalized", true}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}}},
      {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
        {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""}, {"fuse_unk", false},
        {"vocab", encoder}, {"merges", merges}}}};
  auto from_json = mg::BpeTokenizer::parse_hf_json(hf.dump(), "gpt2 tokenizer.json (built)");
  const std::string& text = tok_test::shakespeare();
  std::vector<int> a = as_int(tok_test::gpt2().encode(text)), b = as_int(from_json->encode(text));
  ASSERT_EQ(a, b) << first_difference(a, b);
  EXPECT_EQ(from_json->encode("x<|endoftext|>y"), tok_test::gpt2().encode("x<|endoftext|>y"));
  EXPECT_EQ(from_json->vocab_size(), 50257);
}

// save_hf_json writes what load_hf_json reads back to the same encodings (NeoX: NFC, added
// whitespace tokens with normalized=true, merges with the pair format).
TEST(TokenizerReference, HfJsonRoundTrip) {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(MAGELLAN_BINARY_DIR) / "test_tokenizer_json";
  fs::create_directories(dir);
  for (const mg::BpeTokenizer* tok : {&tok_test::gpt2(), &tok_test::neox()}) {
    std::string path = (dir / "tokenizer.json").string();
    tok->save_hf_json(path);
    auto back = mg::BpeTokenizer::load_hf_json(path);
    EXPECT_EQ(back->fingerprint(), tok->fingerprint());
    EXPECT_EQ(back->encode(tok_test::shakespeare().substr(0, 200000)),
              tok->encode(tok_test::shakespeare().substr(0, 200000)));
    // Reference reads the written file too: it parses the format independently.
    ref::Bpe reference = ref::Bpe::from_hf_json(path);
    std::mt19937 rng(1);
    for (int trial = 0; trial < 50; ++trial) {
      std::string text = tok_test::random_text(rng, 40, true);
      std::vector<int> got = as_int(back->encode(text)), want = reference.encode(text, false);
      ASSERT_EQ(got, want) << first_difference(got, want);
    }
  }
}

TEST(TokenizerReference, ConcurrentEncodeIsConsistent) {
  // The pre-token cache is shared between threads: encode from several at once.
  const std::string text = tok_test::shakespeare().substr(0, 100000);
  tok_test::gpt2().clear_cache();
  std::vector<int32_t> want = tok_test::gpt2().encode(text);
  tok_test::gpt2().clear_cache();
  std::vector<std::vector<int32_t>> got(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i)
    threads.emplace_back([&, i] { got[i] = tok_test::gpt2().encode(text); });
  for (auto& t : threads) t.join();
  for (const auto& g : got) EXPECT_EQ(g, want);
  EXPECT_GT(tok_test::gpt2().cache_entries(), 1000u);
}

}  // namespace
