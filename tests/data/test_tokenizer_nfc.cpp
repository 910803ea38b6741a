// NFC against Python's unicodedata.normalize (an independent implementation): Python picks
// random strings from the characters that matter to NFC (every character with a canonical
// decomposition or a non-zero combining class, Hangul jamo and syllables, plain letters),
// normalizes them and writes both to a JSON file this test reads.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "data/byte_unicode.h"
#include "data/nfc.h"
#include "tests/data/test_tokenizer_reference_bpe.h"

namespace {

std::string utf8_of(const nlohmann::json& code_points) {
  std::string s;
  for (const auto& cp : code_points) mg::utf8_append(s, cp.get<char32_t>());
  return s;
}

TEST(TokenizerNfc, MatchesPythonUnicodedata) {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(MAGELLAN_BINARY_DIR) / "test_tokenizer_nfc";
  fs::create_directories(dir);
  fs::path script = dir / "make_cases.py", cases = dir / "cases.json";
  std::ofstream(script) << R"(import json, random, sys, unicodedata as u
random.seed(1234)
interesting = [c for c in range(0x110000)
               if not 0xD800 <= c <= 0xDFFF and (u.decomposition(chr(c)) and not
                   u.decomposition(chr(c)).startswith('<') or u.combining(chr(c)))]
jamo = list(range(0x1100, 0x1113)) + list(range(0x1161, 0x1176)) + list(range(0x11A8, 0x11C3))
plain = [ord(c) for c in 'aeiouAEIOU nrsCG'] + [0xAC00, 0xD4DB, 0xD7A3, 0x0F40, 0x05D0]
cases = []
for c in interesting:                     # every such character alone, then after a letter
    cases.append([c]); cases.append([ord('a'), c])
for n in range(20000):                    # random mixtures
    k = random.randint(1, 8)
    s = [random.choice(interesting if r < 0.5 else jamo if r < 0.7 else plain)
         for r in (random.random() for _ in range(k))]
    cases.append(s)
out = [[s, [ord(c) for c in u.normalize('NFC', ''.join(map(chr, s)))]] for s in cases]
json.dump({'unicode': u.unidata_version, 'cases': out}, open(sys.argv[1], 'w'))
)";
  std::string command = "python3 '" + script.string() + "' '" + cases.string() + "'";
  if (std::system(command.c_str()) != 0) GTEST_SKIP() << "python3 is not available: " << command;
  nlohmann::json j = nlohmann::json::parse(ref::read_file(cases.string()));
  size_t failures = 0, n = 0;
  for (const auto& c : j["cases"]) {
    std::string input = utf8_of(c[0]), want = utf8_of(c[1]);
    std::string got = mg::nfc(input);
    ++n;
    if (got != want && ++failures <= 10)
      ADD_FAILURE() << "NFC mismatch for code points " << c[0].dump() << ": want "
                    << c[1].dump() << " (Python, Unicode " << j["unicode"] << ")";
  }
  EXPECT_EQ(failures, 0u) << "of " << n << " cases";
  EXPECT_GT(n, 20000u);
}

TEST(TokenizerNfc, HandCheckedCases) {
  EXPECT_EQ(mg::nfc("e\xCC\x81"), "\xC3\xA9");          // e + U+0301 -> é (U+00E9)
  EXPECT_EQ(mg::nfc("\xE2\x84\xAB"), "\xC3\x85");        // Angstrom sign U+212B -> Å (U+00C5)
  EXPECT_EQ(mg::nfc("\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB"), "\xED\x95\x9C");  // jamo -> 한
  // ordering: dot below (class 220) sorts before acute (230); q has no precomposed forms
  EXPECT_EQ(mg::nfc("q\xCC\x81\xCC\xA3"), "q\xCC\xA3\xCC\x81");
  // invalid bytes pass through and cut the text: the mark after 0xFF has nothing to join
  EXPECT_EQ(mg::nfc("e\xFF\xCC\x81"), "e\xFF\xCC\x81");
  EXPECT_EQ(mg::nfc("plain ascii"), "plain ascii");
  EXPECT_TRUE(mg::nfc_trivially_stable("caf\xC3\xA9"));   // all below U+0300
  EXPECT_FALSE(mg::nfc_trivially_stable("e\xCC\x81"));
}

}  // namespace
