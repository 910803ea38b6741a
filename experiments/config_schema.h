#pragma once
// Internal to the config loader: the schema as one table. Each row is a key path with its
// reader (YAML value -> ExperimentConfig field, with type and range checks) and its writer
// (field -> YAML text). Reading, to_yaml and the unknown-key suggestions all walk this one
// table, so a key cannot be readable but not written, or written but not suggested.
#include <functional>
#include <string>
#include <vector>

#include "experiments/config.h"
#include "experiments/config_tree.h"

namespace mg::config_detail {

struct FieldSpec {
  std::string path;  // "lora.alpha": section "lora", key "alpha"; top-level keys have no dot
  std::string doc;   // one line, written as the key's comment by to_yaml
  std::function<void(const Entry&, ExperimentConfig&)> read;
  std::function<std::string(const ExperimentConfig&)> write;
};

// The schema, in to_yaml order: top-level keys first, then the sections.
const std::vector<FieldSpec>& config_fields();

// Section names ("model", "lora", ...) in to_yaml order.
std::vector<std::string> config_sections();

// Cross-field checks (top_k <= n_experts, min_lr <= lr, ...). `where_of(path)` gives the
// "file:line" of a key for the message ("default" when the YAML did not set it).
void check_cross_fields(const ExperimentConfig& c,
                        const std::function<std::string(const std::string&)>& where_of);

}  // namespace mg::config_detail
