// to_yaml is exact: load(to_yaml(c)) == c for the defaults, every preset, and a config with
// every key off its default (awkward strings and reals included); and to_yaml writes every key.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <filesystem>

#include "config_test_util.h"
#include "experiments/config_loader.h"
#include "tests/test_paths.h"

namespace {
// A sweep file (`magellan sweep`, trainer/sweep.h) starts with "# magellan sweep".
bool is_sweep_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::string first;
  std::getline(in, first);
  return first.rfind("# magellan sweep", 0) == 0;
}
}  // namespace

namespace mg {
namespace {

ExperimentConfig reload(const ExperimentConfig& c) {
  return load_config_text(to_yaml(c), "<to_yaml>").config;
}

// Every field changed from its default, with values that are hard to write back exactly.
ExperimentConfig everything_changed() {
  ExperimentConfig c;
  c.experiment = "weird: name # not a comment \"quoted\" tab\there";
  c.run_dir = "null";  // the string, not a null
  c.seed = 18446744073709551615ull;
  c.threads = 3;
  ModelConfig& m = c.model;
  m.d_model = 96;
  m.vocab_size = 300;
  m.layer_pattern = "MMEMME";
  m.d_state = 7;
  m.d_conv = 3;
  m.expand = 3;
  m.dt_rank = 5;
  m.dt_min = 0.1 + 0.2;  // 0.30000000000000004: needs 17 significant digits
  m.dt_max = 1.0 / 3.0;
  m.dt_init_floor = 1e-300;
  m.n_experts = 5;
  m.top_k = 3;
  m.expert_hidden = 33;
  m.expert_mlp = ExpertMlp::Swiglu;
  m.capacity_factor = 1.25;
  m.aux_loss_coef = 0.0;
  m.z_loss_coef = 2.5e-7;
  m.tie_embeddings = false;
  m.norm_eps = 1e-6;
  c.lora = {true, 7, 14.5, 0.05, true, {"in_proj", "layers.*.x_proj", "*gate*"}, {"norm", "lm_head"}};
  c.qlora = {true, "/abs/path with spaces/base.h5", /*quantize_embedding=*/false};
  OptimizerConfig& o = c.optimizer;
  o.name = OptimizerKind::Sgd;
  o.lr = 0.123456789012345678;
  o.betas = {0.85, 0.9999};
  o.eps = 1e-10;
  o.weight_decay = 0.01;
  o.no_decay = {"bias", "yes", "123", "", "[x]", "back\\slash"};  // strings YAML would otherwise misread
  o.no_decay.erase(o.no_decay.begin() + 3);        // (an empty pattern is not allowed)
  o.state_dtype = StateDtype::F32;
  o.momentum = 0.5;
  o.nesterov = true;
  o.grad_clip = 0.0;
  c.scheduler = {SchedulerKind::Wsd, 17, 1e-5, 0.35};
  DataConfig& d = c.data;
  d.source = DataSource::Jsonl;
  d.task = SyntheticTask::Induction;
  d.path = {"/data/a.jsonl", "/data/dir with space/", "/data/ümlaut.jsonl"};
  d.tokenizer = "gpt2:/opt/tokenizers/gpt2";
  d.seq_len = 77;
  d.val_fraction = 0.1;
  d.n_memorize = 3;
  d.n_tokens = 10;
  c.training = {12345, 5, 3, GradCheckpointing::EveryN, 3, OnNonfinite::Skip, 7};
  c.eval = {0, 2};
  c.checkpoint = {0, 1, false};
  c.logging = {ProgressMode::Never, LogLevel::Debug};
  return c;
}

TEST(ConfigRoundTrip, Defaults) {
  ExperimentConfig c;
  EXPECT_TRUE(reload(c) == c) << to_yaml(c);
}

TEST(ConfigRoundTrip, EveryKeyChanged) {
  ExperimentConfig c = everything_changed();
  ASSERT_NO_THROW(validate_config(c)) << to_yaml(c);
  ExperimentConfig back = reload(c);
  EXPECT_TRUE(back == c) << to_yaml(c) << "\n--- reloaded as ---\n" << to_yaml(back);
  // Field by field for a readable failure on the trickiest ones.
  EXPECT_EQ(back.experiment, c.experiment);
  EXPECT_EQ(back.run_dir, c.run_dir);
  EXPECT_EQ(back.seed, c.seed);
  EXPECT_EQ(back.model.dt_min, c.model.dt_min);
  EXPECT_EQ(back.optimizer.lr, c.optimizer.lr);
  EXPECT_EQ(back.optimizer.no_decay, c.optimizer.no_decay);
  EXPECT_EQ(back.data.path, c.data.path);
  // Every field really differs from its default, so the round trip tested each writer.
  ExperimentConfig def;
  EXPECT_FALSE(c.model == def.model || c.lora == def.lora || c.qlora == def.qlora ||
               c.optimizer == def.optimizer || c.scheduler == def.scheduler || c.data == def.data ||
               c.training == def.training || c.eval == def.eval || c.checkpoint == def.checkpoint ||
               c.logging == def.logging);
}

TEST(ConfigRoundTrip, EveryPresetAndExample) {
  namespace fs = std::filesystem;
  for (const auto& entry : fs::recursive_directory_iterator(test_paths::repo_path("experiments"))) {
    if (entry.path().extension() != ".yaml") continue;
    if (is_sweep_file(entry.path())) continue;  // sweep files (magellan sweep) are not experiments
    SCOPED_TRACE(entry.path().string());
    LoadedConfig l = load_config(entry.path().string());
    EXPECT_EQ(l.yaml, to_yaml(l.config));
    EXPECT_TRUE(reload(l.config) == l.config) << l.yaml;
  }
}

TEST(ConfigRoundTrip, ResolvedYamlReloadsFromAnotherDirectory) {
  // The trainer writes runs/<x>/config.yaml; loading it from there must give the same config
  // (paths were made absolute, so the new location does not move them).
  testing::ScratchDir dir;
  LoadedConfig l = load_config(test_paths::repo_path("experiments/phase1_qlora.yaml"));
  std::string written = dir.write("runs/phase1_qlora/config.yaml", l.yaml);
  EXPECT_TRUE(load_config(written).config == l.config);
}

TEST(ConfigRoundTrip, QloraQuantizeEmbeddingParsesAndRoundTrips) {
  const ExperimentConfig c =
      load_config_text("lora:\n  enabled: true\nqlora:\n  enabled: true\n  quantize_embedding: false\n", "t.yaml")
          .config;
  EXPECT_FALSE(c.qlora.quantize_embedding);
  const std::string yaml = to_yaml(c);
  EXPECT_NE(yaml.find("\n  quantize_embedding: false"), std::string::npos) << yaml;
  EXPECT_FALSE(reload(c).qlora.quantize_embedding);
  EXPECT_TRUE(reload(ExperimentConfig{}).qlora.quantize_embedding);
}

TEST(ConfigRoundTrip, TrainingBlockCacheParsesAndRoundTrips) {
  EXPECT_TRUE(ExperimentConfig{}.training.block_cache);
  const ExperimentConfig c = load_config_text("training:\n  block_cache: false\n", "t.yaml").config;
  EXPECT_FALSE(c.training.block_cache);
  EXPECT_NE(to_yaml(c).find("\n  block_cache: false"), std::string::npos);
  EXPECT_FALSE(reload(c).training.block_cache);
}

TEST(ConfigRoundTrip, TrainingDeviceParsesRoundTripsAndRefusesOthers) {
  EXPECT_EQ(ExperimentConfig{}.training.device, ComputeDevice::Cpu);
  const ExperimentConfig c = load_config_text("training:\n  device: cuda\n", "t.yaml").config;
  EXPECT_EQ(c.training.device, ComputeDevice::Cuda);
  EXPECT_NE(to_yaml(c).find("\n  device: cuda"), std::string::npos);
  EXPECT_EQ(reload(c).training.device, ComputeDevice::Cuda);
  try {
    load_config_text("training:\n  device: gpu\n", "t.yaml");
    FAIL() << "an unknown device must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("training.device"), std::string::npos) << e.what();
  }
}

TEST(ConfigRoundTrip, WritesEveryKeyOnce) {
  std::string yaml = to_yaml(ExperimentConfig{});
  for (const auto& path : config_key_paths()) {
    size_t dot = path.find('.');
    std::string key = dot == std::string::npos ? path : path.substr(dot + 1);
    std::string needle = (dot == std::string::npos ? "\n" : "\n  ") + key + ":";
    size_t first = yaml.find(needle);
    EXPECT_NE(first, std::string::npos) << "to_yaml lacks " << path;
  }
  EXPECT_EQ(config_key_paths().size(), 71u) << "a key was added or removed: update docs/config.md";
}

}  // namespace
}  // namespace mg
