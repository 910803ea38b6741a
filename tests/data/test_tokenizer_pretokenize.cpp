// GPT-2's byte <-> unicode map, UTF-8 validation and the pre-tokenization pattern.
#include <gtest/gtest.h>

#include <random>

#include "data/byte_unicode.h"
#include "data/pretokenize.h"
#include "tests/data/test_tokenizer_common.h"

namespace {

std::vector<std::string> split(std::string_view text) {
  std::vector<std::string_view> views;
  mg::gpt2_pretokenize(text, views);
  return {views.begin(), views.end()};
}

std::string show(const std::vector<std::string>& pieces) {
  std::string s;
  for (const auto& p : pieces) s += "[" + p + "]";
  return s;
}

TEST(TokenizerByteUnicode, MatchesEncoderPyTranscription) {
  // ref::bytes_to_unicode is openai/gpt-2 encoder.py transcribed line by line.
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(std::string(mg::byte_to_utf8(uint8_t(b))), ref::bytes_to_unicode()[size_t(b)])
        << "byte " << b;
    EXPECT_EQ(mg::codepoint_to_byte(mg::byte_to_codepoint(uint8_t(b))), b);
  }
  // Known spellings: ' ' is 'Ġ' (U+0120), '\n' is 'Ċ' (U+010A), 0x00 is U+0100 (the first of
  // the 68 remapped bytes), soft hyphen 0xAD is the 68th: U+0100 + 33 (0x00..0x20) + 34
  // (0x7F..0xA0) = U+0143 'Ń'; printable bytes spell themselves.
  EXPECT_EQ(uint32_t(mg::byte_to_codepoint(' ')), uint32_t(U'\u0120'));
  EXPECT_EQ(uint32_t(mg::byte_to_codepoint('\n')), uint32_t(U'\u010A'));
  EXPECT_EQ(uint32_t(mg::byte_to_codepoint(0x00)), uint32_t(U'\u0100'));
  EXPECT_EQ(uint32_t(mg::byte_to_codepoint(0xAD)), uint32_t(U'\u0143'));
  EXPECT_EQ(uint32_t(mg::byte_to_codepoint('A')), uint32_t(U'A'));
  EXPECT_EQ(uint32_t(mg::byte_to_codepoint(0xFF)), uint32_t(U'\u00FF'));
  EXPECT_EQ(mg::codepoint_to_byte(U'\u20AC'), -1);
  EXPECT_EQ(mg::bytes_to_byte_level(" the\n"), "\xC4\xA0the\xC4\x8A");
  EXPECT_EQ(mg::byte_level_to_bytes("\xC4\xA0the\xC4\x8A").value(), " the\n");
  EXPECT_FALSE(mg::byte_level_to_bytes("\xE2\x82\xAC").has_value());  // '€' is not byte-level
}

TEST(TokenizerByteUnicode, Utf8Validation) {
  EXPECT_TRUE(mg::is_valid_utf8("plain ascii"));
  EXPECT_TRUE(mg::is_valid_utf8("caf\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x98\x80"));
  EXPECT_TRUE(mg::is_valid_utf8("\xF4\x8F\xBF\xBF"));           // U+10FFFF, the last scalar
  EXPECT_FALSE(mg::is_valid_utf8("\xC0\x80"));                  // overlong NUL
  EXPECT_FALSE(mg::is_valid_utf8("\xE0\x80\x80"));              // overlong
  EXPECT_FALSE(mg::is_valid_utf8("\xED\xA0\x80"));              // surrogate U+D800
  EXPECT_FALSE(mg::is_valid_utf8("\xF4\x90\x80\x80"));          // U+110000
  EXPECT_FALSE(mg::is_valid_utf8("\xE2\x82"));                  // truncated
  EXPECT_FALSE(mg::is_valid_utf8("\x80"));                      // stray continuation
  // Every code point round-trips through the encoder and decoder.
  for (char32_t cp = 0; cp <= 0x10FFFF; cp += (cp < 0x3000 ? 1 : 97)) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    std::string s;
    mg::utf8_append(s, cp);
    ASSERT_EQ(mg::utf8_sequence_length(s, 0), int(s.size())) << "U+" << std::hex << uint32_t(cp);
    ASSERT_EQ(uint32_t(mg::utf8_decode(s, 0, int(s.size()))), uint32_t(cp));
  }
}

