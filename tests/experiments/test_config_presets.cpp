// The presets of design.md §4 load with the table's numbers, and every YAML shipped in
// experiments/ loads cleanly and starts with the command that runs it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

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

struct PresetRow {  // one row of design.md §4's table, copied by hand
  const char* name;
  int d_model, vocab, mamba_layers, moe_layers, experts, d_state, expert_hidden, seq_len, batch;
};

const PresetRow kTable[] = {
    {"phase1", 512, 10000, 3, 4, 8, 16, 2048, 128, 4},
    {"phase2", 768, 15000, 4, 5, 8, 24, 3072, 192, 3},
    {"phase3", 1024, 25000, 5, 6, 12, 32, 4096, 256, 2},
    {"production3B", 2048, 50257, 30, 9, 8, 16, 8192, 512, 1},
};

std::string preset_path(const std::string& name) {
  return test_paths::repo_path("experiments/presets/" + name + ".yaml");
}

TEST(ConfigPresets, EachPresetHasTheTableNumbers) {
  for (const auto& row : kTable) {
    SCOPED_TRACE(row.name);
    ExperimentConfig c = load_config(preset_path(row.name)).config;
    const ModelConfig& m = c.model;
    EXPECT_EQ(c.experiment, row.name);
    EXPECT_EQ(m.d_model, row.d_model);
    EXPECT_EQ(m.vocab_size, row.vocab);
    EXPECT_EQ(m.n_mamba_layers(), row.mamba_layers);
    EXPECT_EQ(m.n_moe_layers(), row.moe_layers);
    EXPECT_EQ(m.n_layers(), row.mamba_layers + row.moe_layers);
    EXPECT_EQ(m.n_experts, row.experts);
    EXPECT_EQ(m.d_state, row.d_state);
    EXPECT_EQ(m.expert_hidden, row.expert_hidden);
    EXPECT_EQ(c.data.seq_len, row.seq_len);
    EXPECT_EQ(c.training.batch_size, row.batch);
    // "All: d_conv 4, expand 2, top-2, gelu experts."
    EXPECT_EQ(m.d_conv, 4);
    EXPECT_EQ(m.expand, 2);
    EXPECT_EQ(m.top_k, 2);
    EXPECT_EQ(m.expert_mlp, ExpertMlp::Gelu);
    EXPECT_EQ(m.resolved_dt_rank(), (row.d_model + 15) / 16);
  }
}

TEST(ConfigPresets, PatternsAreTheOnesTheDesignStates) {
  EXPECT_EQ(load_config(preset_path("phase1")).config.model.layer_pattern, "MEMEMEE");
  EXPECT_EQ(load_config(preset_path("phase2")).config.model.layer_pattern, "MEMEMEMEE");
  EXPECT_EQ(load_config(preset_path("phase3")).config.model.layer_pattern, "MEMEMEMEMEE");
  // production3B: MoE exactly at indices 3, 7, ..., 35 (every 4th from index 3) of 39.
  const ModelConfig m = load_config(preset_path("production3B")).config.model;
  ASSERT_EQ(m.n_layers(), 39);
  for (int i = 0; i < 39; ++i) EXPECT_EQ(m.is_moe_layer(i), i % 4 == 3) << "layer " << i;
}

TEST(ConfigPresets, EveryShippedYamlLoadsAndStartsWithItsCommand) {
  namespace fs = std::filesystem;
  int n = 0;
  const std::string root = test_paths::source_dir();
  for (const auto& entry : fs::recursive_directory_iterator(root + "/experiments")) {
    if (entry.path().extension() != ".yaml") continue;
    if (is_sweep_file(entry.path())) continue;  // sweep files (magellan sweep) are not experiments
    SCOPED_TRACE(entry.path().string());
    ++n;
    std::ifstream in(entry.path());
    std::string first;
    std::getline(in, first);
    EXPECT_EQ(first.rfind("# magellan ", 0), 0u) << "first line: " << first;
    // The command names this very file (relative to the repository root).
    std::string rel = fs::relative(entry.path(), root).string();
    EXPECT_NE(first.find(rel), std::string::npos) << "first line: " << first;
    LoadedConfig loaded;
    EXPECT_NO_THROW(loaded = load_config(entry.path().string()));
    EXPECT_FALSE(loaded.files.empty());
  }
  EXPECT_GE(n, 4);  // at least the four presets
}

TEST(ConfigPresets, QloraExampleExtendsPhase1AndResolvesItsPaths) {
  LoadedConfig l = load_config(test_paths::repo_path("experiments/phase1_qlora.yaml"));
  const ExperimentConfig& c = l.config;
  ASSERT_EQ(l.files.size(), 2u);  // the example, then the preset it extends
  EXPECT_NE(l.files[1].find("phase1.yaml"), std::string::npos);
  EXPECT_EQ(c.model.layer_pattern, "MEMEMEE");  // from the preset
  EXPECT_EQ(c.model.vocab_size, 50257);         // overridden by the example
  EXPECT_TRUE(c.lora.enabled && c.qlora.enabled);
  namespace fs = std::filesystem;
  ASSERT_EQ(c.data.path.size(), 1u);
  // Relative to experiments/, so the resolved paths are the files the repository ships.
  EXPECT_TRUE(fs::equivalent(c.data.path[0], test_paths::asset_path("tinyshakespeare.txt")));
  ASSERT_EQ(c.data.tokenizer.rfind("gpt2:", 0), 0u);
  EXPECT_TRUE(fs::equivalent(c.data.tokenizer.substr(5), test_paths::asset_path("gpt2")));
}

}  // namespace
}  // namespace mg
