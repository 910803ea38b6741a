// Token cache: round trip, directory expansion, rebuild on change, corruption detection,
// uint16 vs uint32 ids, and piecewise tokenizing equal to whole-file tokenizing.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "autograd/error.h"
#include "data/token_cache.h"
#include "data/tokenizer.h"
#include "tests/data/test_dataset_helpers.h"
#include "tests/test_paths.h"

namespace mg {
namespace {

namespace fs = std::filesystem;
using data_test::PlainByteTokenizer;
using data_test::RunHashTokenizer;
using data_test::TempDir;
using data_test::write_file;

std::vector<int32_t> all_ids(const TokenCache& c) {
  std::vector<int32_t> v(static_cast<size_t>(c.size()));
  c.copy(0, c.size(), v.data());
  return v;
}

// The expected stream, written plainly: bytes of each file then eos (256 + shift).
std::vector<int32_t> bytes_then_eos(const std::vector<std::string>& docs, int32_t shift = 0) {
  std::vector<int32_t> v;
  for (const auto& d : docs) {
    for (unsigned char c : d) v.push_back(shift + c);
    v.push_back(shift + 256);
  }
  return v;
}

TEST(TokenCache, RoundTripAndReuse) {
  TempDir dir;
  write_file(dir / "a.txt", "hello\nworld");
  PlainByteTokenizer tok;
  auto c1 = TokenCache::open_or_build({dir / "a.txt"}, tok, dir / "cache", true);
  EXPECT_TRUE(c1.built());
  EXPECT_EQ(all_ids(c1), bytes_then_eos({"hello\nworld"}));
  EXPECT_EQ(c1.bytes_per_token(), 2);
  for (int64_t i = 0; i < c1.size(); ++i) EXPECT_EQ(c1[i], bytes_then_eos({"hello\nworld"})[i]);

  auto c2 = TokenCache::open_or_build({dir / "a.txt"}, tok, dir / "cache", true);
  EXPECT_FALSE(c2.built()) << "an unchanged input must reuse the cache";
  EXPECT_EQ(c2.file(), c1.file());
  EXPECT_EQ(all_ids(c2), all_ids(c1));
  EXPECT_THROW(c2.copy(c2.size() - 1, 2, std::vector<int32_t>(2).data()), Error);
}

TEST(TokenCache, HeaderFollowsTheDocumentedLayout) {
  // Read the file with plain offsets from token_cache.h, not with the class under test.
  TempDir dir;
  write_file(dir / "a.txt", "abc");
  PlainByteTokenizer tok;
  auto c = TokenCache::open_or_build({dir / "a.txt"}, tok, dir / "cache", true);
  std::string raw = data_test::read_file(c.file().string());
  ASSERT_EQ(raw.size(), 64u + 4 * 2);
  EXPECT_EQ(std::memcmp(raw.data(), "MGTOKC\0\0", 8), 0);
  auto u32 = [&](size_t off) { uint32_t v; std::memcpy(&v, raw.data() + off, 4); return v; };
  auto u64 = [&](size_t off) { uint64_t v; std::memcpy(&v, raw.data() + off, 8); return v; };
  auto u16 = [&](size_t off) { uint16_t v; std::memcpy(&v, raw.data() + off, 2); return v; };
  EXPECT_EQ(u32(8), kTokenCacheVersion);
  EXPECT_EQ(u32(12), 2u);
  EXPECT_EQ(u64(16), 4u);
  EXPECT_EQ(u64(24), c.key());
  EXPECT_EQ(u32(40), 257u);
  EXPECT_EQ(u32(44), 1u);
  EXPECT_EQ(u16(64), 'a');
  EXPECT_EQ(u16(66), 'b');
  EXPECT_EQ(u16(68), 'c');
  EXPECT_EQ(u16(70), 256);
  EXPECT_EQ(c.file().filename().string(), fmt::format("{:016x}.tok", c.key()));
}

TEST(TokenCache, DirectoriesAreRecursiveSortedAndSkipHidden) {
  TempDir dir;
  write_file(dir / "data/b.txt", "B");
  write_file(dir / "data/a.txt", "A");
  write_file(dir / "data/sub/c.txt", "C");
  write_file(dir / "data/.hidden.txt", "H");
  write_file(dir / "data/.git/x.txt", "X");
  PlainByteTokenizer tok;
  auto c = TokenCache::open_or_build({dir / "data"}, tok, dir / "cache", true);
  ASSERT_EQ(c.inputs().size(), 3u);
  EXPECT_EQ(c.inputs()[0].filename(), "a.txt");
  EXPECT_EQ(c.inputs()[1].filename(), "b.txt");
  EXPECT_EQ(c.inputs()[2].filename(), "c.txt");
  EXPECT_EQ(all_ids(c), bytes_then_eos({"A", "B", "C"}));

  // Explicit files in another order, with a duplicate: the same canonical list and key.
  auto d = TokenCache::open_or_build({dir / "data/sub/c.txt", dir / "data/b.txt",
                                      dir / "data/a.txt", dir / "data/b.txt"},
                                     tok, dir / "cache", true);
  EXPECT_EQ(d.key(), c.key());
  EXPECT_FALSE(d.built());

  try {
    TokenCache::open_or_build({dir / "nope.txt"}, tok, dir / "cache", true);
    FAIL() << "a missing input must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope.txt"), std::string::npos) << e.what();
  }
}