// Each expectation follows the pattern by hand:
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
TEST(TokenizerPreTokenize, HandCheckedSplits) {
  struct Case {
    std::string text;
    std::vector<std::string> pieces;
  };
  const std::vector<Case> cases = {
      {"Hello world", {"Hello", " world"}},
      // contractions are cut before the letters; "'x" is not one, so "'" is punctuation
      {"I'm here's we'll 'x", {"I", "'m", " here", "'s", " we", "'ll", " '", "x"}},
      // a space run before a word leaves its last space to the word (\s+(?!\S) backtracks)
      {"a   b", {"a", "  ", " b"}},
      // at the end nothing follows, so the whole run is one piece
      {"a  ", {"a", "  "}},
      // "\n\nb": the run minus its last char, then "\n" alone (\s+), then the word
      {"x\n\ny", {"x", "\n", "\n", "y"}},
      {"abc 123456 7z", {"abc", " 123456", " 7", "z"}},
      {"wait...!? (yes)", {"wait", "...!?", " (", "yes", ")"}},
      // letters of any script are \p{L}; emoji and their skin-tone modifier are neither L nor N
      {"na\xC3\xAFve caf\xC3\xA9", {"na\xC3\xAFve", " caf\xC3\xA9"}},
      {"\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E", {"\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"}},
      {"hi \xF0\x9F\x91\x8B\xF0\x9F\x8F\xBD!", {"hi", " \xF0\x9F\x91\x8B\xF0\x9F\x8F\xBD!"}},
      // U+0085 (NEL) is White_Space: a one-char run before a letter is \s+ on its own
      {"a\xC2\x85" "b", {"a", "\xC2\x85", "b"}},
      // U+180E is not White_Space (Unicode 6.3+), so " \u180E" is ` ?[^\s\p{L}\p{N}]+`; with
      // PCRE2's own UCP \s it would have been "\s+" pieces instead.
      {"a \xE1\xA0\x8E" "b", {"a", " \xE1\xA0\x8E", "b"}},
      // invalid bytes: each run is a piece of its own, the text around is split as usual
      {"ab\xFF\xFE" "cd \x80", {"ab", "\xFF\xFE", "cd", " ", "\x80"}},
      {"", {}},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(show(split(c.text)), show(c.pieces)) << "text: " << c.text;
    EXPECT_EQ(show(ref::pretokenize(c.text)), show(c.pieces)) << "reference, text: " << c.text;
  }
}

TEST(TokenizerPreTokenize, MatchesReferenceOnRandomText) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::string text = trial % 3 == 2 ? tok_test::random_bytes(rng, 64)
                                      : tok_test::random_text(rng, 40, trial % 2 == 1);
    auto got = split(text);
    auto want = ref::pretokenize(text);
    ASSERT_EQ(show(got), show(want)) << "trial " << trial;
  }
}

TEST(TokenizerPreTokenize, HugeRunsDoNotBreakTheMatcher) {
  // JIT stack and backtracking: one megabyte of spaces before a word, and of letters.
  std::string spaces(1 << 20, ' ');
  auto pieces = split(spaces + "x");
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0].size(), spaces.size() - 1);
  EXPECT_EQ(pieces[1], " x");
  std::string letters(1 << 20, 'q');
  pieces = split(letters + "!");
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0], letters);
  // The same through PCRE2 (non-ASCII): ideographic spaces (U+3000) before a letter leave
  // their last one alone (only U+0020 joins a word), and a long run of 'é'.
  std::string wide;
  for (int i = 0; i < 300000; ++i) wide += "\xE3\x80\x80";
  pieces = split(wide + "x");
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[0].size(), wide.size() - 3);
  EXPECT_EQ(pieces[1], "\xE3\x80\x80");
  EXPECT_EQ(pieces[2], "x");
  std::string accents;
  for (int i = 0; i < 300000; ++i) accents += "\xC3\xA9";
  pieces = split(accents + " e");
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0], accents);
  // Pieces always tile the input exactly, whatever the bytes.
  std::mt19937 rng(3);
  std::string bytes = tok_test::random_bytes(rng, 1 << 16);
  std::string joined;
  for (const auto& p : split(bytes)) {
    ASSERT_FALSE(p.empty());
    joined += p;
  }
  EXPECT_EQ(joined, bytes);
}

}  // namespace
