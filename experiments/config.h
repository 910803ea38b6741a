#pragma once
// The experiment config: one YAML file (docs/config.md) read into these plain structs by
// experiments/config_loader.h. Defaults live here, in-class, and nowhere else: the loader
// starts from a default-constructed ExperimentConfig and overwrites what the YAML names.
//
// This header is included by the model library, which does NOT link yaml-cpp: keep it free
// of YAML and heavy includes, and keep every helper inline (no symbol lives in a .cpp).
// Reals are double here (they are hyper-parameters, not tensors); the model narrows them.
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mg {

// ---------------------------------------------------------------------------------------------
// Closed value sets. Their YAML spellings are the *_name() strings below (the loader and
// to_yaml use the same tables, so a round trip cannot drift).
// ---------------------------------------------------------------------------------------------
enum class ExpertMlp { Gelu, Swiglu };                          // model.expert_mlp
enum class OptimizerKind { AdamW, Sgd };                        // optimizer.name
enum class StateDtype { F16, F32 };                             // optimizer.state_dtype
enum class SchedulerKind { Constant, Linear, Cosine, Wsd };     // scheduler.name
// data.source; None: no data recorded (a model imported by magellan import-hf): it generates,
// and evaluates on --data, but does not train.
enum class DataSource { Synthetic, Text, Jsonl, None };
enum class SyntheticTask { SelectiveCopy, Induction };          // data.task
enum class GradCheckpointing { None, EveryLayer, EveryN };      // training.grad_checkpointing
enum class OnNonfinite { Skip, Stop };                          // training.on_nonfinite
enum class ComputeDevice { Cpu, Cuda };                         // training.device
enum class ProgressMode { Auto, Always, Never };                // logging.progress
enum class LogLevel { Trace, Debug, Info, Warn, Error, Critical, Off };  // logging.level (spdlog's)

// ---------------------------------------------------------------------------------------------
// Sections (design.md §3-§5 for the meaning of the model, LoRA and QLoRA fields).
// ---------------------------------------------------------------------------------------------
struct ModelConfig {
  int d_model = 512;                       // C
  int vocab_size = 10000;                  // V
  std::string layer_pattern = "MEME";      // one char per layer: 'M' Mamba, 'E' MoE
  int d_state = 16;                        // N
  int d_conv = 4;                          // K
  int expand = 2;                          // D = expand * C
  std::optional<int> dt_rank;              // R; nullopt = "auto" = ceil(C / 16)
  double dt_min = 0.001;                   // dt ~ logUniform(dt_min, dt_max) at init
  double dt_max = 0.1;
  double dt_init_floor = 1e-4;
  int n_experts = 8;                       // E
  int top_k = 2;                           // k
  int expert_hidden = 2048;                // F
  ExpertMlp expert_mlp = ExpertMlp::Gelu;
  std::optional<double> capacity_factor;   // nullopt = dropless
  double aux_loss_coef = 0.01;
  double z_loss_coef = 0.001;
  bool tie_embeddings = true;
  double norm_eps = 1e-5;

  int n_layers() const { return static_cast<int>(layer_pattern.size()); }
  int n_mamba_layers() const { return count_kind('M'); }
  int n_moe_layers() const { return count_kind('E'); }
  int d_inner() const { return expand * d_model; }                          // D
  int resolved_dt_rank() const { return dt_rank ? *dt_rank : (d_model + 15) / 16; }  // R
  bool is_moe_layer(int i) const { return layer_pattern.at(static_cast<size_t>(i)) == 'E'; }

  bool operator==(const ModelConfig&) const = default;

 private:
  int count_kind(char kind) const {
    int n = 0;
    for (char c : layer_pattern) n += (c == kind);
    return n;
  }
};

struct LoraConfig {
  bool enabled = false;
  int r = 16;
  double alpha = 32.0;
  double dropout = 0.0;
  bool use_rslora = false;                 // scale alpha/sqrt(r) instead of alpha/r (rsLoRA)
  // Name patterns (see pattern_matches below) over design.md §3 parameter names.
  std::vector<std::string> target_modules = {"in_proj", "out_proj"};
  std::vector<std::string> trainable = {};  // extra full-precision params left trainable

  double scale() const;                    // alpha/r or alpha/sqrt(r); defined below
  bool operator==(const LoraConfig&) const = default;
};

struct QloraConfig {
  bool enabled = false;                    // frozen base weights stored NF4
  std::optional<std::string> base_checkpoint;  // absolute once loaded (resolved vs. the YAML)
  bool quantize_embedding = true;          // the (tied) embedding table NF4 too, under enabled
  bool operator==(const QloraConfig&) const = default;
};

struct OptimizerConfig {
  OptimizerKind name = OptimizerKind::AdamW;
  double lr = 3e-4;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.0;
  std::vector<std::string> no_decay = {"norm", "bias", "A_log", "mixer.D"};  // patterns
  StateDtype state_dtype = StateDtype::F16;  // AdamW moment storage
  double momentum = 0.9;                   // sgd only
  bool nesterov = false;                   // sgd only
  double grad_clip = 1.0;                  // global L2 norm; 0 = off
  bool operator==(const OptimizerConfig&) const = default;
};

struct SchedulerConfig {
  SchedulerKind name = SchedulerKind::Cosine;
  int64_t warmup_steps = 0;
  double min_lr = 0.0;
  double decay_fraction = 0.2;             // wsd: last fraction of steps spent decaying
  bool operator==(const SchedulerConfig&) const = default;
};

struct DataConfig {
  DataSource source = DataSource::Synthetic;
  SyntheticTask task = SyntheticTask::SelectiveCopy;
  // Files or directories; empty = null. Absolute once loaded (resolved against the YAML file).
  std::vector<std::string> path = {};
  // "byte", "gpt2:<dir>" (encoder.json + vocab.bpe) or a tokenizer.json path: the spec of
  // data/tokenizer.h's load_tokenizer(); paths are absolute once loaded.
  std::string tokenizer = "byte";
  int seq_len = 128;                       // T
  double val_fraction = 0.05;
  int n_memorize = 8;                      // synthetic: tokens to copy / recall
  int n_tokens = 16;                       // synthetic: task vocabulary size
  bool operator==(const DataConfig&) const = default;
};

struct TrainingConfig {
  int64_t steps = 1000;
  int batch_size = 4;                      // B
  int grad_accum = 1;                      // micro-batches per optimizer step
  GradCheckpointing grad_checkpointing = GradCheckpointing::None;
  int checkpoint_every_n_layers = 2;       // used when grad_checkpointing = every_n
  OnNonfinite on_nonfinite = OnNonfinite::Stop;
  int64_t log_every = 10;
  bool block_cache = true;                 // reuse freed large blocks across steps (autograd/block_cache.h)
  ComputeDevice device = ComputeDevice::Cpu;  // where the model, activations and optimizer live
  bool operator==(const TrainingConfig&) const = default;
};

struct EvalConfig {
  int64_t every = 200;                     // steps; 0 = never
  int batches = 20;
  bool operator==(const EvalConfig&) const = default;
};

struct CheckpointConfig {
  int64_t every = 500;                     // steps; 0 = only at the end
  int keep_last = 3;
  bool keep_best = true;                   // also keep the best-by-eval checkpoint
  bool operator==(const CheckpointConfig&) const = default;
};

struct LoggingConfig {
  ProgressMode progress = ProgressMode::Auto;  // auto = only when stderr is a terminal
  LogLevel level = LogLevel::Info;
  bool operator==(const LoggingConfig&) const = default;
};

struct ExperimentConfig {
  std::string experiment = "magellan";
  std::optional<std::string> run_dir;      // nullopt = runs/<experiment> (relative to cwd)
  uint64_t seed = 1234;
  int threads = 0;                         // 0 = all cores
  ModelConfig model;
  LoraConfig lora;
  QloraConfig qlora;
  OptimizerConfig optimizer;
  SchedulerConfig scheduler;
  DataConfig data;
  TrainingConfig training;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  LoggingConfig logging;

  std::string resolved_run_dir() const { return run_dir ? *run_dir : "runs/" + experiment; }
  bool operator==(const ExperimentConfig&) const = default;
};

inline double LoraConfig::scale() const {
  // PEFT: scaling = alpha / r, or alpha / sqrt(r) with use_rslora (Kalajdzievski 2023).
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / r;
}

// ---------------------------------------------------------------------------------------------
// Name patterns (lora.target_modules, lora.trainable, optimizer.no_decay).
// A pattern matches a name when it occurs in it as a substring, where '*' in the pattern
// matches any run of characters (so "in_proj" matches "layers.0.mixer.in_proj.weight",
// "norm" matches "norm_f.weight" and "layers.3.norm.weight", and "layers.*.mixer.x_proj"
// matches every layer's x_proj). Case-sensitive: "mixer.D" does not match "mixer.dt_proj".
// ---------------------------------------------------------------------------------------------
inline bool glob_match_at(std::string_view pattern, std::string_view text) {
  // Iterative glob with one backtrack point (classic wildcard matching), anchored at both ends.
  size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] != '*' && pattern[p] == text[t]) {
      ++p, ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++, mark = t;
    } else if (star != std::string_view::npos) {
      p = star + 1, t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

inline bool pattern_matches(std::string_view pattern, std::string_view name) {
  std::string unanchored = "*";
  unanchored.append(pattern);
  unanchored.push_back('*');
  return glob_match_at(unanchored, name);
}

inline bool any_pattern_matches(const std::vector<std::string>& patterns, std::string_view name) {
  for (const auto& p : patterns)
    if (pattern_matches(p, name)) return true;
  return false;
}

// ---------------------------------------------------------------------------------------------
// YAML spellings of the enums (the loader parses with these; logs may print them).
// ---------------------------------------------------------------------------------------------
inline std::string_view expert_mlp_name(ExpertMlp v) {
  return v == ExpertMlp::Gelu ? "gelu" : "swiglu";
}
inline std::string_view optimizer_name(OptimizerKind v) {
  return v == OptimizerKind::AdamW ? "adamw" : "sgd";
}
inline std::string_view state_dtype_name(StateDtype v) {
  return v == StateDtype::F16 ? "fp16" : "fp32";
}
inline std::string_view scheduler_name(SchedulerKind v) {
  switch (v) {
    case SchedulerKind::Constant: return "constant";
    case SchedulerKind::Linear: return "linear";
    case SchedulerKind::Cosine: return "cosine";
    case SchedulerKind::Wsd: return "wsd";
  }
  return "?";
}
inline std::string_view data_source_name(DataSource v) {
  switch (v) {
    case DataSource::Synthetic: return "synthetic";
    case DataSource::Text: return "text";
    case DataSource::Jsonl: return "jsonl";
    case DataSource::None: return "none";
  }
  return "?";
}
inline std::string_view synthetic_task_name(SyntheticTask v) {
  return v == SyntheticTask::SelectiveCopy ? "selective_copy" : "induction";
}
inline std::string_view grad_checkpointing_name(GradCheckpointing v) {
  switch (v) {
    case GradCheckpointing::None: return "none";
    case GradCheckpointing::EveryLayer: return "every_layer";
    case GradCheckpointing::EveryN: return "every_n";
  }
  return "?";
}
inline std::string_view on_nonfinite_name(OnNonfinite v) {
  return v == OnNonfinite::Skip ? "skip" : "stop";
}
inline std::string_view compute_device_name(ComputeDevice v) {
  return v == ComputeDevice::Cuda ? "cuda" : "cpu";
}
inline std::string_view progress_mode_name(ProgressMode v) {
  switch (v) {
    case ProgressMode::Auto: return "auto";
    case ProgressMode::Always: return "always";
    case ProgressMode::Never: return "never";
  }
  return "?";
}
inline std::string_view log_level_name(LogLevel v) {
  switch (v) {
    case LogLevel::Trace: return "trace";
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warn: return "warn";
    case LogLevel::Error: return "error";
    case LogLevel::Critical: return "critical";
    case LogLevel::Off: return "off";
  }
  return "?";
}

}  // namespace mg
