// JSONL dataset: loss masks counted by hand (padded and packed), truncation and skipping,
// the example split, errors naming file:line, and bit-exact restore.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "autograd/error.h"
#include "data/jsonl_dataset.h"
#include "tests/data/test_dataset_helpers.h"

namespace mg {
namespace {

using data_test::PlainByteTokenizer;
using data_test::TempDir;
using data_test::write_file;

constexpr int32_t E = 256;  // eos of the plain byte tokenizer
constexpr int32_t X = -1;   // not counted

DatasetOptions jsonl_options(const std::string& path, int64_t T, bool pack, double val = 0.0) {
  DatasetOptions o;
  o.source = "jsonl";
  o.path = {path};
  o.seq_len = T;
  o.val_fraction = val;
  o.pack = pack;
  o.seed = 5;
  o.quiet = true;
  return o;
}

std::vector<int32_t> target_row(const Batch& b, int64_t r) {
  return std::vector<int32_t>(b.targets_row(r), b.targets_row(r) + b.T);
}
std::vector<int32_t> token_row(const Batch& b, int64_t r) {
  return std::vector<int32_t>(b.tokens_row(r), b.tokens_row(r) + b.T);
}

TEST(JsonlDataset, PaddedRowsMaskThePromptCountedByHand) {
  TempDir dir;
  write_file(dir / "sft.jsonl", R"({"prompt": "ab", "completion": "cd"})" "\n"
                                R"({"text": "xyz"})" "\n"
                                "\n"  // blank lines are skipped
                                R"({"prompt": "", "completion": "q", "id": 3})" "\n");
  PlainByteTokenizer tok;
  JsonlDataset ds(jsonl_options(dir / "sft.jsonl", 6, false), tok);
  ASSERT_EQ(ds.train_examples(), 3);
  // s = a b c d E, prompt 2: the targets of positions 1..3 are c, d, E.
  const std::vector<int32_t> tok1 = {'a', 'b', 'c', 'd', E, E}, tgt1 = {X, 'c', 'd', E, X, X};
  // s = x y z E, all counted: y z E.
  const std::vector<int32_t> tok2 = {'x', 'y', 'z', E, E, E}, tgt2 = {'y', 'z', E, X, X, X};
  // s = q E, empty prompt: E after q.
  const std::vector<int32_t> tok3 = {'q', E, E, E, E, E}, tgt3 = {E, X, X, X, X, X};
  for (int epoch = 0; epoch < 3; ++epoch) {
    Batch b = ds.next_train_batch(3);  // one epoch = the 3 examples in a seeded order
    EXPECT_EQ(ds.epoch(), epoch + 1);
    EXPECT_EQ(b.counted_targets(), 3 + 3 + 1);
    std::map<int32_t, int> seen;
    for (int64_t r = 0; r < 3; ++r) {
      auto t = token_row(b, r), y = target_row(b, r);
      ++seen[t[0]];
      if (t[0] == 'a') {
        EXPECT_EQ(t, tok1);
        EXPECT_EQ(y, tgt1);
      } else if (t[0] == 'x') {
        EXPECT_EQ(t, tok2);
        EXPECT_EQ(y, tgt2);
      } else {
        EXPECT_EQ(t, tok3);
        EXPECT_EQ(y, tgt3);
      }
    }
    EXPECT_EQ(seen, (std::map<int32_t, int>{{'a', 1}, {'q', 1}, {'x', 1}}));
  }
}

TEST(JsonlDataset, LongExamplesAreCutOnTheRightAndEmptyOnesSkipped) {
  TempDir dir;
  write_file(dir / "sft.jsonl",
             R"({"prompt": "abc", "completion": "defgh"})" "\n"  // 9 tokens -> a b c d e
             R"({"prompt": "abcdefg", "completion": "x"})" "\n"  // prompt fills the window
             R"({"text": ""})" "\n"                              // only an eos: nothing to learn
             R"({"prompt": "", "completion": "q"})" "\n");
  PlainByteTokenizer tok;
  JsonlDataset ds(jsonl_options(dir / "sft.jsonl", 4, false), tok);
  EXPECT_EQ(ds.train_examples(), 2);
  EXPECT_EQ(ds.truncated_examples(), 2);
  EXPECT_EQ(ds.skipped_examples(), 2);
  Batch b = ds.next_train_batch(2);
  for (int64_t r = 0; r < 2; ++r) {
    auto t = token_row(b, r), y = target_row(b, r);
    if (t[0] == 'a') {
      EXPECT_EQ(t, (std::vector<int32_t>{'a', 'b', 'c', 'd'}));
      EXPECT_EQ(y, (std::vector<int32_t>{X, X, 'd', 'e'}));  // eos lost to truncation
    } else {
      EXPECT_EQ(t, (std::vector<int32_t>{'q', E, E, E}));
      EXPECT_EQ(y, (std::vector<int32_t>{E, X, X, X}));
    }
  }
}

TEST(JsonlDataset, PackedRowsFollowTheConcatenatedStreamCountedByHand) {
  TempDir dir;
  write_file(dir / "sft.jsonl", R"({"prompt": "ab", "completion": "c"})" "\n"
                                R"({"text": "xyz"})" "\n"
                                R"({"prompt": "m", "completion": "n"})" "\n");
  // Examples and, per token, whether it is a counted target (by hand from the rule).
  const std::vector<std::vector<int32_t>> ex = {{'a', 'b', 'c', E}, {'x', 'y', 'z', E}, {'m', 'n', E}};
  const std::vector<std::vector<int>> counted = {{0, 0, 1, 1}, {1, 1, 1, 1}, {0, 1, 1}};
  PlainByteTokenizer tok;
  const int64_t T = 3;
  JsonlDataset ds(jsonl_options(dir / "sft.jsonl", T, true), tok);
  std::set<std::vector<int>> orders_seen;
  for (int epoch = 0; epoch < 8; ++epoch) {
    Batch b = ds.next_train_batch(3);  // 11 stream tokens: (11 - 1) / 3 = 3 rows per epoch
    ASSERT_EQ(ds.epoch(), epoch + 1);
    // Find the visiting order from the first tokens, then check every position.
    std::vector<int> order = {0, 1, 2};
    bool matched = false;
    do {
      std::vector<int32_t> stream;
      std::vector<int> mask;
      for (int k : order) {
        stream.insert(stream.end(), ex[k].begin(), ex[k].end());
        mask.insert(mask.end(), counted[k].begin(), counted[k].end());
      }
      bool ok = true;
      for (int64_t r = 0; r < 3 && ok; ++r)
        for (int64_t t = 0; t < T && ok; ++t) {
          const int64_t q = r * T + t;
          ok = b.tokens_row(r)[t] == stream[q] &&
               b.targets_row(r)[t] == (mask[q + 1] ? stream[q + 1] : X);
        }
      if (ok) {
        matched = true;
        orders_seen.insert(order);
      }
    } while (!matched && std::next_permutation(order.begin(), order.end()));
    EXPECT_TRUE(matched) << "epoch " << epoch << " rows are no packing of the examples";
  }
  EXPECT_GE(orders_seen.size(), 2u) << "packed epochs are not reshuffled";
}

TEST(JsonlDataset, LastExamplesAreValidationInFileOrder) {
  TempDir dir;
  std::string lines;
  for (int i = 0; i < 10; ++i) lines += fmt::format(R"({{"text": "e{}"}})" "\n", i);
  write_file(dir / "d/a.jsonl", lines);
  write_file(dir / "d/notes.txt", "not jsonl, ignored inside a directory");
  PlainByteTokenizer tok;
  JsonlDataset ds(jsonl_options(dir / "d", 4, false, 0.2), tok);
  EXPECT_EQ(ds.train_examples(), 8);
  EXPECT_EQ(ds.val_examples(), 2);
  auto val = ds.validation_batches(4, -1);
  ASSERT_EQ(val.size(), 1u);
  EXPECT_EQ(token_row(val[0], 0), (std::vector<int32_t>{'e', '8', E, E}));
  EXPECT_EQ(target_row(val[0], 0), (std::vector<int32_t>{'8', E, X, X}));
  EXPECT_EQ(token_row(val[0], 1), (std::vector<int32_t>{'e', '9', E, E}));
  EXPECT_EQ(target_row(val[0], 2), (std::vector<int32_t>{X, X, X, X}));  // padding rows
  EXPECT_EQ(target_row(val[0], 3), (std::vector<int32_t>{X, X, X, X}));
  Batch epoch = ds.next_train_batch(8);
  std::vector<int32_t> digits;
  for (int64_t r = 0; r < 8; ++r) digits.push_back(epoch.tokens_row(r)[1]);
  std::sort(digits.begin(), digits.end());
  EXPECT_EQ(digits, (std::vector<int32_t>{'0', '1', '2', '3', '4', '5', '6', '7'}));
}

TEST(JsonlDataset, ErrorsNameTheFileAndLine) {
  TempDir dir;
  PlainByteTokenizer tok;
  struct Case { std::string body; std::string needle; };
  const std::vector<Case> cases = {
      {"{\"text\": \"ok\"}\n\n{\"text\": \"broken\"\n", "bad.jsonl:3"},
      {"{\"text\": \"ok\"}\n[1, 2]\n", "bad.jsonl:2"},
      {"{\"text\": \"a\", \"prompt\": \"b\"}\n", "bad.jsonl:1"},
      {"{\"prompt\": \"a\", \"completion\": 7}\n", "bad.jsonl:1"},
      {"{\"text\": \"ok\"}\n{\"prompt\": \"a\"}\n", "bad.jsonl:2"},
      {"{\"question\": \"a\"}\n", "bad.jsonl:1"},
  };
  for (const auto& c : cases) {
    write_file(dir / "bad.jsonl", c.body);
    try {
      JsonlDataset ds(jsonl_options(dir / "bad.jsonl", 8, false), tok);
      ADD_FAILURE() << "no error for: " << c.body;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.needle), std::string::npos)
          << "message does not name " << c.needle << ": " << e.what();
    }
  }
}

