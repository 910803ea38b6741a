// Every class of config error, checked by message content: the file and LINE, the key path,
// what was expected, what was found, and a suggestion where one exists.
#include <gtest/gtest.h>

#include "config_test_util.h"
#include "experiments/config_loader.h"

namespace mg {
namespace {

using testing::expect_error;
using testing::ScratchDir;

TEST(ConfigErrors, UnknownKeyNamesFileLineAndNearestKey) {
  ScratchDir dir;
  std::string f = dir.write("exp.yaml",
                            "# magellan train exp.yaml\n"
                            "experiment: x\n"
                            "lora:\n"
                            "  enabled: true\n"
                            "  alpah: 16\n");
  expect_error([&] { load_config(f); },
               {"exp.yaml:5", "unknown key 'lora.alpah'", "did you mean 'lora.alpha'?",
                "valid keys in 'lora'", "target_modules"});
}

TEST(ConfigErrors, UnknownKeySuggestionsAcrossSectionsAndAtTopLevel) {
  // The right name in the wrong section: suggest where it lives.
  expect_error([] { load_config_text("model:\n  lr: 0.1\n", "t.yaml"); },
               {"t.yaml:2", "unknown key 'model.lr'", "did you mean 'optimizer.lr'?"});
  // A misspelled section.
  expect_error([] { load_config_text("seed: 1\nlorra:\n  r: 4\n", "t.yaml"); },
               {"t.yaml:2", "unknown key 'lorra'", "did you mean 'lora'?"});
  // A misspelled top-level key; a transposition is one edit.
  expect_error([] { load_config_text("sede: 1\n", "t.yaml"); },
               {"t.yaml:1", "unknown key 'sede'", "did you mean 'seed'?"});
  expect_error([] { load_config_text("model:\n  d_modle: 1\n", "t.yaml"); },
               {"t.yaml:2", "did you mean 'model.d_model'?"});
  // Nothing close: no suggestion, but the valid keys are listed.
  try {
    load_config_text("training:\n  zzzzzzzzzz: 1\n", "t.yaml");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find("did you mean"), std::string::npos) << msg;
    EXPECT_NE(msg.find("valid keys in 'training': steps, batch_size"), std::string::npos) << msg;
  }
  // The dotted override form written in a file.
  expect_error([] { load_config_text("seed: 1\nmodel.d_model: 64\n", "t.yaml"); },
               {"t.yaml:2", "key 'model.d_model' has a dot", "'model:'"});
  // A key nested one level too deep.
  expect_error([] { load_config_text("model:\n  extra:\n    d_model: 3\n", "t.yaml"); },
               {"t.yaml:2", "unknown key 'model.extra'"});
}

TEST(ConfigErrors, WrongTypeSaysWhatWasExpectedAndFound) {
  expect_error([] { load_config_text("model:\n  d_model: wide\n", "t.yaml"); },
               {"t.yaml:2", "model.d_model", "expected an integer", "got 'wide'"});
  // A quoted number is a string, not a number.
  expect_error([] { load_config_text("model:\n  d_model: \"512\"\n", "t.yaml"); },
               {"t.yaml:2", "model.d_model", "the quoted string \"512\""});
  expect_error([] { load_config_text("model:\n  top_k: 1.5\n", "t.yaml"); },
               {"t.yaml:2", "model.top_k", "expected an integer", "got '1.5'"});
  expect_error([] { load_config_text("optimizer:\n  lr: fast\n", "t.yaml"); },
               {"t.yaml:2", "optimizer.lr", "expected a number > 0", "got 'fast'"});
  expect_error([] { load_config_text("lora:\n  enabled: yes\n", "t.yaml"); },
               {"t.yaml:2", "lora.enabled", "expected true or false", "got 'yes'"});
  expect_error([] { load_config_text("qlora:\n  quantize_embedding: 0\n", "t.yaml"); },
               {"t.yaml:2", "qlora.quantize_embedding", "expected true or false", "got '0'"});
  expect_error([] { load_config_text("lora:\n  target_modules: in_proj\n", "t.yaml"); },
               {"t.yaml:2", "lora.target_modules", "expected a list of strings"});
  expect_error([] { load_config_text("lora:\n  target_modules: [in_proj, [x]]\n", "t.yaml"); },
               {"t.yaml:2", "lora.target_modules[1]", "expected a non-empty string", "a list"});
  expect_error([] { load_config_text("model: 5\n", "t.yaml"); },
               {"t.yaml:1", "model: expected a map of model keys", "d_model", "got '5'"});
  expect_error([] { load_config_text("optimizer:\n  betas: [0.9]\n", "t.yaml"); },
               {"t.yaml:2", "optimizer.betas", "a list of two numbers"});
  expect_error([] { load_config_text("seed: -1\n", "t.yaml"); }, {"t.yaml:1", "seed", "out of range"});
  expect_error([] { load_config_text("- a\n- b\n", "t.yaml"); }, {"t.yaml", "top level is a list"});
  expect_error([] { load_config_text("model:\n  layer_pattern: MEXE\n", "t.yaml"); },
               {"t.yaml:2", "model.layer_pattern", "letters M (Mamba) and E (MoE)",
                "character 'X' at position 2"});
  expect_error([] { load_config_text("model:\n  dt_rank: big\n", "t.yaml"); },
               {"t.yaml:2", "model.dt_rank", "auto or an integer"});
  expect_error([] { load_config_text("data:\n  tokenizer: bytes\n", "t.yaml"); },
               {"t.yaml:2", "data.tokenizer", "did you mean 'byte'?"});
}

TEST(ConfigErrors, OutOfRangeShowsTheRange) {
  expect_error([] { load_config_text("model:\n  top_k: 0\n", "t.yaml"); },
               {"t.yaml:2", "model.top_k", "expected an integer in [1, 4096]", "got '0'", "out of range"});
  expect_error([] { load_config_text("\nlora:\n  dropout: 1.0\n", "t.yaml"); },
               {"t.yaml:3", "lora.dropout", "a number in [0, 1)", "got '1.0'"});
  expect_error([] { load_config_text("optimizer:\n  lr: 0\n", "t.yaml"); },
               {"t.yaml:2", "optimizer.lr", "a number > 0"});
  expect_error([] { load_config_text("training:\n  steps: 0\n", "t.yaml"); },
               {"t.yaml:2", "training.steps", "an integer >= 1"});
  expect_error([] { load_config_text("model:\n  capacity_factor: -1\n", "t.yaml"); },
               {"t.yaml:2", "model.capacity_factor", "a number > 0"});
  expect_error([] { load_config_text("optimizer:\n  betas: [0.9, 1.5]\n", "t.yaml"); },
               {"t.yaml:2", "optimizer.betas[1]", "a number in [0, 1)", "got '1.5'"});
  expect_error([] { load_config_text("training:\n  steps: 99999999999999999999999\n", "t.yaml"); },
               {"t.yaml:2", "training.steps", "out of range"});
  expect_error([] { load_config_text("optimizer:\n  lr: .inf\n", "t.yaml"); },
               {"t.yaml:2", "optimizer.lr"});
}

TEST(ConfigErrors, BadEnumValueListsChoicesAndSuggests) {
  expect_error([] { load_config_text("optimizer:\n  name: adam\n", "t.yaml"); },
               {"t.yaml:2", "optimizer.name", "expected one of adamw, sgd", "got 'adam'",
                "did you mean 'adamw'?"});
  expect_error([] { load_config_text("scheduler:\n  name: exponential\n", "t.yaml"); },
               {"t.yaml:2", "scheduler.name", "one of constant, linear, cosine, wsd"});
  expect_error([] { load_config_text("training:\n  grad_checkpointing: every_layers\n", "t.yaml"); },
               {"t.yaml:2", "did you mean 'every_layer'?"});
}

TEST(ConfigErrors, CrossFieldChecksNameBothKeys) {
  expect_error([] { load_config_text("model:\n  n_experts: 2\n  top_k: 3\n", "t.yaml"); },
               {"t.yaml:3", "model.top_k = 3", "model.n_experts = 2", "t.yaml:2"});
  // top_k vs the default n_experts (8): the unset key is reported as a default.
  expect_error([] { load_config_text("model:\n  top_k: 9\n", "t.yaml"); },
               {"t.yaml:2", "model.n_experts = 8", "not set: default"});
  expect_error([] { load_config_text("model:\n  n_experts: 0\n", "t.yaml"); },
               {"t.yaml:2", "model.n_experts is 0", "MEME"});
  // No MoE layer: zero experts is fine.
  EXPECT_NO_THROW(load_config_text("model:\n  n_experts: 0\n  layer_pattern: MM\n", "t.yaml"));
  expect_error([] { load_config_text("qlora:\n  enabled: true\n", "t.yaml"); },
               {"t.yaml:2", "qlora.enabled", "lora.enabled: true"});
  expect_error([] { load_config_text("lora:\n  enabled: true\n  target_modules: [in_porj]\n", "t.yaml"); },
               {"t.yaml:3", "'in_porj' matches no Linear"});
  // Attention-free model: the default in_proj/out_proj targets do not exist in an all-MoE stack.
  expect_error([] { load_config_text("lora:\n  enabled: true\nmodel:\n  layer_pattern: EE\n", "t.yaml"); },
               {"'in_proj' matches no Linear", "layer_pattern 'EE'"});
  EXPECT_NO_THROW(load_config_text(
      "lora:\n  enabled: true\n  target_modules: [experts.*.up, router]\n  trainable: [norm_f]\n"
      "model:\n  layer_pattern: EE\n", "t.yaml"));
  expect_error([] { load_config_text("lora:\n  enabled: true\n  trainable: [lm_head]\n", "t.yaml"); },
               {"t.yaml:3", "lora.trainable pattern 'lm_head'"});  // tied: there is no lm_head
  expect_error([] { load_config_text("scheduler:\n  min_lr: 0.1\n", "t.yaml"); },
               {"t.yaml:2", "scheduler.min_lr = 0.1", "optimizer.lr = 0.0003"});
  expect_error([] { load_config_text("scheduler:\n  warmup_steps: 50\ntraining:\n  steps: 10\n", "t.yaml"); },
               {"t.yaml:2", "warmup_steps = 50", "training.steps = 10", "t.yaml:4"});
  expect_error([] { load_config_text("model:\n  dt_min: 0.5\n", "t.yaml"); },
               {"t.yaml:2", "model.dt_min = 0.5", "model.dt_max = 0.1"});
  expect_error([] { load_config_text("data:\n  source: text\n", "t.yaml"); },
               {"t.yaml:2", "data.path is null"});
  expect_error([] { load_config_text("data:\n  path: a.txt\n", "t.yaml"); },
               {"t.yaml:2", "data.source is synthetic"});
  expect_error([] { load_config_text("model:\n  vocab_size: 100\ndata:\n  source: text\n  path: a.txt\n", "t.yaml"); },
               {"t.yaml:2", "byte tokenizer's 257 ids"});
  expect_error([] { load_config_text("model:\n  vocab_size: 17\n", "t.yaml"); },
               {"data.n_tokens = 16 needs model.vocab_size >= 18", "selective_copy"});
  EXPECT_NO_THROW(load_config_text("model:\n  vocab_size: 17\ndata:\n  task: induction\n", "t.yaml"));
  expect_error([] { load_config_text("data:\n  seq_len: 15\n", "t.yaml"); },
               {"t.yaml:2", "data.seq_len = 15", "n_memorize = 8"});
  expect_error([] { load_config_text("optimizer:\n  name: sgd\n  momentum: 0\n  nesterov: true\n", "t.yaml"); },
               {"t.yaml:4", "optimizer.nesterov needs optimizer.momentum > 0"});
}

TEST(ConfigErrors, SyntaxDuplicateKeysAndMissingFiles) {
  expect_error([] { load_config_text("model:\n  d_model: [1, 2\n", "t.yaml"); },
               {"t.yaml:", "YAML syntax error"});
  expect_error([] { load_config_text("seed: 1\nmodel:\n  d_model: 8\n  d_model: 16\n", "t.yaml"); },
               {"t.yaml:4", "duplicate key 'model.d_model'"});
  expect_error([] { load_config("/nonexistent/dir/x.yaml"); },
               {"cannot read config file", "/nonexistent/dir/x.yaml"});
  expect_error([] { load_config_text("experiment: a/b\n", "t.yaml"); },
               {"t.yaml:1", "experiment", "without '/'"});
}

TEST(ConfigErrors, ValidateConfigChecksAConfigBuiltInCode) {
  ExperimentConfig c;
  EXPECT_NO_THROW(validate_config(c));
  c.model.top_k = 20;
  expect_error([&] { validate_config(c); }, {"<in-memory config>", "model.top_k = 20"});
  c = ExperimentConfig{};
  c.lora.r = 0;
  expect_error([&] { validate_config(c); }, {"<in-memory config>", "lora.r", "out of range"});
}

}  // namespace
}  // namespace mg
