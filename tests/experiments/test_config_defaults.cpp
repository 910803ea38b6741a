// Defaults: an empty YAML gives exactly the defaults of the schema in the task description
// (each value written out here by hand, not read from config.h), and derived sizes follow
// design.md §3's formulas.
#include <gtest/gtest.h>

#include <cmath>

#include "experiments/config_loader.h"
#include "tests/test_paths.h"

namespace mg {
namespace {

TEST(ConfigDefaults, EmptyFileGivesTheDocumentedDefaults) {
  ExperimentConfig c = load_config_text("", "<empty>").config;
  EXPECT_EQ(c.experiment, "magellan");
  EXPECT_FALSE(c.run_dir.has_value());
  EXPECT_EQ(c.resolved_run_dir(), "runs/magellan");
  EXPECT_EQ(c.seed, 1234u);
  EXPECT_EQ(c.threads, 0);

  const ModelConfig& m = c.model;
  EXPECT_EQ(m.d_model, 512);
  EXPECT_EQ(m.vocab_size, 10000);
  EXPECT_EQ(m.layer_pattern, "MEME");
  EXPECT_EQ(m.d_state, 16);
  EXPECT_EQ(m.d_conv, 4);
  EXPECT_EQ(m.expand, 2);
  EXPECT_FALSE(m.dt_rank.has_value());
  EXPECT_DOUBLE_EQ(m.dt_min, 0.001);
  EXPECT_DOUBLE_EQ(m.dt_max, 0.1);
  EXPECT_DOUBLE_EQ(m.dt_init_floor, 1e-4);
  EXPECT_EQ(m.n_experts, 8);
  EXPECT_EQ(m.top_k, 2);
  EXPECT_EQ(m.expert_hidden, 2048);
  EXPECT_EQ(m.expert_mlp, ExpertMlp::Gelu);
  EXPECT_FALSE(m.capacity_factor.has_value());
  EXPECT_DOUBLE_EQ(m.aux_loss_coef, 0.01);
  EXPECT_DOUBLE_EQ(m.z_loss_coef, 0.001);
  EXPECT_TRUE(m.tie_embeddings);
  EXPECT_DOUBLE_EQ(m.norm_eps, 1e-5);

  EXPECT_FALSE(c.lora.enabled);
  EXPECT_EQ(c.lora.r, 16);
  EXPECT_DOUBLE_EQ(c.lora.alpha, 32.0);
  EXPECT_DOUBLE_EQ(c.lora.dropout, 0.0);
  EXPECT_FALSE(c.lora.use_rslora);
  EXPECT_EQ(c.lora.target_modules, (std::vector<std::string>{"in_proj", "out_proj"}));
  EXPECT_TRUE(c.lora.trainable.empty());
  EXPECT_FALSE(c.qlora.enabled);
  EXPECT_FALSE(c.qlora.base_checkpoint.has_value());
  EXPECT_TRUE(c.qlora.quantize_embedding);

  const OptimizerConfig& o = c.optimizer;
  EXPECT_EQ(o.name, OptimizerKind::AdamW);
  EXPECT_DOUBLE_EQ(o.lr, 3e-4);
  EXPECT_DOUBLE_EQ(o.betas[0], 0.9);
  EXPECT_DOUBLE_EQ(o.betas[1], 0.999);
  EXPECT_DOUBLE_EQ(o.eps, 1e-8);
  EXPECT_DOUBLE_EQ(o.weight_decay, 0.0);
  EXPECT_EQ(o.no_decay, (std::vector<std::string>{"norm", "bias", "A_log", "mixer.D"}));
  EXPECT_EQ(o.state_dtype, StateDtype::F16);
  EXPECT_DOUBLE_EQ(o.momentum, 0.9);
  EXPECT_FALSE(o.nesterov);
  EXPECT_DOUBLE_EQ(o.grad_clip, 1.0);

  EXPECT_EQ(c.scheduler.name, SchedulerKind::Cosine);
  EXPECT_EQ(c.scheduler.warmup_steps, 0);
  EXPECT_DOUBLE_EQ(c.scheduler.min_lr, 0.0);
  EXPECT_DOUBLE_EQ(c.scheduler.decay_fraction, 0.2);

  const DataConfig& d = c.data;
  EXPECT_EQ(d.source, DataSource::Synthetic);
  EXPECT_EQ(d.task, SyntheticTask::SelectiveCopy);
  EXPECT_TRUE(d.path.empty());
  EXPECT_EQ(d.tokenizer, "byte");
  EXPECT_EQ(d.seq_len, 128);
  EXPECT_DOUBLE_EQ(d.val_fraction, 0.05);
  EXPECT_EQ(d.n_memorize, 8);
  EXPECT_EQ(d.n_tokens, 16);

  const TrainingConfig& t = c.training;
  EXPECT_EQ(t.steps, 1000);
  EXPECT_EQ(t.batch_size, 4);
  EXPECT_EQ(t.grad_accum, 1);
  EXPECT_EQ(t.grad_checkpointing, GradCheckpointing::None);
  EXPECT_EQ(t.checkpoint_every_n_layers, 2);
  EXPECT_EQ(t.on_nonfinite, OnNonfinite::Stop);
  EXPECT_EQ(t.log_every, 10);

  EXPECT_EQ(c.eval.every, 200);
  EXPECT_EQ(c.eval.batches, 20);
  EXPECT_EQ(c.checkpoint.every, 500);
  EXPECT_EQ(c.checkpoint.keep_last, 3);
  EXPECT_TRUE(c.checkpoint.keep_best);
  EXPECT_EQ(c.logging.progress, ProgressMode::Auto);
  EXPECT_EQ(c.logging.level, LogLevel::Info);

  // A default-constructed config is the same thing, and it is valid.
  EXPECT_TRUE(c == ExperimentConfig{});
  EXPECT_NO_THROW(validate_config(ExperimentConfig{}));
}

TEST(ConfigDefaults, EmptySectionsAndNullFileKeepDefaults) {
  // "lora:" with everything under it commented out is a null, which means "no keys here".
  ExperimentConfig c = load_config_text("lora:\nmodel:\n  d_model: 64\n", "<x>").config;
  ExperimentConfig expected;
  expected.model.d_model = 64;
  EXPECT_TRUE(c == expected);
}

TEST(ConfigDefaults, DerivedSizesFollowDesignFormulas) {
  ModelConfig m;
  // R = ceil(C / 16), written as the ceiling of a real division to be independent of the
  // integer formula in config.h.
  for (int c : {1, 15, 16, 17, 512, 768, 1000, 2048}) {
    m.d_model = c;
    EXPECT_EQ(m.resolved_dt_rank(), static_cast<int>(std::ceil(c / 16.0))) << "d_model " << c;
  }
  m.dt_rank = 7;
  EXPECT_EQ(m.resolved_dt_rank(), 7);
  m.d_model = 768;
  m.expand = 2;
  EXPECT_EQ(m.d_inner(), 1536);
  m.layer_pattern = "MEMEMEE";
  EXPECT_EQ(m.n_layers(), 7);
  EXPECT_EQ(m.n_mamba_layers(), 3);
  EXPECT_EQ(m.n_moe_layers(), 4);
  EXPECT_TRUE(m.is_moe_layer(1));
  EXPECT_FALSE(m.is_moe_layer(0));
}

TEST(ConfigDefaults, LoraScaleIsAlphaOverRankOrOverSqrtRank) {
  LoraConfig l;
  l.r = 16;
  l.alpha = 32;
  EXPECT_DOUBLE_EQ(l.scale(), 2.0);
  l.use_rslora = true;
  EXPECT_DOUBLE_EQ(l.scale(), 8.0);  // 32 / sqrt(16)
}

TEST(ConfigDefaults, NamePatternsMatchSubstringsWithWildcards) {
  EXPECT_TRUE(pattern_matches("in_proj", "layers.0.mixer.in_proj.weight"));
  EXPECT_TRUE(pattern_matches("norm", "norm_f.weight"));
  EXPECT_TRUE(pattern_matches("norm", "layers.3.norm.weight"));
  EXPECT_TRUE(pattern_matches("mixer.D", "layers.2.mixer.D"));
  EXPECT_FALSE(pattern_matches("mixer.D", "layers.2.mixer.dt_proj.bias"));
  EXPECT_TRUE(pattern_matches("layers.*.x_proj", "layers.12.mixer.x_proj.weight"));
  EXPECT_FALSE(pattern_matches("layers.*.x_proj", "layers.12.mixer.dt_proj.weight"));
  EXPECT_TRUE(pattern_matches("experts.*.up", "layers.1.mixer.experts.7.up.weight"));
  EXPECT_TRUE(pattern_matches("*", "anything"));
  EXPECT_TRUE(pattern_matches("a*b*c", "xxaQQbWWcyy"));
  EXPECT_FALSE(pattern_matches("a*b*c", "xxaQQcWWbyy"));
  EXPECT_FALSE(pattern_matches("lm_head", "embedding.weight"));
}

TEST(ConfigDefaults, EveryKeyIsDocumented) {
  const std::string doc = test_paths::read_repo_file("docs/config.md");
  for (const auto& key : config_key_paths())
    EXPECT_NE(doc.find("`" + key + "`"), std::string::npos) << "docs/config.md lacks `" << key << "`";
}

}  // namespace
}  // namespace mg
