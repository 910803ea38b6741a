// Cross-field checks: values that are each in range but do not fit together. Per-key types
// and ranges are checked by the readers in config_schema.cpp, before these run.
#include <string>
#include <vector>

#include "autograd/error.h"
#include "experiments/config_schema.h"

namespace mg::config_detail {

namespace {

// The Linear modules a model of this config has (design.md §3 names, without ".weight"):
// what lora.target_modules patterns must hit.
std::vector<std::string> linear_module_names(const ModelConfig& m) {
  std::vector<std::string> out;
  for (int i = 0; i < m.n_layers(); ++i) {
    std::string mixer = fmt::format("layers.{}.mixer.", i);
    if (!m.is_moe_layer(i)) {
      for (const char* name : {"in_proj", "x_proj", "dt_proj", "out_proj"}) out.push_back(mixer + name);
      continue;
    }
    out.push_back(mixer + "router");
    for (int e = 0; e < m.n_experts; ++e) {
      std::string expert = fmt::format("{}experts.{}.", mixer, e);
      out.push_back(expert + "up");
      out.push_back(expert + "down");
      if (m.expert_mlp == ExpertMlp::Swiglu) out.push_back(expert + "gate");
    }
  }
  if (!m.tie_embeddings) out.push_back("lm_head");
  return out;
}

// Every parameter name (design.md §3): what lora.trainable patterns must hit.
std::vector<std::string> parameter_names(const ModelConfig& m) {
  std::vector<std::string> out = {"embedding.weight", "norm_f.weight"};
  for (const auto& linear : linear_module_names(m)) out.push_back(linear + ".weight");
  for (int i = 0; i < m.n_layers(); ++i) {
    out.push_back(fmt::format("layers.{}.norm.weight", i));
    if (m.is_moe_layer(i)) continue;
    for (const char* name : {"conv1d.weight", "conv1d.bias", "dt_proj.bias", "A_log", "D"})
      out.push_back(fmt::format("layers.{}.mixer.{}", i, name));
  }
  return out;
}

bool matches_any(const std::string& pattern, const std::vector<std::string>& names) {
  for (const auto& n : names)
    if (pattern_matches(pattern, n)) return true;
  return false;
}

}  // namespace

void check_cross_fields(const ExperimentConfig& c,
                        const std::function<std::string(const std::string&)>& where_of) {
  const ModelConfig& m = c.model;

  // MoE layers need experts to route to, and top-k cannot exceed them (design.md §3).
  if (m.n_moe_layers() > 0) {
    MG_CHECK(m.n_experts >= 1,
             "[config] {}: model.n_experts is 0 but model.layer_pattern '{}' has MoE layers (E); "
             "set n_experts >= 1 or use only M layers",
             where_of("model.n_experts"), m.layer_pattern);
    MG_CHECK(m.top_k <= m.n_experts,
             "[config] {}: model.top_k = {} is larger than model.n_experts = {} ({}); lower "
             "top_k or add experts",
             where_of("model.top_k"), m.top_k, m.n_experts, where_of("model.n_experts"));
  }
  MG_CHECK(m.dt_min <= m.dt_max,
           "[config] {}: model.dt_min = {} is larger than model.dt_max = {} ({}); dt is drawn "
           "from logUniform(dt_min, dt_max)",
           where_of("model.dt_min"), m.dt_min, m.dt_max, where_of("model.dt_max"));

  // QLoRA trains adapters over a frozen NF4 base: without LoRA nothing would train.
  MG_CHECK(!c.qlora.enabled || c.lora.enabled,
           "[config] {}: qlora.enabled is true but lora.enabled is false ({}); QLoRA trains LoRA "
           "adapters over the frozen NF4 base, so set lora.enabled: true",
           where_of("qlora.enabled"), where_of("lora.enabled"));
  if (c.lora.enabled) {
    MG_CHECK(!c.lora.target_modules.empty(),
             "[config] {}: lora.target_modules is empty; name at least one Linear, e.g. "
             "[in_proj, out_proj]",
             where_of("lora.target_modules"));
    const auto linears = linear_module_names(m);
    for (const auto& pattern : c.lora.target_modules)
      MG_CHECK(matches_any(pattern, linears),
               "[config] {}: lora.target_modules pattern '{}' matches no Linear of this model "
               "(layer_pattern '{}'); Linears are in_proj, x_proj, dt_proj, out_proj (Mamba), "
               "router, experts.<e>.up/down/gate (MoE) and lm_head (untied)",
               where_of("lora.target_modules"), pattern, m.layer_pattern);
    const auto params = parameter_names(m);
    for (const auto& pattern : c.lora.trainable)
      MG_CHECK(matches_any(pattern, params),
               "[config] {}: lora.trainable pattern '{}' matches no parameter of this model; "
               "names are as in docs/config.md (e.g. norm, embedding.weight, mixer.D)",
               where_of("lora.trainable"), pattern);
  }

  if (c.optimizer.name == OptimizerKind::Sgd)
    MG_CHECK(!c.optimizer.nesterov || c.optimizer.momentum > 0,
             "[config] {}: optimizer.nesterov needs optimizer.momentum > 0 ({}); set a momentum "
             "or nesterov: false",
             where_of("optimizer.nesterov"), where_of("optimizer.momentum"));
  MG_CHECK(c.scheduler.min_lr <= c.optimizer.lr,
           "[config] {}: scheduler.min_lr = {} is above optimizer.lr = {} ({}); the schedule "
           "decays from lr down to min_lr",
           where_of("scheduler.min_lr"), c.scheduler.min_lr, c.optimizer.lr,
           where_of("optimizer.lr"));
  MG_CHECK(c.scheduler.warmup_steps <= c.training.steps,
           "[config] {}: scheduler.warmup_steps = {} is more than training.steps = {} ({}); "
           "shorten the warmup",
           where_of("scheduler.warmup_steps"), c.scheduler.warmup_steps, c.training.steps,
           where_of("training.steps"));

  if (c.data.source == DataSource::None) {
    MG_CHECK(c.data.path.empty(),
             "[config] {}: data.path is set but data.source is none ({}); set data.source to text "
             "or jsonl, or data.path: null",
             where_of("data.path"), where_of("data.source"));
  } else if (c.data.source == DataSource::Synthetic) {
    MG_CHECK(c.data.path.empty(),
             "[config] {}: data.path is set but data.source is synthetic ({}); set data.source "
             "to text or jsonl, or data.path: null",
             where_of("data.path"), where_of("data.source"));
    // Token layout of data/synthetic_tasks.h: n data tokens, then blank + marker (selective
    // copy) or a trigger (induction); selective copy needs room for L >= M and M markers.
    const bool copy = c.data.task == SyntheticTask::SelectiveCopy;
    const int64_t needed = static_cast<int64_t>(c.data.n_tokens) + (copy ? 2 : 1);
    MG_CHECK(needed <= m.vocab_size,
             "[config] {}: data.n_tokens = {} needs model.vocab_size >= {} for {} ({} special "
             "ids after the data tokens), but vocab_size = {} ({})",
             where_of("data.n_tokens"), c.data.n_tokens, needed,
             synthetic_task_name(c.data.task), copy ? 2 : 1, m.vocab_size,
             where_of("model.vocab_size"));
    if (copy)
      MG_CHECK(c.data.seq_len >= 2 * static_cast<int64_t>(c.data.n_memorize),
               "[config] {}: data.seq_len = {} is too short for selective_copy with "
               "data.n_memorize = {} ({}): it needs seq_len >= 2 * n_memorize",
               where_of("data.seq_len"), c.data.seq_len, c.data.n_memorize,
               where_of("data.n_memorize"));
    else
      MG_CHECK(c.data.seq_len >= 3,
               "[config] {}: data.seq_len = {} is too short for induction (trigger, answer, "
               "trigger): use seq_len >= 3",
               where_of("data.seq_len"), c.data.seq_len);
  } else {
    MG_CHECK(!c.data.path.empty(),
             "[config] {}: data.source is {} but data.path is null; give the files or "
             "directories to read (relative to the YAML file)",
             where_of("data.source"), data_source_name(c.data.source));
    // The byte tokenizer emits ids 0..255 plus <|endoftext|> = 256 (data/tokenizer.h), all of
    // which must be rows of the embedding.
    MG_CHECK(c.data.tokenizer != "byte" || m.vocab_size >= 257,
             "[config] {}: model.vocab_size = {} is smaller than the byte tokenizer's 257 ids "
             "(256 bytes + <|endoftext|>); use vocab_size >= 257",
             where_of("model.vocab_size"), m.vocab_size);
  }
}

}  // namespace mg::config_detail
