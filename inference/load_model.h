#pragma once
// Rebuilding a trained model from its checkpoint, for eval and generate: the config is the
// resolved YAML stored in the checkpoint, so nothing else is needed. An adapter-only
// checkpoint (QLoRA with a base checkpoint) loads its base first and checks its hash.
#include <memory>
#include <optional>
#include <string>

#include "experiments/config.h"
#include "model/hybrid_lm.h"

namespace mg {

struct LoadedModel {
  ExperimentConfig config;
  std::string config_yaml;
  std::unique_ptr<HybridLM> model;
  int64_t step = 0;
  std::string checkpoint;
};

// `checkpoint`: a step_*.h5 / best.h5 file, or a run directory (its latest complete checkpoint).
// `adapter`: optionally a second checkpoint whose /adapter is loaded on top (its config's lora
// settings are used to create the adapters).
LoadedModel load_model_from_checkpoint(const std::string& checkpoint, const std::optional<std::string>& adapter = {});

// A run directory's newest complete checkpoint path, or the path itself when it is a file.
std::string resolve_checkpoint_path(const std::string& run_or_file);

}  // namespace mg
