// Overrides "key.sub=value": values are YAML (numbers, bools, null, lists, strings, maps),
// applied in order after every file, checked like file values, and an unknown key is an
// error naming the override with a suggestion.
#include <gtest/gtest.h>

#include "config_test_util.h"
#include "experiments/config_loader.h"

namespace mg {
namespace {

using testing::expect_error;
using testing::ScratchDir;

TEST(ConfigOverrides, ScalarsOfEveryType) {
  ExperimentConfig c =
      load_config_text("seed: 1\n", "t.yaml",
                       {"seed=42", "optimizer.lr=1e-3", "lora.enabled=true", "lora.r=8",
                        "model.expert_mlp=swiglu", "experiment=sweep_a", "model.dt_rank=12",
                        "training.steps=1e4", "model.capacity_factor=1.25"})
          .config;
  EXPECT_EQ(c.seed, 42u);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 1e-3);
  EXPECT_TRUE(c.lora.enabled);
  EXPECT_EQ(c.lora.r, 8);
  EXPECT_EQ(c.model.expert_mlp, ExpertMlp::Swiglu);
  EXPECT_EQ(c.experiment, "sweep_a");
  EXPECT_EQ(c.model.dt_rank, 12);
  EXPECT_EQ(c.training.steps, 10000);  // an integral real is accepted for an integer key
  EXPECT_DOUBLE_EQ(c.model.capacity_factor.value(), 1.25);
}

TEST(ConfigOverrides, ListsNullAndQuotedStrings) {
  ScratchDir dir;
  std::string f = dir.write("x.yaml", "model:\n  capacity_factor: 2.0\n  dt_rank: 8\nrun_dir: out\n");
  ExperimentConfig c =
      load_config(f, {"lora.target_modules=[in_proj, x_proj, 'layers.*.out_proj']",
                      "optimizer.betas=[0.8, 0.95]", "model.capacity_factor=null",
                      "model.dt_rank=auto", "run_dir=~", "lora.trainable=[]",
                      "experiment=\"123\"", "optimizer.no_decay=[norm]"})
          .config;
  EXPECT_EQ(c.lora.target_modules,
            (std::vector<std::string>{"in_proj", "x_proj", "layers.*.out_proj"}));
  EXPECT_DOUBLE_EQ(c.optimizer.betas[0], 0.8);
  EXPECT_DOUBLE_EQ(c.optimizer.betas[1], 0.95);
  EXPECT_FALSE(c.model.capacity_factor.has_value());
  EXPECT_FALSE(c.model.dt_rank.has_value());
  EXPECT_FALSE(c.run_dir.has_value());
  EXPECT_TRUE(c.lora.trainable.empty());
  EXPECT_EQ(c.experiment, "123");
  EXPECT_EQ(c.optimizer.no_decay, std::vector<std::string>{"norm"});
}

TEST(ConfigOverrides, PathsInOverridesResolveAgainstTheCurrentDirectory) {
  namespace fs = std::filesystem;
  ExperimentConfig c = load_config_text("", "t.yaml",
                                        {"data.source=text", "data.path=[a.txt, /abs/b.txt]"})
                           .config;
  ASSERT_EQ(c.data.path.size(), 2u);
  EXPECT_EQ(c.data.path[0], (fs::current_path() / "a.txt").lexically_normal().string());
  EXPECT_EQ(c.data.path[1], "/abs/b.txt");
}

TEST(ConfigOverrides, AppliedInOrderAfterTheFileAndMapsMerge) {
  ExperimentConfig c = load_config_text("lora:\n  r: 4\n  alpha: 8\n", "t.yaml",
                                        {"lora.r=5", "lora.r=6", "lora={alpha: 12, dropout: 0.1}"})
                           .config;
  EXPECT_EQ(c.lora.r, 6);  // last wins; the map override keeps r
  EXPECT_DOUBLE_EQ(c.lora.alpha, 12);
  EXPECT_DOUBLE_EQ(c.lora.dropout, 0.1);
}

TEST(ConfigOverrides, SplitOverride) {
  EXPECT_EQ(split_override("a.b=c"), (std::pair<std::string, std::string>{"a.b", "c"}));
  EXPECT_EQ(split_override("a.b=x=y"), (std::pair<std::string, std::string>{"a.b", "x=y"}));
  EXPECT_EQ(split_override(" seed =5"), (std::pair<std::string, std::string>{"seed", "5"}));
  EXPECT_EQ(split_override("run_dir="), (std::pair<std::string, std::string>{"run_dir", ""}));
}

TEST(ConfigOverrides, BadOverridesAreErrorsNamingTheOverride) {
  expect_error([] { load_config_text("", "t.yaml", {"lora.alpah=3"}); },
               {"override 'lora.alpah=3'", "unknown key 'lora.alpah'", "did you mean 'lora.alpha'?"});
  expect_error([] { load_config_text("", "t.yaml", {"lr=3"}); },
               {"override 'lr=3'", "did you mean 'optimizer.lr'?"});
  expect_error([] { load_config_text("", "t.yaml", {"lora.r"}); },
               {"override 'lora.r'", "expected key.sub=value"});
  expect_error([] { load_config_text("", "t.yaml", {"=3"}); }, {"override '=3'", "expected key.sub=value"});
  expect_error([] { load_config_text("", "t.yaml", {"lora..r=3"}); }, {"override 'lora..r=3'", "not a key path"});
  expect_error([] { load_config_text("", "t.yaml", {"lora.r=[1, 2"}); },
               {"override 'lora.r=[1, 2'", "not valid YAML"});
  expect_error([] { load_config_text("", "t.yaml", {"lora.r=eight"}); },
               {"override 'lora.r=eight'", "lora.r", "expected an integer", "got 'eight'"});
  expect_error([] { load_config_text("", "t.yaml", {"optimizer.name=adam"}); },
               {"override 'optimizer.name=adam'", "did you mean 'adamw'?"});
  expect_error([] { load_config_text("", "t.yaml", {"extends=a.yaml"}); },
               {"override 'extends=a.yaml'", "cannot be overridden"});
  expect_error([] { load_config_text("", "t.yaml", {"lora={r: 4, alpah: 2}"}); },
               {"override 'lora={r: 4, alpah: 2}'", "did you mean 'lora.alpha'?"});
  // An override that breaks a cross-field rule is reported against the override.
  expect_error([] { load_config_text("", "t.yaml", {"model.top_k=9"}); },
               {"override 'model.top_k=9'", "model.n_experts = 8"});
}

}  // namespace
}  // namespace mg
