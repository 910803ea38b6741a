#pragma once
// Importing a pretrained Mamba from a Hugging Face model directory (transformers'
// MambaForCausalLM, e.g. state-spaces/mamba-130m-hf): config.json plus model.safetensors, or
// the shards that model.safetensors.index.json lists. design.md §3's names are HF's without
// "backbone." ("backbone.embeddings.weight" -> "embedding.weight", "backbone.layers.3.mixer.
// A_log" -> "layers.3.mixer.A_log"), so the import is a rename plus dtype conversion (F32, F16,
// BF16, F64 -> float32). Every parameter of the model must come from the files, with its shape,
// and every tensor of the files must land somewhere: anything else is an error naming the file.
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "experiments/config.h"
#include "model/hybrid_lm.h"

namespace mg {

// config.json (MambaConfig) -> an all-Mamba ModelConfig. Refuses what magellan's Mamba block
// does not compute (biases on in_proj/out_proj, no conv bias, an activation other than silu)
// and other model types, naming the key and the file.
ModelConfig hf_mamba_model_config(const std::string& config_json_path);

// design.md's name of an HF tensor; "" when it has none (a tied lm_head.weight).
std::string magellan_name_from_hf(const std::string& hf_name, bool tied_embeddings);

struct HfImportReport {
  std::vector<std::string> files;             // safetensors files read, in order
  std::map<std::string, int> tensors_by_dtype;  // source dtype -> count
  int64_t parameters = 0;
};

// Fills every parameter of `model` (built from hf_mamba_model_config of the same directory)
// from the directory's safetensors files. `on_progress` (optional) hears the parameters
// loaded so far after each tensor, out of model.num_parameters().
HfImportReport load_hf_mamba_weights(const std::string& dir, HybridLM& model,
                                     const std::function<void(int64_t)>& on_progress = {});

}  // namespace mg
