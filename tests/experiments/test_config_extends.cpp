// `extends:` — maps merge recursively, scalars and lists replace, later bases win, the file
// itself wins over all its bases, paths resolve against the file that names them, and a
// cycle is an error that shows the chain.
#include <gtest/gtest.h>

#include "config_test_util.h"
#include "experiments/config_loader.h"

namespace mg {
namespace {

using testing::expect_error;
using testing::ScratchDir;

TEST(ConfigExtends, ThreeLevelChainMergesMapsAndReplacesScalarsAndLists) {
  ScratchDir dir;
  dir.write("base/root.yaml",
            "# magellan info root.yaml\n"
            "experiment: root\n"
            "seed: 1\n"
            "model:\n  d_model: 128\n  vocab_size: 300\n  layer_pattern: MMMM\n"
            "lora:\n  target_modules: [in_proj, out_proj, x_proj]\n  r: 4\n");
  dir.write("base/mid.yaml",
            "extends: root.yaml\n"
            "model:\n  d_model: 256\n"          // replaces a scalar, keeps the siblings
            "lora:\n  target_modules: [dt_proj]\n");  // a list replaces, it does not append
  std::string leaf = dir.write("leaf.yaml",
                               "extends: base/mid.yaml\n"
                               "experiment: leaf\n"
                               "model:\n  layer_pattern: MEME\n");
  LoadedConfig l = load_config(leaf);
  const ExperimentConfig& c = l.config;
  EXPECT_EQ(c.experiment, "leaf");      // leaf wins
  EXPECT_EQ(c.seed, 1u);                // only in root
  EXPECT_EQ(c.model.d_model, 256);      // mid over root
  EXPECT_EQ(c.model.vocab_size, 300);   // root, kept through two merges
  EXPECT_EQ(c.model.layer_pattern, "MEME");
  EXPECT_EQ(c.lora.target_modules, std::vector<std::string>{"dt_proj"});
  EXPECT_EQ(c.lora.r, 4);
  ASSERT_EQ(l.files.size(), 3u);
  EXPECT_NE(l.files[0].find("leaf.yaml"), std::string::npos);
  EXPECT_NE(l.files[1].find("mid.yaml"), std::string::npos);
  EXPECT_NE(l.files[2].find("root.yaml"), std::string::npos);
}

TEST(ConfigExtends, ListOfBasesLaterWinsAndFileWinsOverAll) {
  ScratchDir dir;
  dir.write("a.yaml", "seed: 1\nthreads: 1\nexperiment: a\n");
  dir.write("b.yaml", "seed: 2\nexperiment: b\n");
  std::string top = dir.write("top.yaml", "extends: [a.yaml, b.yaml]\nexperiment: top\n");
  ExperimentConfig c = load_config(top).config;
  EXPECT_EQ(c.seed, 2u);      // b after a
  EXPECT_EQ(c.threads, 1);    // only a sets it
  EXPECT_EQ(c.experiment, "top");
}

TEST(ConfigExtends, NullDoesNotEraseABaseSectionButDoesResetANullableKey) {
  ScratchDir dir;
  dir.write("base.yaml", "model:\n  d_model: 64\n  capacity_factor: 1.25\n");
  std::string top = dir.write("top.yaml", "extends: base.yaml\nlora:\nmodel:\n  capacity_factor: null\n");
  ExperimentConfig c = load_config(top).config;
  EXPECT_EQ(c.model.d_model, 64);
  EXPECT_FALSE(c.model.capacity_factor.has_value());
}

TEST(ConfigExtends, RelativePathsResolveAgainstTheFileThatNamesThem) {
  ScratchDir dir;
  dir.write("configs/base/data.yaml",
            "data:\n  source: text\n  path: [../corpus/a.txt, ../corpus/b]\n"
            "  tokenizer: ../tok/tokenizer.json\n"
            "qlora:\n  base_checkpoint: ../ckpt/base.h5\n");
  std::string top = dir.write("configs/run.yaml",
                              "extends: base/data.yaml\nmodel:\n  vocab_size: 50257\n");
  ExperimentConfig c = load_config(top).config;
  ASSERT_EQ(c.data.path.size(), 2u);
  EXPECT_EQ(c.data.path[0], dir.path("configs/corpus/a.txt"));
  EXPECT_EQ(c.data.path[1], dir.path("configs/corpus/b"));
  EXPECT_EQ(c.data.tokenizer, dir.path("configs/tok/tokenizer.json"));
  EXPECT_EQ(c.qlora.base_checkpoint.value(), dir.path("configs/ckpt/base.h5"));

  // The same keys set in the top file resolve against the top file's directory.
  std::string top2 = dir.write("configs/run2.yaml",
                               "extends: base/data.yaml\nmodel:\n  vocab_size: 50257\n"
                               "data:\n  path: corpus/c.txt\n  tokenizer: gpt2:tok\n");
  ExperimentConfig c2 = load_config(top2).config;
  EXPECT_EQ(c2.data.path, std::vector<std::string>{dir.path("configs/corpus/c.txt")});
  EXPECT_EQ(c2.data.tokenizer, "gpt2:" + dir.path("configs/tok"));
}

TEST(ConfigExtends, CyclesAreErrorsShowingTheChain) {
  ScratchDir dir;
  std::string self = dir.write("self.yaml", "extends: self.yaml\n");
  expect_error([&] { load_config(self); }, {"extends cycle", "self.yaml -> ", "self.yaml:1"});

  dir.write("a.yaml", "seed: 3\nextends: b.yaml\n");
  dir.write("b.yaml", "extends: [c.yaml]\n");
  dir.write("c.yaml", "extends: a.yaml\n");
  expect_error([&] { load_config(dir.path("a.yaml")); },
               {"extends cycle", "a.yaml -> ", "b.yaml -> ", "c.yaml -> ", "c.yaml:1"});

  // Through a symlink: the same file under another name is still the same file.
  dir.write("real.yaml", "extends: alias.yaml\n");
  std::filesystem::create_symlink(dir.path("real.yaml"), dir.path("alias.yaml"));
  expect_error([&] { load_config(dir.path("real.yaml")); }, {"extends cycle", "real.yaml:1"});
}

TEST(ConfigExtends, DiamondIsNotACycle) {
  ScratchDir dir;
  dir.write("common.yaml", "seed: 9\n");
  dir.write("left.yaml", "extends: common.yaml\nthreads: 2\n");
  dir.write("right.yaml", "extends: common.yaml\nexperiment: right\n");
  ExperimentConfig c = load_config(dir.write("top.yaml", "extends: [left.yaml, right.yaml]\n")).config;
  EXPECT_EQ(c.seed, 9u);
  EXPECT_EQ(c.threads, 2);
  EXPECT_EQ(c.experiment, "right");
}

TEST(ConfigExtends, MissingBaseAndBadExtendsValueAreErrors) {
  ScratchDir dir;
  std::string top = dir.write("top.yaml", "seed: 1\nextends: nowhere.yaml\n");
  expect_error([&] { load_config(top); }, {"top.yaml:2", "nowhere.yaml", "no such file"});
  std::string bad = dir.write("bad.yaml", "extends: {a: b}\n");
  expect_error([&] { load_config(bad); }, {"bad.yaml:1", "extends", "expected a file path"});
}

TEST(ConfigExtends, ErrorsInABaseNameTheBaseFileAndLine) {
  ScratchDir dir;
  dir.write("base.yaml", "seed: 1\nmodel:\n  d_model: 64\n  top_k: zero\n");
  std::string top = dir.write("top.yaml", "extends: base.yaml\nseed: 2\n");
  expect_error([&] { load_config(top); }, {"base.yaml:4", "model.top_k", "expected an integer"});
}

}  // namespace
}  // namespace mg