TEST(TokenCache, RebuildsWhenInputsOrTokenizerChange) {
  TempDir dir;
  write_file(dir / "a.txt", "first");
  PlainByteTokenizer tok;
  auto c1 = TokenCache::open_or_build({dir / "a.txt"}, tok, dir / "cache", true);
  const uint64_t key1 = c1.key();

  // Content (and size) change.
  write_file(dir / "a.txt", "second!");
  auto c2 = TokenCache::open_or_build({dir / "a.txt"}, tok, dir / "cache", true);
  EXPECT_TRUE(c2.built());
  EXPECT_NE(c2.key(), key1);
  EXPECT_EQ(all_ids(c2), bytes_then_eos({"second!"}));

  // Same size, only the modification time moves.
  fs::last_write_time(dir / "a.txt", fs::last_write_time(dir / "a.txt") + std::chrono::seconds(5));
  auto c3 = TokenCache::open_or_build({dir / "a.txt"}, tok, dir / "cache", true);
  EXPECT_TRUE(c3.built());
  EXPECT_NE(c3.key(), c2.key());

  // A new file in the list.
  write_file(dir / "b.txt", "b");
  auto c4 = TokenCache::open_or_build({dir / "a.txt", dir / "b.txt"}, tok, dir / "cache", true);
  EXPECT_TRUE(c4.built());
  EXPECT_EQ(all_ids(c4), bytes_then_eos({"second!", "b"}));

  // Another tokenizer (fingerprint) over the same files.
  PlainByteTokenizer other(0, "other-byte");
  auto c5 = TokenCache::open_or_build({dir / "a.txt"}, other, dir / "cache", true);
  EXPECT_TRUE(c5.built());
  EXPECT_NE(c5.key(), c3.key());
}

TEST(TokenCache, CorruptOrTruncatedCacheIsDetectedAndRebuilt) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 1000; ++i) text += fmt::format("line {}\n", i);
  write_file(dir / "a.txt", text);
  PlainByteTokenizer tok;
  const auto expected = bytes_then_eos({text});
  auto c = TokenCache::open_or_build({dir / "a.txt"}, tok, dir / "cache", true);
  const std::string file = c.file().string();
  const std::string good = data_test::read_file(file);
  c = TokenCache::open_or_build({dir / "a.txt"}, tok, dir / "cache", true);  // unmaps the first
  ASSERT_FALSE(c.built());

  auto reopen_expect_rebuild = [&](const std::string& damaged, const char* what) {
    write_file(file, damaged);
    auto r = TokenCache::open_or_build({dir / "a.txt"}, tok, dir / "cache", true);
    EXPECT_TRUE(r.built()) << what << " was not detected";
    EXPECT_EQ(all_ids(r), expected) << what;
    EXPECT_EQ(data_test::read_file(file), good) << what << ": the rebuilt file differs";
  };
  std::string flipped = good;
  flipped[64 + 2 * 500] ^= 0x01;  // one id changed: 'x' -> 'y' style, still < vocab
  reopen_expect_rebuild(flipped, "a flipped id bit");
  reopen_expect_rebuild(good.substr(0, good.size() - 2), "a truncated tail");
  reopen_expect_rebuild(good.substr(0, 10), "a truncated header");
  std::string magic = good;
  magic[0] = 'X';
  reopen_expect_rebuild(magic, "a bad magic");
  std::string version = good;
  version[8] = 99;
  reopen_expect_rebuild(version, "another format version");
  reopen_expect_rebuild("", "an empty file");
}

