// Synthetic tasks (Mamba paper §4.1): structure of every example, determinism by seed, an
// oracle that reads the answer from the input scores 1.0 and a constant guess ~1/n_tokens.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/error.h"
#include "data/synthetic_tasks.h"

namespace mg {
namespace {

DatasetOptions task_options(int64_t T, int n_tokens, int n_memorize, uint64_t seed) {
  DatasetOptions o;
  o.source = "synthetic";
  o.seq_len = T;
  o.n_tokens = n_tokens;
  o.n_memorize = n_memorize;
  o.seed = seed;
  o.examples_per_epoch = 100;
  return o;
}

bool same_batches(const Batch& a, const Batch& b) {
  return a.tokens == b.tokens && a.targets == b.targets;
}

// Oracles written from the task definitions, reading only the inputs.
std::vector<int32_t> selective_copy_oracle(const Batch& b, int M, int n_tokens) {
  std::vector<int32_t> pred(b.tokens.size(), 0);
  const int64_t L = b.T - M;
  for (int64_t r = 0; r < b.B; ++r) {
    int64_t next_marker = L;
    for (int64_t t = 0; t < L; ++t)
      if (b.tokens_row(r)[t] != n_tokens) pred[r * b.T + next_marker++] = b.tokens_row(r)[t];
  }
  return pred;
}
std::vector<int32_t> induction_oracle(const Batch& b, int n_tokens) {
  std::vector<int32_t> pred(b.tokens.size(), 0);
  for (int64_t r = 0; r < b.B; ++r) {
    const int32_t* x = b.tokens_row(r);
    int64_t first = 0;
    while (x[first] != n_tokens) ++first;
    pred[r * b.T + b.T - 1] = x[first + 1];
  }
  return pred;
}

TEST(SelectiveCopy, EveryExampleHasMDataTokensThenMMarkersWithTheirTargets) {
  const int64_t T = 40;
  const int M = 6, n = 10;
  SyntheticTaskDataset ds(SyntheticTaskKind::SelectiveCopy, task_options(T, n, M, 1));
  EXPECT_EQ(ds.vocab_size_needed(), n + 2);
  const int32_t blank = selective_copy_blank_id(n), marker = selective_copy_marker_id(n);
  EXPECT_EQ(blank, 10);
  EXPECT_EQ(marker, 11);
  double mean_position = 0;
  int64_t positions = 0;
  std::vector<int> first_slot_hits(static_cast<size_t>(T - M), 0);
  for (int step = 0; step < 50; ++step) {
    Batch b = ds.next_train_batch(8);
    for (int64_t r = 0; r < b.B; ++r) {
      const int32_t* x = b.tokens_row(r);
      const int32_t* y = b.targets_row(r);
      std::vector<int32_t> data;
      for (int64_t t = 0; t < T - M; ++t) {
        ASSERT_TRUE(x[t] == blank || (x[t] >= 0 && x[t] < n)) << x[t];
        ASSERT_EQ(y[t], -1);
        if (x[t] != blank) {
          data.push_back(x[t]);
          mean_position += static_cast<double>(t), ++positions;
          if (data.size() == 1) ++first_slot_hits[static_cast<size_t>(t)];
        }
      }
      ASSERT_EQ(data.size(), static_cast<size_t>(M)) << "not exactly M data tokens";
      for (int i = 0; i < M; ++i) {
        ASSERT_EQ(x[T - M + i], marker);
        ASSERT_EQ(y[T - M + i], data[static_cast<size_t>(i)]) << "answer " << i;
      }
    }
  }
  // Positions are uniform over the L slots: mean (L-1)/2 = 16.5 within 5 sigma.
  const double L = static_cast<double>(T - M), sigma = std::sqrt((L * L - 1) / 12.0 / positions);
  EXPECT_NEAR(mean_position / positions, (L - 1) / 2, 5 * sigma);
  EXPECT_LT(first_slot_hits[0], 200) << "the first data token is (almost) always at slot 0";
}

TEST(Induction, TwoTriggersAndTheAnswerIsTheTokenAfterTheFirst) {
  const int64_t T = 24;
  const int n = 16;
  SyntheticTaskDataset ds(SyntheticTaskKind::Induction, task_options(T, n, 8, 3));
  EXPECT_EQ(ds.vocab_size_needed(), n + 1);
  const int32_t trigger = induction_trigger_id(n);
  int64_t min_first = T, max_first = -1;
  for (int step = 0; step < 100; ++step) {
    Batch b = ds.next_train_batch(8);
    for (int64_t r = 0; r < b.B; ++r) {
      const int32_t* x = b.tokens_row(r);
      const int32_t* y = b.targets_row(r);
      std::vector<int64_t> triggers;
      for (int64_t t = 0; t < T; ++t) {
        ASSERT_TRUE(x[t] >= 0 && x[t] <= trigger);
        if (x[t] == trigger) triggers.push_back(t);
        if (t < T - 1) {
          ASSERT_EQ(y[t], -1);
        }
      }
      ASSERT_EQ(triggers.size(), 2u);
      ASSERT_EQ(triggers[1], T - 1);
      ASSERT_LE(triggers[0], T - 3);
      ASSERT_EQ(y[T - 1], x[triggers[0] + 1]);
      ASSERT_LT(y[T - 1], n);
      min_first = std::min(min_first, triggers[0]);
      max_first = std::max(max_first, triggers[0]);
    }
  }
  EXPECT_EQ(min_first, 0);
  EXPECT_EQ(max_first, T - 3);
}

TEST(SyntheticTasks, DeterministicBySeedWithAFixedSeparateValidationSet) {
  for (auto task : {SyntheticTaskKind::SelectiveCopy, SyntheticTaskKind::Induction}) {
    SyntheticTaskDataset a(task, task_options(32, 8, 4, 10));
    SyntheticTaskDataset b(task, task_options(32, 8, 4, 10));
    SyntheticTaskDataset c(task, task_options(32, 8, 4, 11));
    std::vector<Batch> train;
    for (int i = 0; i < 5; ++i) {
      train.push_back(a.next_train_batch(4));
      EXPECT_TRUE(same_batches(train.back(), b.next_train_batch(4)));
      EXPECT_FALSE(same_batches(train.back(), c.next_train_batch(4)));
    }
    auto v1 = a.validation_batches(4, 3);
    ASSERT_EQ(v1.size(), 3u);
    auto v2 = b.validation_batches(4, 3);
    SyntheticTaskDataset fresh(task, task_options(32, 8, 4, 10));
    auto v3 = fresh.validation_batches(4, 3);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_TRUE(same_batches(v1[i], v2[i]) && same_batches(v1[i], v3[i]));
      EXPECT_FALSE(same_batches(v1[i], train[i])) << "validation repeats training examples";
    }
    EXPECT_EQ(a.validation_batches(8, -1).size(), 1024u / 8);
  }
}

TEST(SyntheticTasks, OracleScoresOneAndAConstantGuessAboutOneOverN) {
  struct Case { SyntheticTaskKind task; int64_t T; int n; int M; };
  for (Case k : {Case{SyntheticTaskKind::SelectiveCopy, 48, 16, 8},
                 Case{SyntheticTaskKind::Induction, 32, 16, 0},
                 Case{SyntheticTaskKind::SelectiveCopy, 20, 4, 4}}) {
    SyntheticTaskDataset ds(k.task, task_options(k.T, k.n, std::max(k.M, 1), 21));
    TaskScore oracle, constant;
    for (const Batch& b : ds.validation_batches(50, 40)) {  // 2000 examples
      oracle += ds.task_accuracy(b, k.task == SyntheticTaskKind::Induction
                                        ? induction_oracle(b, k.n)
                                        : selective_copy_oracle(b, k.M, k.n));
      constant += ds.task_accuracy(b, std::vector<int32_t>(b.tokens.size(), 0));
    }
    const int64_t answers = 2000 * (k.task == SyntheticTaskKind::Induction ? 1 : k.M);
    EXPECT_EQ(oracle.counted, answers);
    EXPECT_EQ(oracle.accuracy(), 1.0);
    const double p = 1.0 / k.n, sigma = std::sqrt(p * (1 - p) / answers);
    EXPECT_NEAR(constant.accuracy(), p, 5 * sigma) << "n_tokens " << k.n;
    EXPECT_TRUE(ds.has_task_metric());
  }
}

TEST(SyntheticTasks, RestoreContinuesAndEpochsAreNominal) {
  SyntheticTaskDataset a(SyntheticTaskKind::SelectiveCopy, task_options(32, 8, 4, 2));
  for (int i = 0; i < 30; ++i) a.next_train_batch(7);  // 210 examples, epoch = 100
  EXPECT_EQ(a.epoch(), 2);
  EXPECT_NEAR(a.epoch_progress(), 2.1, 1e-12);
  const auto saved = a.state();
  SyntheticTaskDataset b(SyntheticTaskKind::SelectiveCopy, task_options(32, 8, 4, 999));
  b.restore(saved);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(same_batches(a.next_train_batch(7), b.next_train_batch(7)));
  SyntheticTaskDataset other(SyntheticTaskKind::Induction, task_options(32, 8, 4, 2));
  EXPECT_THROW(other.restore(saved), Error);
  SyntheticTaskDataset other_T(SyntheticTaskKind::SelectiveCopy, task_options(40, 8, 4, 2));
  EXPECT_THROW(other_T.restore(saved), Error);
}

TEST(SyntheticTasks, RejectsImpossibleOptions) {
  EXPECT_THROW(SyntheticTaskDataset(SyntheticTaskKind::SelectiveCopy, task_options(15, 8, 8, 1)),
               Error);  // needs T >= 2M
  EXPECT_THROW(SyntheticTaskDataset(SyntheticTaskKind::Induction, task_options(2, 8, 1, 1)), Error);
  EXPECT_THROW(SyntheticTaskDataset(SyntheticTaskKind::Induction, task_options(16, 1, 1, 1)), Error);
  SyntheticTaskDataset ds(SyntheticTaskKind::Induction, task_options(16, 8, 1, 1));
  Batch b = ds.next_train_batch(2);
  EXPECT_THROW(ds.task_accuracy(b, std::vector<int32_t>(3, 0)), Error);
}

}  // namespace
}  // namespace mg
