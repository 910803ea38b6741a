#pragma once
// Strict YAML loader for ExperimentConfig (torchtune-style; keys and defaults: docs/config.md).
//
//   auto loaded = mg::load_config("experiments/presets/phase1.yaml", {"lora.r=8", "seed=7"});
//   loaded.config.model.d_model;   // 512
//   loaded.yaml;                   // the fully resolved config, for runs/<x>/config.yaml
//
// Every problem is an mg::Error naming the file and line, the key path, what was expected and,
// for an unknown key, the nearest valid key ("did you mean 'lora.alpha'?"). `extends:` merges
// base files (maps merge recursively, scalars and lists replace, later wins, cycles are errors);
// overrides "key.sub=value" are parsed as YAML values and applied last.
#include <string>
#include <string_view>
#include <vector>

#include "autograd/error.h"  // mg::Error, what every function here throws
#include "experiments/config.h"

namespace mg {

struct LoadedConfig {
  ExperimentConfig config;
  std::string yaml;                // to_yaml(config): every key, defaults filled in
  std::vector<std::string> files;  // the YAML files read: the named one first, then its bases
};

// Reads `path` (and the files it extends), applies `overrides` in order, checks everything.
LoadedConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Same, from YAML text. `source_name` is used in messages; relative paths in the text
// (extends, data.path, data.tokenizer, qlora.base_checkpoint) resolve against `base_dir`
// (empty = the current directory).
LoadedConfig load_config_text(std::string_view yaml_text, const std::string& source_name,
                              const std::vector<std::string>& overrides = {},
                              const std::string& base_dir = "");

// The fully resolved config as YAML: all keys, defaults filled, one short comment per key.
// Exact: load_config_text(to_yaml(c), ...).config == c for every valid c.
std::string to_yaml(const ExperimentConfig& config);

// Range and cross-field checks for a config built in code (a sweep, a test): throws the same
// mg::Error the loader would, with "<in-memory config>" in place of a file and line.
void validate_config(const ExperimentConfig& config);

// Every key path the schema knows, in to_yaml order ("experiment", ..., "model.d_model", ...).
std::vector<std::string> config_key_paths();

// Parses one "key.sub=value" override into (key path, value text); throws on a malformed one.
std::pair<std::string, std::string> split_override(const std::string& override_text);

}  // namespace mg
