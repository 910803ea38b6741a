#pragma once
// The model part of a checkpoint (design.md §6, docs/checkpoint-format.md):
//   /model/<name>                     float32 tensors under design.md §3's names
//   /quantized/<name>/packed          uint8  NF4 codes, 2 per byte (high nibble first); <name>
//                                     is a Linear's weight or embedding.weight
//   /quantized/<name>/absmax_codes    uint8  double-quantized block absmax
//   /quantized/<name>/absmax_scales   float32
//     attributes rows, cols, absmax_offset, blocksize = 64, absmax_blocksize = 256
//   /adapter/<module>.lora_A|lora_B   float32 LoRA weights (attributes r, alpha, dropout,
//                                     use_rslora on /adapter)
// Loading matches datasets to the model's parameters by name, so a file written by another
// tool (h5py) with /model in this layout loads; float64 datasets convert to float32.
#include <string>

#include "checkpoints/h5_file.h"
#include "model/hybrid_lm.h"

namespace mg {

enum class ModelSaveMode {
  Full,          // every float parameter in /model, NF4 bases in /quantized, adapters in /adapter
  AdapterOnly,   // adapters + the other trainable parameters only (QLoRA: the base lives elsewhere)
};

void write_model(H5File& f, HybridLM& model, ModelSaveMode mode);

struct ModelLoadReport {
  int loaded = 0;             // /model datasets loaded
  int quantized = 0;          // NF4 weights loaded
  int adapters = 0;           // LoRA pairs loaded
  std::vector<std::string> missing;  // model parameters the file lacks (kept as they were)
};

// Loads what the file has into the model: /model into parameters (shape-checked),
// /quantized into Linears and the embedding (which become NF4), /adapter into existing
// adapters (the model must already have adapters of the same rank, e.g. from apply_lora with
// the run's config). The file decides the embedding's storage: an NF4 embedding the model
// made itself goes back to float32 when the file holds /model/embedding.weight.
// `require_all`: every float parameter that is not NF4-quantized must be present in /model.
ModelLoadReport read_model(const H5File& f, HybridLM& model, bool require_all);

// One NF4 weight stored at `group` ("/quantized/<name>.weight"), size-checked.
std::shared_ptr<NF4Weight> read_nf4_weight(const H5File& f, const std::string& group);

}  // namespace mg
