#pragma once
// Common fixtures of the tokenizer tests: the data files under assets/ (loaded once per test
// binary) and generators of adversarial text.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "data/bpe_tokenizer.h"
#include "tests/data/test_tokenizer_reference_bpe.h"
#include "tests/test_paths.h"

namespace tok_test {

// <repo>/assets/<relative>; throws (naming the path and why) when it is missing.
inline std::string data_path(const std::string& relative) {
  return mg::test_paths::asset_path(relative);
}

inline const std::string& shakespeare() {
  static const std::string text = ref::read_file(data_path("tinyshakespeare.txt"));
  return text;
}

inline const mg::BpeTokenizer& gpt2() {
  static const auto tok = mg::BpeTokenizer::load_gpt2(data_path("gpt2/encoder.json"),
                                                      data_path("gpt2/vocab.bpe"));
  return *tok;
}

inline const mg::BpeTokenizer& neox() {
  static const auto tok =
      mg::BpeTokenizer::load_hf_json(data_path("gpt-neox-20b/tokenizer.json"));
  return *tok;
}

inline ref::Bpe& ref_gpt2() {
  static ref::Bpe bpe = ref::Bpe::from_gpt2(data_path("gpt2"));
  return bpe;
}

inline ref::Bpe& ref_neox() {
  static ref::Bpe bpe = ref::Bpe::from_hf_json(data_path("gpt-neox-20b/tokenizer.json"));
  return bpe;
}

inline std::vector<int> as_int(const std::vector<int32_t>& v) { return {v.begin(), v.end()}; }

// Text built from pieces that stress every alternative of the pre-tokenization pattern and the
// added-token matching: contractions, space runs of every length, digits, punctuation, letters
// from several scripts, combining marks (NFC), emoji with modifiers, the Unicode spaces that
// \s treats differently in different engines, special tokens, and invalid UTF-8 bytes.
inline std::string random_text(std::mt19937& rng, size_t n_pieces, bool invalid_bytes) {
  static const std::vector<std::string> pieces = {
      "the", "The", " the", "Hello", " world", "don't", "I'm", "we'll", "they're", "you've",
      "'s", "'t", "'d", "'", "'x", "''", "a", "b", "zz", " ", "  ", "   ", "    ", "        ",
      "\t", "\n", "\n\n", "\r\n", " \n ", "0", "7", "123", "2024", " 42", "3.14", "!", "?!",
      "...", ",", "-", "--", "(", ")", "\"", "#", "@", "$", "%", "&", "*", "/", "\\", "_",
      "=>", "<", ">", "|", "<|", "|>", "<|endoftext|>", "<|padding|>", "é", "e\xCC\x81",
      "a\xCC\x8A\xCC\xA8", "\xCC\x81", "na\xC3\xAFve", "caf\xC3\xA9", "\xC3\x85", "\xE2\x84\xAB",
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E", "\xE4\xB8\xAD\xE6\x96\x87", "\xED\x95\x9C",
      "\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB", "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82",
      "\xCE\xB1\xCE\xB2\xCE\xB3", "\xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7",
      "\xF0\x9F\x91\x8B", "\xF0\x9F\x91\x8B\xF0\x9F\x8F\xBD", "\xF0\x9F\x98\x80",
      "\xE2\x80\x8D", "\xC2\xA0", "\xC2\x85", "\xE2\x80\x83", "\xE3\x80\x80", "\xE1\xA0\x8E",
      "\xE2\x80\xA8", "\xEF\xBC\x91", "\xD9\xA3", "\xE2\x85\xA7", "\xC2\xB2", "\xE2\x82\xAC",
      "\xEF\xBB\xBF", "\x7F", "\x01", std::string(1, '\0')};
  static const std::vector<std::string> bad = {"\xFF", "\xC0\x80", "\xED\xA0\x80", "\xE2\x82",
                                               "\x80", "\xF4\x90\x80\x80", "\xFE\xFE",
                                               "\xF0\x9F\x91"};
  std::string text;
  std::uniform_int_distribution<size_t> pick(0, pieces.size() - 1), pick_bad(0, bad.size() - 1);
  std::uniform_int_distribution<int> percent(0, 99);
  for (size_t i = 0; i < n_pieces; ++i) {
    if (invalid_bytes && percent(rng) < 4) text += bad[pick_bad(rng)];
    else text += pieces[pick(rng)];
  }
  return text;
}

inline std::string random_bytes(std::mt19937& rng, size_t n) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::string s(n, '\0');
  for (char& c : s) c = char(byte(rng));
  return s;
}

}  // namespace tok_test
