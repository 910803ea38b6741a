// The training loop end to end on a tiny model and the embedded synthetic task: bit-exact
// resume, metrics in HDF5, the NaN guard, and learning.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "autograd/block_cache.h"
#include "checkpoints/atomic_save.h"
#include "checkpoints/h5_file.h"
#include "checkpoints/metrics_reader.h"
#include "trainer/trainer.h"

namespace fs = std::filesystem;

namespace mg {
namespace {

ExperimentConfig tiny_run(const std::string& name) {
  ExperimentConfig c;
  c.experiment = name;
  c.run_dir = (fs::temp_directory_path() / ("magellan_test_" + name + "_" + std::to_string(::getpid()))).string();
  fs::remove_all(*c.run_dir);
  c.model.d_model = 32;
  c.model.vocab_size = 32;
  c.model.layer_pattern = "ME";
  c.model.d_state = 8;
  c.model.n_experts = 4;
  c.model.expert_hidden = 64;
  c.data.seq_len = 32;
  c.data.n_memorize = 4;
  c.data.n_tokens = 8;
  c.training.steps = 8;
  c.training.batch_size = 4;
  c.training.log_every = 4;
  c.eval.every = 4;
  c.eval.batches = 2;
  c.checkpoint.every = 2;
  c.checkpoint.keep_last = 2;
  c.optimizer.lr = 3e-3;
  c.optimizer.weight_decay = 0.01;
  c.scheduler.warmup_steps = 2;
  c.threads = 2;
  return c;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<float> final_weights(const std::string& ckpt) {
  H5File f = H5File::open_read(ckpt);
  std::vector<float> all;
  for (const std::string& n : f.list("/model")) {
    auto v = f.read_vector<float>("/model/" + n);
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

TEST(Trainer, ResumeIsBitExact) {
  for (StateDtype sd : {StateDtype::F16, StateDtype::F32}) {
    ExperimentConfig a = tiny_run("straight");
    a.optimizer.state_dtype = sd;
    a.training.grad_accum = 2;
    a.lora.dropout = 0.0;
    TrainSummary straight = Trainer(a, "straight", {.quiet = true}).run();
    ASSERT_EQ(straight.final_step, 8);

    ExperimentConfig b = a;
    b.run_dir = *a.run_dir + "_split";
    fs::remove_all(*b.run_dir);
    TrainSummary first = Trainer(b, "split", {.quiet = true, .stop_after_steps = 3}).run();
    EXPECT_EQ(first.status, "stopped");
    EXPECT_EQ(first.final_step, 3);
    TrainSummary second = Trainer(b, "split", {.resume = true, .quiet = true}).run();
    EXPECT_EQ(second.start_step, 3);
    EXPECT_EQ(second.final_step, 8);

    std::vector<double> joined = first.step_losses;
    joined.insert(joined.end(), second.step_losses.begin(), second.step_losses.end());
    ASSERT_EQ(joined.size(), straight.step_losses.size());
    for (size_t i = 0; i < joined.size(); ++i) EXPECT_EQ(joined[i], straight.step_losses[i]) << "step " << i + 1;
    EXPECT_EQ(final_weights(straight.last_checkpoint), final_weights(second.last_checkpoint));

    // metrics.h5 of the resumed run holds each step exactly once (a row every step, whatever
    // training.log_every = 4 says about log lines: docs/config.md).
    MetricSeries loss = MetricsReader(*b.run_dir + "/metrics.h5").read("train/loss");
    ASSERT_EQ(loss.steps.size(), 8u);
    for (int i = 0; i < 8; ++i) {
      EXPECT_EQ(loss.steps[i], i + 1);
      EXPECT_EQ(loss.values[i], straight.step_losses[i]);
    }
    fs::remove_all(*a.run_dir);
    fs::remove_all(*b.run_dir);
  }
}

TEST(Trainer, BlockCacheChangesNoBit) {
  // Activations of >= 1 MiB (B 8 x T 256 x 2D 256 floats; logits B x T x V 256), so the trainer's
  // BlockCache scope hands used blocks back to later steps, filled with NaN bytes by the
  // poison test aid: every loss and weight must be what fresh, zeroed mappings give. Three
  // setups: plain; checkpointing every layer with gradient accumulation; QLoRA with dropout.
  BlockCache::PoisonReused poison;
  for (int setup = 0; setup < 3; ++setup) {
    std::vector<std::vector<double>> losses;
    std::vector<std::vector<float>> weights;
    for (bool cache : {false, true}) {
      ExperimentConfig c = tiny_run(cache ? "block_cache_on" : "block_cache_off");
      c.model.d_model = 64;
      c.model.vocab_size = 256;
      c.data.seq_len = 256;
      c.training.batch_size = 8;
      c.training.steps = 4;
      c.threads = 1;  // ctest runs two tests at once on 2 cores
      c.training.block_cache = cache;
      c.checkpoint.every = 0;
      c.eval.every = 2;
      if (setup == 1) {
        c.training.grad_checkpointing = GradCheckpointing::EveryLayer;
        c.training.grad_accum = 2;
      } else if (setup == 2) {
        c.lora.enabled = c.qlora.enabled = true;
        c.lora.dropout = 0.1;
      }
      BlockCache::reset_stats();
      TrainSummary s = Trainer(c, "block_cache", {.quiet = true}).run();
      const BlockCacheStats st = BlockCache::stats();
      if (cache)
        EXPECT_GT(st.hits, st.misses) << "setup " << setup << ": the steps should reuse their blocks";
      else
        EXPECT_EQ(st.hits, 0);
      EXPECT_EQ(st.cached_bytes, 0u) << "the scope closes with the run";
      losses.push_back(s.step_losses);
      weights.push_back(final_weights(s.last_checkpoint));
      fs::remove_all(*c.run_dir);
    }
    ASSERT_EQ(losses[0].size(), 4u);
    EXPECT_EQ(losses[0], losses[1]) << "setup " << setup;
    EXPECT_TRUE(weights[0] == weights[1]) << "setup " << setup;
  }
}

TEST(Trainer, RefusesToOverwriteAnExistingRunAndKeepsLastN) {
  ExperimentConfig c = tiny_run("existing");
  Trainer(c, "x", {.quiet = true}).run();
  auto ckpts = list_checkpoints(*c.run_dir + "/checkpoints");
  EXPECT_EQ(ckpts.size(), 2u) << "keep_last = 2";
  EXPECT_EQ(ckpts.back().step, 8);
  EXPECT_TRUE(fs::exists(*c.run_dir + "/best.h5"));
  EXPECT_TRUE(fs::exists(*c.run_dir + "/train.log"));
  EXPECT_TRUE(fs::exists(*c.run_dir + "/config.yaml"));
  try {
    Trainer(c, "x", {.quiet = true}).run();
    FAIL() << "a second run into the same dir must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--resume"), std::string::npos) << e.what();
  }
  fs::remove_all(*c.run_dir);
}

TEST(Trainer, NonFiniteLossStopsOrSkipsWithTheStep) {
  ExperimentConfig c = tiny_run("nan");
  c.optimizer.lr = 1e30;  // explodes within a few steps
  c.optimizer.grad_clip = 0;
  c.scheduler.warmup_steps = 0;
  try {
    Trainer(c, "x", {.quiet = true}).run();
    FAIL() << "expected a non-finite stop";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("step "), std::string::npos) << e.what();
  }
  fs::remove_all(*c.run_dir);
  c.training.on_nonfinite = OnNonfinite::Skip;
  TrainSummary s = Trainer(c, "x", {.quiet = true}).run();
  EXPECT_GT(s.skipped_steps, 0);
  fs::remove_all(*c.run_dir);
}

TEST(Trainer, LossFallsAndEvalReportsTaskAccuracy) {
  ExperimentConfig c = tiny_run("learn");
  c.training.steps = 60;
  c.eval.every = 60;
  c.checkpoint.every = 0;
  TrainSummary s = Trainer(c, "x", {.quiet = true}).run();
  // At init the loss is about log(vocab 32) = 3.47; the answer tokens are uniform over the 8
  // data tokens, so a model that has learned the answer vocabulary is at log 8 = 2.08.
  EXPECT_GT(s.step_losses.front(), 3.0);
  EXPECT_LT(s.step_losses.back(), 2.4);
  EXPECT_GE(s.final_eval_accuracy, 0.0);
  EXPECT_LE(s.final_eval_accuracy, 1.0);
  fs::remove_all(*c.run_dir);
}

// A resume that is refused (here: an override that changes the model's shapes, so the
// checkpoint does not load) writes nothing into the run dir; the plain resume still works.
TEST(Trainer, RefusedResumeWritesNothing) {
  ExperimentConfig c = tiny_run("refused_resume");
  TrainSummary first = Trainer(c, "original", {.overrides = {"seed=1"}, .quiet = true, .stop_after_steps = 4}).run();
  ASSERT_EQ(first.status, "stopped");
  const std::string dir = *c.run_dir;
  const std::string config = read_text(dir + "/config.yaml"), overrides = read_text(dir + "/overrides.txt"),
                    log = read_text(dir + "/train.log"), summary = read_text(dir + "/summary.yaml");
  ExperimentConfig wider = c;
  wider.model.d_model = 64;
  EXPECT_THROW(Trainer(wider, "wider", {.resume = true, .overrides = {"model.d_model=64"}, .quiet = true}).run(),
               Error);
  EXPECT_EQ(read_text(dir + "/config.yaml"), config);
  EXPECT_EQ(read_text(dir + "/overrides.txt"), overrides);
  EXPECT_EQ(read_text(dir + "/train.log"), log);
  EXPECT_EQ(read_text(dir + "/summary.yaml"), summary);
  TrainSummary resumed = Trainer(c, "original", {.resume = true, .quiet = true}).run();
  EXPECT_EQ(resumed.status, "finished");
  EXPECT_EQ(resumed.final_step, 8);
  // The log of the accepted resume reaches train.log, setup's lines included.
  EXPECT_NE(read_text(dir + "/train.log").find("resumed from"), std::string::npos);
  EXPECT_NE(read_text(dir + "/overrides.txt").find("# --resume"), std::string::npos);
  fs::remove_all(dir);
}

// Resuming a finished run does nothing and says how to extend it; the run dir is untouched.
TEST(Trainer, ResumeOfAFinishedRunIsRefused) {
  ExperimentConfig c = tiny_run("finished_resume");
  Trainer(c, "x", {.quiet = true}).run();
  const std::string dir = *c.run_dir;
  const std::string summary = read_text(dir + "/summary.yaml"), overrides = read_text(dir + "/overrides.txt");
  const auto ckpts = list_checkpoints(dir + "/checkpoints");
  try {
    Trainer(c, "x", {.resume = true, .quiet = true}).run();
    FAIL() << "resuming a finished run must be refused";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("finished"), std::string::npos) << what;
    EXPECT_NE(what.find("training.steps=N"), std::string::npos) << what;
  }
  EXPECT_EQ(read_text(dir + "/summary.yaml"), summary);
  EXPECT_EQ(read_text(dir + "/overrides.txt"), overrides);
  EXPECT_EQ(list_checkpoints(dir + "/checkpoints").size(), ckpts.size());
  // Extending it works.
  c.training.steps = 10;
  TrainSummary more = Trainer(c, "x", {.resume = true, .quiet = true}).run();
  EXPECT_EQ(more.final_step, 10);
  fs::remove_all(dir);
}

// A run that fails during setup leaves no run dir behind, and never removes one that existed.
TEST(Trainer, FailedStartLeavesNoRunDir) {
  ExperimentConfig c = tiny_run("failed_start");
  c.data.source = DataSource::Text;
  c.data.path = {(fs::temp_directory_path() / "magellan_no_such_corpus.txt").string()};
  c.model.vocab_size = 257;
  const std::string dir = *c.run_dir;
  try {
    Trainer(c, "x", {.quiet = true}).run();
    FAIL() << "a missing data.path must fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("that file's folder"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir)) << "the failed start left " << dir;
  fs::create_directories(dir + "/notes");
  EXPECT_THROW(Trainer(c, "x", {.quiet = true}).run(), Error);
  EXPECT_TRUE(fs::exists(dir + "/notes"));
  EXPECT_FALSE(fs::exists(dir + "/config.yaml"));
  fs::remove_all(dir);
}

// A run stopped before its first log line or eval reports no made-up numbers.
TEST(Trainer, StoppedSummaryHasNoZeros) {
  ExperimentConfig c = tiny_run("stopped_summary");
  TrainSummary s = Trainer(c, "x", {.quiet = true, .stop_after_steps = 1}).run();
  EXPECT_EQ(s.status, "stopped");
  EXPECT_FALSE(s.interrupted) << "stop_after_steps is not an interruption";
  EXPECT_TRUE(std::isfinite(s.final_train_loss)) << "the one step's loss";
  EXPECT_GT(s.final_train_loss, 0.0);
  EXPECT_TRUE(std::isnan(s.final_eval_loss));
  EXPECT_TRUE(std::isnan(s.best_eval_loss));
  const std::string summary = read_text(*c.run_dir + "/summary.yaml");
  EXPECT_NE(summary.find("status: stopped"), std::string::npos) << summary;
  EXPECT_NE(summary.find("final_eval_loss: .nan"), std::string::npos) << summary;
  EXPECT_NE(summary.find("best_eval_loss: .nan"), std::string::npos) << summary;
  EXPECT_NE(summary.find("final_eval_accuracy: .nan"), std::string::npos) << summary;
  EXPECT_EQ(summary.find("final_train_loss: 0\n"), std::string::npos) << summary;
  fs::remove_all(*c.run_dir);
}

}  // namespace
}  // namespace mg