TEST(TokenCache, Uint16UpTo65536IdsElseUint32) {
  TempDir dir;
  write_file(dir / "a.txt", "xyz");
  struct Case { int32_t shift; int bytes; };
  // vocab = shift + 257: 257, exactly 65536, 65537, 70257.
  for (Case k : {Case{0, 2}, Case{65536 - 257, 2}, Case{65537 - 257, 4}, Case{70000, 4}}) {
    PlainByteTokenizer tok(k.shift);
    auto c = TokenCache::open_or_build({dir / "a.txt"}, tok, dir / "cache", true);
    EXPECT_EQ(c.bytes_per_token(), k.bytes) << "vocab " << tok.vocab_size();
    EXPECT_EQ(fs::file_size(c.file()), 64u + 4u * static_cast<unsigned>(k.bytes));
    EXPECT_EQ(all_ids(c), bytes_then_eos({"xyz"}, k.shift)) << "vocab " << tok.vocab_size();
    auto again = TokenCache::open_or_build({dir / "a.txt"}, tok, dir / "cache", true);
    EXPECT_FALSE(again.built());
    EXPECT_EQ(all_ids(again), all_ids(c));
  }
}

TEST(TokenCache, PiecewiseTokenizingEqualsWholeFile) {
  // Many tiny pieces force cuts all over the file; the run-hash tokenizer changes ids if a
  // cut splits a run or leaves a multi-char whitespace run at a piece's end (GPT-2's rule),
  // so equality proves cuts land only where the pre-tokenization cannot tell.
  TempDir dir;
  std::string text;
  for (int i = 0; i < 150; ++i) {
    text += fmt::format("word{} and  more\n", i);
    if (i % 7 == 0) text += "\n\n   indented line\n";
    if (i % 13 == 0) text += std::string(300, 'z');  // a run longer than a piece
    if (i % 11 == 0) text += "\n\t tabbed\n";
    if (i % 5 == 0) text += "para end.\n\nNext para\n";  // "\n\n" then a word: GPT-2 splits it
  }
  write_file(dir / "a.txt", text);
  write_file(dir / "b.txt", "no newline at all " + std::string(500, 'q'));
  RunHashTokenizer tok;
  for (size_t piece : {size_t{7}, size_t{16}, size_t{100}, size_t{4096}}) {
    TempDir cache;
    auto c = TokenCache::open_or_build({dir / "a.txt", dir / "b.txt"}, tok, cache.path.string(),
                                       true, piece);
    std::vector<int32_t> expected = tok.encode(text);  // no eos: RunHash has none
    auto b = tok.encode("no newline at all " + std::string(500, 'q'));
    expected.insert(expected.end(), b.begin(), b.end());
    std::vector<int32_t> got = all_ids(c);
    ASSERT_EQ(got.size(), expected.size()) << "piece " << piece;
    size_t first_diff = 0;
    while (first_diff < got.size() && got[first_diff] == expected[first_diff]) ++first_diff;
    EXPECT_EQ(first_diff, got.size()) << "piece " << piece << ": first differing id at "
                                      << first_diff;
  }
}

}  // namespace
}  // namespace mg

namespace mg {
namespace {

// The real tokenizers (data/tokenizer.h): caching TinyShakespeare in small pieces gives the ids
// of encoding it whole, for GPT-2 and GPT-NeoX (whose pre-tokenizers merge "\n\n" and " \n").
TEST(TokenCache, RealTokenizersPiecewiseEqualsWhole) {
  const std::string text = test_paths::read_repo_file("assets/tinyshakespeare.txt").substr(0, 60000);
  ASSERT_EQ(text.size(), 60000u) << "assets/tinyshakespeare.txt is shorter than expected";
  TempDir dir;
  write_file(dir / "shakespeare.txt", text);
  for (const std::string& spec : {"gpt2:" + test_paths::asset_path("gpt2"),
                                  test_paths::asset_path("gpt-neox-20b/tokenizer.json")}) {
    auto tok = load_tokenizer(spec);
    auto c = TokenCache::open_or_build({dir / "shakespeare.txt"}, *tok, dir / "cache", true, 4096);
    std::vector<int32_t> expected = tok->encode(text);
    expected.push_back(*tok->eos_id());
    std::vector<int32_t> got = all_ids(c);
    ASSERT_EQ(got.size(), expected.size()) << spec;
    size_t first_diff = 0;
    while (first_diff < got.size() && got[first_diff] == expected[first_diff]) ++first_diff;
    EXPECT_EQ(first_diff, got.size()) << spec << ": first differing id at " << first_diff;
    EXPECT_EQ(c.bytes_per_token(), 2) << spec;
  }
}

}  // namespace
}  // namespace mg
