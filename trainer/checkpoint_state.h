#pragma once
// The non-model parts of a checkpoint (docs/checkpoint-format.md): the root attributes and
// everything a resumed run needs to continue bit-exactly besides the model and optimizer:
//   /              format, format_version, kind ("full" | "adapter"), step, tokens_seen,
//                  config (the resolved YAML), created, magellan_version,
//                  base_checkpoint + base_fnv1a64 (adapter-only checkpoints)
//   /scheduler     attributes step, lr (the LR of the last step taken)
//   /rng           uint64 (4) xoshiro256** state of the dropout generator (stored as int64)
//   /data          uint64 (n) the dataset's sampler state (stored as int64)
//   /train         attributes best_eval_loss, best_eval_step
#include <optional>
#include <string>
#include <vector>

#include "autograd/rng.h"
#include "checkpoints/h5_file.h"

namespace mg {

inline constexpr const char* kCheckpointFormat = "magellan-checkpoint";
inline constexpr int64_t kCheckpointFormatVersion = 1;

struct TrainState {
  int64_t step = 0;          // optimizer steps taken
  int64_t tokens_seen = 0;
  double best_eval_loss = 0;
  int64_t best_eval_step = -1;
};

void write_checkpoint_header(H5File& f, const TrainState& s, const std::string& config_yaml,
                             const std::string& kind, const std::optional<std::string>& base_checkpoint);
void write_train_state(H5File& f, const TrainState& s, const Rng& rng, const std::vector<uint64_t>& data_state,
                       double last_lr);
// Checks format and version (clear errors for a foreign or newer file) and reads the state.
void read_train_state(const H5File& f, TrainState& s, Rng& rng, std::vector<uint64_t>& data_state);
// Throws unless f is a magellan checkpoint of a version this build reads.
void check_checkpoint_format(const H5File& f);

// FNV-1a 64-bit digest of a file's bytes, hex: identifies the base checkpoint of an adapter.
std::string file_fnv1a64(const std::string& path);

}  // namespace mg
