#pragma once
// Rebuilding a trained model from its checkpoint, for eval and generate: the config is the
// resolved YAML stored in the checkpoint, so nothing else is needed. An adapter-only
// checkpoint (QLoRA with a base checkpoint) loads its base first and checks its hash.
#include <memory>
#include <optional>
#include <string>

#include "experiments/config.h"
#include "inference/expert_stream.h"
#include "model/hybrid_lm.h"

namespace mg {

// Inference with expert streaming (inference/expert_stream.h): the model's MoE experts are
// not loaded; they are read from an expert store on demand.
struct ExpertStreamRequest {
  std::string store;  // empty: next to the checkpoint that holds the experts (its base for an
                      // adapter-only checkpoint), named by default_expert_store_path
  bool direct_io = false;
  ExpertStreamOptions options;  // cache_bytes 0: a quarter of the experts' decoded bytes, at
                                // least 2 * top_k experts
};

struct LoadedModel {
  ExperimentConfig config;
  std::string config_yaml;
  std::shared_ptr<ExpertStream> experts;  // when streaming (outlives the model that uses it)
  std::unique_ptr<HybridLM> model;
  int64_t step = 0;
  std::string checkpoint;
};

// `checkpoint`: a step_*.h5 / best.h5 file, or a run directory (its latest complete checkpoint).
// `adapter`: optionally a second checkpoint whose /adapter is loaded on top (its config's lora
// settings are used to create the adapters).
// `stream`: stream the experts instead of loading them. The store must fit the config and come
// from the checkpoint holding the experts (same step and `created` stamp), else a clear error.
LoadedModel load_model_from_checkpoint(const std::string& checkpoint, const std::optional<std::string>& adapter = {},
                                       const std::optional<ExpertStreamRequest>& stream = {});

// A run directory's newest complete checkpoint path, or the path itself when it is a file.
std::string resolve_checkpoint_path(const std::string& run_or_file);

}  // namespace mg
