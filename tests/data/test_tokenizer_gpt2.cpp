// GPT-2 (encoder.json + vocab.bpe) and GPT-NeoX-20B (tokenizer.json): hand-checkable encodings,
// special tokens, and the byte tokenizer. Ids are justified by encoder.json / tokenizer.json
// lookups in the test itself, or by the pre-tokenization rules spelled out in comments.
#include <gtest/gtest.h>

#include <random>

#include "autograd/error.h"
#include "data/byte_tokenizer.h"
#include "data/byte_unicode.h"
#include "tests/data/test_tokenizer_common.h"

namespace {

using tok_test::gpt2;
using tok_test::neox;
using Ids = std::vector<int32_t>;

// The id of a token given as raw bytes (looked up in the vocab by its byte-level spelling).
int32_t id_of(const mg::BpeTokenizer& tok, std::string_view bytes) {
  auto id = tok.token_to_id(mg::bytes_to_byte_level(bytes));
  EXPECT_TRUE(id.has_value()) << "'" << bytes << "' is not one token";
  return id.value_or(-1);
}

TEST(TokenizerGpt2, HelloWorld) {
  EXPECT_EQ(gpt2().encode("Hello world"), (Ids{15496, 995}));
  EXPECT_EQ(gpt2().vocab_size(), 50257);
  EXPECT_EQ(gpt2().eos_id(), 50256);
  EXPECT_EQ(gpt2().kind(), "bpe");
}

TEST(TokenizerGpt2, SingleTokensFromEncoderJson) {
  // Each of these strings is one entry of encoder.json ("Ġthe": 262, "ĊĊ": 628, "Ċ": 198, ...)
  // and one pre-token, so BPE must reach the whole entry.
  EXPECT_EQ(id_of(gpt2(), " the"), 262);
  EXPECT_EQ(id_of(gpt2(), "\n\n"), 628);
  EXPECT_EQ(id_of(gpt2(), "\n"), 198);
  for (std::string_view s : {" the", "\n\n", "\n", " world", "Hello", "!", " 2020", "'s"})
    EXPECT_EQ(gpt2().encode(s), (Ids{id_of(gpt2(), s)})) << "'" << s << "'";
}

TEST(TokenizerGpt2, WhitespaceRunsAndNewlines) {
  // "a   b" pre-tokenizes to "a", "  ", " b" (the run leaves its last space to the word);
  // encoder.json has no "ĠĠ", so the two spaces stay two " " tokens (220).
  EXPECT_FALSE(gpt2().token_to_id("\xC4\xA0\xC4\xA0").has_value());
  EXPECT_EQ(gpt2().encode("a   b"), (Ids{id_of(gpt2(), "a"), 220, 220, id_of(gpt2(), " b")}));
  // "Hello\n\nWorld": "\n\n" is followed by a word, so it splits "\n" | "\n" (198, 198); at the
  // end of the text it stays one pre-token, the single token 628.
  EXPECT_EQ(gpt2().encode("Hello\n\nWorld"), (Ids{15496, 198, 198, id_of(gpt2(), "World")}));
  EXPECT_EQ(gpt2().encode("Hello\n\n"), (Ids{15496, 628}));
}

TEST(TokenizerGpt2, EndOfTextIsRecognizedInText) {
  // HF's GPT2Tokenizer(Fast) treats <|endoftext|> as an added special token: one id.
  Ids ids = gpt2().encode("a<|endoftext|>b");
  EXPECT_EQ(ids, (Ids{id_of(gpt2(), "a"), 50256, id_of(gpt2(), "b")}));
  // Without added-token matching it is plain text: "<|", "endoftext", "|>" pre-tokens.
  Ids plain = gpt2().encode_ordinary("<|endoftext|>");
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(gpt2().decode(plain), "<|endoftext|>");
  EXPECT_EQ(gpt2().decode(Ids{50256}), "<|endoftext|>");
}

TEST(TokenizerGpt2, UnicodeEmojiAndInvalidBytes) {
  // é (U+00E9) is bytes C3 A9, spelled "Ã©" in byte-level; "é" is one GPT-2 token.
  EXPECT_EQ(gpt2().encode("\xC3\xA9"), (Ids{id_of(gpt2(), "\xC3\xA9")}));
  // An invalid byte is a pre-token of its own: 0xFF is the byte-level character 'ÿ'.
  EXPECT_EQ(gpt2().encode("\xFF"), (Ids{id_of(gpt2(), "\xFF")}));
  EXPECT_EQ(gpt2().encode("ab\xFF"), (Ids{id_of(gpt2(), "ab"), id_of(gpt2(), "\xFF")}));
  for (std::string_view s : {"\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E", "\xF0\x9F\x91\x8B\xF0\x9F\x8F\xBD",
                             "\xC0\x80\xED\xA0\x80", "x\xE2\x82"}) {
    Ids ids = gpt2().encode(s);
    EXPECT_EQ(gpt2().decode(ids), s);
    EXPECT_EQ(tok_test::as_int(ids), tok_test::ref_gpt2().encode(s));
  }
}

TEST(TokenizerGpt2, RoundTripsRandomBytes) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s = tok_test::random_bytes(rng, size_t(trial * 7 % 300));
    ASSERT_EQ(gpt2().decode(gpt2().encode(s)), s) << "trial " << trial;
  }
  EXPECT_THROW(gpt2().decode(Ids{50257}), mg::Error);
  EXPECT_THROW(gpt2().decode(Ids{-1}), mg::Error);
}