TEST(JsonlDataset, RestoreContinuesBitExactlyPaddedAndPacked) {
  TempDir dir;
  std::string lines;
  for (int i = 0; i < 23; ++i)
    lines += fmt::format(R"({{"prompt": "q{}?", "completion": " answer {}"}})" "\n", i, i * i);
  write_file(dir / "sft.jsonl", lines);
  PlainByteTokenizer tok;
  for (bool pack : {false, true}) {
    JsonlDataset a(jsonl_options(dir / "sft.jsonl", 16, pack, 0.1), tok);
    for (int i = 0; i < 3; ++i) a.next_train_batch(4);
    const auto saved = a.state();
    std::vector<Batch> expected;
    for (int i = 0; i < 25; ++i) expected.push_back(a.next_train_batch(4));
    EXPECT_GE(a.epoch(), 2) << "pack " << pack;
    DatasetOptions o = jsonl_options(dir / "sft.jsonl", 16, pack, 0.1);
    o.seed = 77;
    JsonlDataset b(o, tok);
    b.restore(saved);
    for (int i = 0; i < 25; ++i) {
      Batch got = b.next_train_batch(4);
      ASSERT_TRUE(got.tokens == expected[i].tokens && got.targets == expected[i].targets)
          << "pack " << pack << " batch " << i;
    }
    JsonlDataset other_mode(jsonl_options(dir / "sft.jsonl", 16, !pack, 0.1), tok);
    EXPECT_THROW(other_mode.restore(saved), Error);
  }
}

}  // namespace
}  // namespace mg
