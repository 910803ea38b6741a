// Text dataset: the deterministic split, the window sampler's epochs (coverage, offsets,
// seeds), bit-exact restore, fixed validation batches, and the dataset factory.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "autograd/error.h"
#include "data/dataset.h"
#include "data/text_dataset.h"
#include "tests/data/test_dataset_helpers.h"

namespace mg {
namespace {

using data_test::PlainByteTokenizer;
using data_test::TempDir;
using data_test::write_file;

// Text whose bytes vary with position, so windows at different starts differ.
std::string varied_text(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(static_cast<char>(32 + (i * 7 + i / 95) % 95));
  return s;
}

DatasetOptions text_options(const TempDir& dir, int64_t T, double val_fraction, uint64_t seed) {
  DatasetOptions o;
  o.source = "text";
  o.path = {dir / "corpus.txt"};
  o.cache_dir = dir / "cache";
  o.seq_len = T;
  o.val_fraction = val_fraction;
  o.seed = seed;
  o.quiet = true;
  return o;
}

bool same_batches(const Batch& a, const Batch& b) {
  return a.B == b.B && a.T == b.T && a.tokens == b.tokens && a.targets == b.targets;
}

TEST(WindowSampler, EachEpochCoversTheRangeOnceWithAShiftedGrid) {
  const int64_t n = 1000, T = 7;
  WindowSampler sampler(n, T, 42);
  std::set<int64_t> offsets;
  for (int64_t epoch = 0; epoch < 12; ++epoch) {
    ASSERT_EQ(sampler.epoch(), epoch);
    ASSERT_EQ(sampler.position(), 0);
    const int64_t o = sampler.offset(), W = sampler.windows_in_epoch();
    offsets.insert(o);
    EXPECT_GE(o, 0);
    EXPECT_LT(o, T);
    EXPECT_EQ(W, (n - 1 - o) / T);
    std::vector<int> covered(static_cast<size_t>(n), 0);  // times each token is a target
    std::vector<int64_t> starts;
    for (int64_t i = 0; i < W; ++i) {
      int64_t s = sampler.next();
      starts.push_back(s);
      ASSERT_EQ((s - o) % T, 0) << "start " << s << " is off epoch " << epoch << "'s grid";
      ASSERT_GE(s, 0);
      ASSERT_LE(s + T, n - 1) << "window runs past the range";
      for (int64_t t = s + 1; t <= s + T; ++t) ++covered[static_cast<size_t>(t)];
    }
    // Targets o+1 .. o+W*T exactly once; before: the <= T head; after: a tail shorter than T.
    for (int64_t q = 0; q < n; ++q) {
      int expect = (q >= o + 1 && q <= o + W * T) ? 1 : 0;
      ASSERT_EQ(covered[static_cast<size_t>(q)], expect) << "token " << q << " epoch " << epoch;
    }
    EXPECT_LT(n - 1 - (o + W * T), T);
    EXPECT_FALSE(std::is_sorted(starts.begin(), starts.end())) << "epoch " << epoch
                                                               << " is not shuffled";
  }
  EXPECT_GE(offsets.size(), 3u) << "the per-epoch offset does not move";
}

TEST(WindowSampler, SmallRangeKeepsOneWindowAndRejectsLess) {
  WindowSampler tight(9, 8, 1);  // n = T+1: exactly one window, offset 0
  EXPECT_EQ(tight.windows_in_epoch(), 1);
  EXPECT_EQ(tight.next(), 0);
  EXPECT_EQ(tight.epoch(), 1);
  EXPECT_THROW(WindowSampler(8, 8, 1), Error);
}

TEST(TextDataset, SplitIsTheLastFractionOfTheTokenStream) {
  TempDir dir;
  const std::string text = varied_text(1000);
  write_file(dir / "corpus.txt", text);
  PlainByteTokenizer tok;
  std::vector<int32_t> stream(text.begin(), text.end());
  for (auto& v : stream) v = static_cast<unsigned char>(v);
  stream.push_back(256);  // the eos after the one document
  const int64_t n = 1001, T = 8, n_val = 100;  // round(0.1 * 1001)

  TextDataset ds(text_options(dir, T, 0.1, 7), tok);
  EXPECT_EQ(ds.train_tokens(), n - n_val);
  EXPECT_EQ(ds.val_tokens(), n_val);
  EXPECT_EQ(ds.vocab_size_needed(), 257);

  // Validation windows: starts 901 + 8j, j < (100 - 1) / 8 = 12, in order, B = 5 -> 3 batches.
  auto val = ds.validation_batches(5, -1);
  ASSERT_EQ(val.size(), 3u);
  for (int64_t j = 0; j < 15; ++j) {
    const Batch& batch = val[static_cast<size_t>(j / 5)];
    const int64_t b = j % 5;
    for (int64_t t = 0; t < T; ++t) {
      if (j < 12) {
        const int64_t s = n - n_val + j * T;
        ASSERT_EQ(batch.tokens_row(b)[t], stream[static_cast<size_t>(s + t)]) << j << "," << t;
        ASSERT_EQ(batch.targets_row(b)[t], stream[static_cast<size_t>(s + t + 1)]) << j << "," << t;
      } else {
        ASSERT_EQ(batch.targets_row(b)[t], -1) << "padding row " << j << " must not count";
      }
    }
  }
  EXPECT_EQ(ds.validation_batches(5, 2).size(), 2u);

  // Training windows never reach the validation split, and the split is the same every time.
  for (int i = 0; i < 50; ++i) {
    Batch batch = ds.next_train_batch(4);
    for (int32_t v : batch.targets) ASSERT_NE(v, -1);
  }
  auto val_again = ds.validation_batches(5, -1);
  for (size_t i = 0; i < val.size(); ++i) EXPECT_TRUE(same_batches(val[i], val_again[i]));
  TextDataset twin(text_options(dir, T, 0.1, 99), tok);
  EXPECT_EQ(twin.train_tokens(), ds.train_tokens());
  auto val_twin = twin.validation_batches(5, -1);
  for (size_t i = 0; i < val.size(); ++i) EXPECT_TRUE(same_batches(val[i], val_twin[i]));
}

TEST(TextDataset, TrainRowsAreTheSamplersWindowsShiftedByOne) {
  TempDir dir;
  const std::string text = varied_text(600);
  write_file(dir / "corpus.txt", text);
  PlainByteTokenizer tok;
  TextDataset ds(text_options(dir, 16, 0.0, 3), tok);
  ASSERT_EQ(ds.train_tokens(), 601);
  WindowSampler reference(601, 16, 3);
  auto stream_at = [&](int64_t q) {
    return q < 600 ? static_cast<int32_t>(static_cast<unsigned char>(text[q])) : 256;
  };
  for (int step = 0; step < 20; ++step) {  // 37-ish windows per epoch: crosses epochs
    Batch batch = ds.next_train_batch(3);
    ASSERT_EQ(batch.B, 3);
    ASSERT_EQ(batch.T, 16);
    for (int64_t b = 0; b < 3; ++b) {
      const int64_t s = reference.next();
      for (int64_t t = 0; t < 16; ++t) {
        ASSERT_EQ(batch.tokens_row(b)[t], stream_at(s + t));
        ASSERT_EQ(batch.targets_row(b)[t], stream_at(s + t + 1));
      }
    }
  }
  EXPECT_EQ(ds.epoch(), reference.epoch());
  EXPECT_TRUE(ds.validation_batches(4, -1).empty()) << "val_fraction 0 has no validation";
}

TEST(TextDataset, SameSeedSameBatchesAndRestoreContinuesBitExactly) {
  TempDir dir;
  write_file(dir / "corpus.txt", varied_text(800));
  PlainByteTokenizer tok;
  TextDataset a(text_options(dir, 10, 0.05, 11), tok);
  TextDataset b(text_options(dir, 10, 0.05, 11), tok);
  TextDataset c(text_options(dir, 10, 0.05, 12), tok);
  bool any_differs = false;
  for (int i = 0; i < 10; ++i) {
    Batch x = a.next_train_batch(5), y = b.next_train_batch(5), z = c.next_train_batch(5);
    ASSERT_TRUE(same_batches(x, y)) << "same seed, batch " << i;
    any_differs |= !same_batches(x, z);
  }
  EXPECT_TRUE(any_differs) << "another seed gave the same batches";

  // Save mid-run (75 windows per epoch: 10 batches of 5 is mid-epoch), then go on across
  // several epoch boundaries in both the original and a restored fresh dataset.
  std::vector<uint64_t> saved = a.state();
  EXPECT_EQ(saved[2], 11u);
  std::vector<Batch> expected;
  for (int i = 0; i < 60; ++i) expected.push_back(a.next_train_batch(5));
  EXPECT_GE(a.epoch(), 3) << "the test should cross epochs";

  TextDataset fresh(text_options(dir, 10, 0.05, 999), tok);  // other seed: restore sets it
  fresh.restore(saved);
  for (int i = 0; i < 60; ++i)
    ASSERT_TRUE(same_batches(fresh.next_train_batch(5), expected[static_cast<size_t>(i)]))
        << "restored batch " << i << " differs";
  EXPECT_EQ(fresh.state(), a.state());
  EXPECT_DOUBLE_EQ(fresh.epoch_progress(), a.epoch_progress());
  EXPECT_GT(a.epoch_progress(), static_cast<double>(a.epoch()) - 1e-12);
}

TEST(TextDataset, RestoreRefusesAStateFromOtherData) {
  TempDir dir;
  write_file(dir / "corpus.txt", varied_text(800));
  PlainByteTokenizer tok;
  TextDataset a(text_options(dir, 10, 0.05, 1), tok);
  TextDataset other_T(text_options(dir, 12, 0.05, 1), tok);
  EXPECT_THROW(other_T.restore(a.state()), Error);
  TextDataset other_split(text_options(dir, 10, 0.2, 1), tok);
  EXPECT_THROW(other_split.restore(a.state()), Error);
  std::vector<uint64_t> bad = a.state();
  bad[0] = 0x53594E54;  // a synthetic-task tag
  EXPECT_THROW(a.restore(bad), Error);
  bad = a.state();
  bad[4] = 1u << 30;  // a position past the epoch
  EXPECT_THROW(a.restore(bad), Error);
  EXPECT_THROW(a.restore({}), Error);
}

TEST(TextDataset, SeparateValidationFilesAndClearErrors) {
  TempDir dir;
  write_file(dir / "corpus.txt", varied_text(300));
  write_file(dir / "val.txt", varied_text(40));
  PlainByteTokenizer tok;
  DatasetOptions o = text_options(dir, 8, 0.5, 1);
  o.val_path = {dir / "val.txt"};
  TextDataset ds(o, tok);
  EXPECT_EQ(ds.train_tokens(), 301);
  EXPECT_EQ(ds.val_tokens(), 41);
  EXPECT_EQ(ds.validation_batches(64, -1).size(), 1u);
  EXPECT_EQ(ds.validation_batches(64, -1)[0].counted_targets(), 5 * 8);  // (41-1)/8 windows

  try {
    TextDataset too_long(text_options(dir, 400, 0.0, 1), tok);
    FAIL() << "a window longer than the data must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("seq_len"), std::string::npos) << e.what();
  }
  EXPECT_THROW(TextDataset(text_options(dir, 8, 0.01, 1), tok), Error);  // 3-token val split
  EXPECT_THROW(TextDataset(text_options(dir, 8, 1.0, 1), tok), Error);
}

TEST(DatasetFactory, BuildsEachSourceAndRejectsUnknownOnes) {
  TempDir dir;
  write_file(dir / "corpus.txt", varied_text(300));
  write_file(dir / "sft.jsonl", R"({"prompt": "a", "completion": "b"})"
                                "\n"
                                R"({"text": "hello"})"
                                "\n");
  PlainByteTokenizer tok;
  DatasetOptions o = text_options(dir, 8, 0.0, 1);
  EXPECT_EQ(make_dataset(o, &tok)->kind(), "text");
  EXPECT_THROW(make_dataset(o, nullptr), Error);
  o.source = "jsonl";
  o.path = {dir / "sft.jsonl"};
  EXPECT_EQ(make_dataset(o, &tok)->kind(), "jsonl");
  o.source = "synthetic";
  o.seq_len = 32;
  o.task = "induction";
  auto ind = make_dataset(o, nullptr);
  EXPECT_EQ(ind->kind(), "induction");
  EXPECT_TRUE(ind->has_task_metric());
  o.task = "selective_copy";
  EXPECT_EQ(make_dataset(o, nullptr)->kind(), "selective_copy");
  o.task = "copying";
  EXPECT_THROW(make_dataset(o, nullptr), Error);
  o.source = "parquet";
  EXPECT_THROW(make_dataset(o, &tok), Error);
}

TEST(DatasetRandomness, PermutationIsAPermutationAndSeedsDiffer) {
  auto p = seeded_permutation(1000, 5);
  std::vector<uint32_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (uint32_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(p, seeded_permutation(1000, 5));
  EXPECT_NE(p, seeded_permutation(1000, 6));
  EXPECT_NE(derive_seed(1, 2, 3), derive_seed(1, 2, 4));
  EXPECT_NE(derive_seed(1, 2, 3), derive_seed(1, 3, 2));
  // Uniformity of below(): 60000 draws into 6 bins, each within 5 sigma of 10000.
  SplitMix64 g(9);
  std::vector<int> bins(6, 0);
  for (int i = 0; i < 60000; ++i) ++bins[g.below(6)];
  for (int c : bins) EXPECT_NEAR(c, 10000, 5 * std::sqrt(60000 * (1.0 / 6) * (5.0 / 6)));
}

}  // namespace
}  // namespace mg