TEST(TokenizerNeox, SpecialAndWhitespaceTokens) {
  const mg::BpeTokenizer& t = neox();
  // This tokenizer.json holds 50254 BPE ids, 23 whitespace tokens (50254..50276) and, beyond
  // the original NeoX file, 4 more added special tokens (<|im_start|>, <|im_end|>, "assistant",
  // "RWKV" at 50277..50280).
  EXPECT_EQ(t.vocab_size(), 50281);
  EXPECT_EQ(t.eos_id(), 0);
  EXPECT_EQ(t.encode("<|endoftext|>"), (Ids{0}));
  EXPECT_EQ(t.encode("<|padding|>"), (Ids{1}));
  EXPECT_EQ(t.encode("<|im_start|>x<|im_end|>"), (Ids{50277, id_of(t, "x"), 50278}));
  // Added tokens with single_word=false match anywhere, inside words too (as HF does).
  EXPECT_EQ(t.encode("assistants"), (Ids{50279, id_of(t, "s")}));
  EXPECT_EQ(t.encode("Hello world"), (Ids{id_of(t, "Hello"), id_of(t, " world")}));
  // tokenizer.json's added tokens 50254..50276 are runs of 24 down to 2 spaces (normalized,
  // matched before pre-tokenization, leftmost-longest): n spaces = id 50254 + 24 - n.
  EXPECT_EQ(t.decode(Ids{50254}), std::string(24, ' '));
  EXPECT_EQ(t.decode(Ids{50276}), "  ");
  // "a" + 4 spaces + "b": the 4-space token cuts the text, so "b" has no leading space.
  EXPECT_EQ(t.encode("a    b"), (Ids{id_of(t, "a"), 50274, id_of(t, "b")}));
  // 30 spaces: longest first (24), then the 6 left.
  EXPECT_EQ(t.encode(std::string(30, ' ')), (Ids{50254, 50272}));
  // One space is not an added token: ordinary pre-token " b".
  EXPECT_EQ(t.encode("a b"), (Ids{id_of(t, "a"), id_of(t, " b")}));
  EXPECT_EQ(t.encode("x<|endoftext|>  y"), (Ids{id_of(t, "x"), 0, 50276, id_of(t, "y")}));
}

TEST(TokenizerNeox, NfcNormalizer) {
  const mg::BpeTokenizer& t = neox();
  // e + combining acute is normalized to é before BPE: same ids as the precomposed form.
  EXPECT_EQ(t.encode("caf" "e\xCC\x81"), t.encode("caf\xC3\xA9"));
  EXPECT_EQ(t.decode(t.encode("caf" "e\xCC\x81")), "caf\xC3\xA9");
  EXPECT_TRUE(t.options().nfc);
}

TEST(TokenizerByte, BytesAndEndOfText) {
  auto tok = mg::load_tokenizer("byte");
  EXPECT_EQ(tok->kind(), "byte");
  EXPECT_EQ(tok->vocab_size(), 257);
  EXPECT_EQ(tok->eos_id(), 256);
  EXPECT_EQ(tok->encode("Hi\n\xFF"), (Ids{'H', 'i', '\n', 255}));
  EXPECT_EQ(tok->encode("a<|endoftext|>b<|endof"), (Ids{'a', 256, 'b', '<', '|', 'e', 'n', 'd', 'o', 'f'}));
  EXPECT_EQ(tok->decode(Ids{'a', 256}), "a<|endoftext|>");
  std::mt19937 rng(5);
  for (int trial = 0; trial < 50; ++trial) {
    std::string s = tok_test::random_bytes(rng, 100);
    ASSERT_EQ(tok->decode(tok->encode(s)), s);
  }
  EXPECT_THROW(tok->decode(Ids{257}), mg::Error);
  EXPECT_THROW(tok->decode(Ids{-1}), mg::Error);
  EXPECT_EQ(tok->fingerprint().size(), 16u);  // hex, like the BPE digests
  EXPECT_EQ(tok->fingerprint().find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(tok->fingerprint(), gpt2().fingerprint());
}

TEST(TokenizerLoad, SpecsAndErrors) {
  auto g = mg::load_tokenizer("gpt2:" + tok_test::data_path("gpt2"));
  EXPECT_EQ(g->encode("Hello world"), (Ids{15496, 995}));
  EXPECT_EQ(g->fingerprint(), gpt2().fingerprint());
  auto n = mg::load_tokenizer(tok_test::data_path("gpt-neox-20b/tokenizer.json"));
  EXPECT_EQ(n->fingerprint(), neox().fingerprint());
  EXPECT_NE(g->fingerprint(), n->fingerprint());
  EXPECT_EQ(g->fingerprint().size(), 16u);
  auto message = [](const std::string& spec) {
    try {
      mg::load_tokenizer(spec);
    } catch (const mg::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("gpt2:/nonexistent").find("/nonexistent"), std::string::npos);
  EXPECT_NE(message("/nonexistent/tokenizer.json").find("does not exist"), std::string::npos);
  EXPECT_NE(message("sentencepiece").find("unknown tokenizer"), std::string::npos);
  EXPECT_NE(message("sentencepiece").find("byte"), std::string::npos);
  auto parse_error = [](std::string_view json) {
    try {
      mg::BpeTokenizer::parse_hf_json(json, "x.json");
    } catch (const mg::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(parse_error("{not json").find("x.json is not valid JSON"), std::string::npos);
  EXPECT_NE(parse_error(R"({"model": {"type": "WordPiece", "vocab": {}}})").find("WordPiece"),
            std::string::npos);
  // A vocab without all 256 byte symbols could not encode every text: refused at load.
  EXPECT_NE(parse_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                            "pre_tokenizer": {"type": "ByteLevel"}})")
                .find("lacks the byte-level symbols"),
            std::string::npos);
}

}  // namespace
