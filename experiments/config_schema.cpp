// The config schema: one row per key (docs/config.md is the prose version of this table).
// Ranges are the values that make sense, not the ones that fit in memory: a config that
// passes here can still be too big for the machine, which `magellan info` tells.
#include "experiments/config_schema.h"

#include <limits>
#include <type_traits>

#include "autograd/error.h"
#include "experiments/config_values.h"

namespace mg::config_detail {

namespace {

// FIELD(model.d_model): an accessor usable on both a const and a mutable ExperimentConfig.
#define FIELD(member) [](auto& c) -> auto& { return c.member; }

template <class Get>
using FieldType = std::remove_cvref_t<decltype(std::declval<Get>()(std::declval<ExperimentConfig&>()))>;

constexpr int64_t kMaxDim = int64_t{1} << 20;  // generous upper bound on any one dimension

template <class Get>
FieldSpec int_field(std::string path, std::string doc, Get get, int64_t lo,
                    int64_t hi = std::numeric_limits<int64_t>::max()) {
  using T = FieldType<Get>;
  hi = std::min<int64_t>(hi, std::numeric_limits<T>::max());
  return {std::move(path), std::move(doc),
          [get, lo, hi](const Entry& e, ExperimentConfig& c) {
            get(c) = static_cast<T>(read_int(e, lo, hi));
          },
          [get](const ExperimentConfig& c) { return fmt::format("{}", get(c)); }};
}

template <class Get>
FieldSpec real_field(std::string path, std::string doc, Get get, RealRange range) {
  return {std::move(path), std::move(doc),
          [get, range](const Entry& e, ExperimentConfig& c) { get(c) = read_real(e, range); },
          [get](const ExperimentConfig& c) { return format_real(get(c)); }};
}

// A real that may be null (std::optional<double>).
template <class Get>
FieldSpec optional_real_field(std::string path, std::string doc, Get get, RealRange range) {
  return {std::move(path), std::move(doc),
          [get, range](const Entry& e, ExperimentConfig& c) {
            if (is_null(e)) {
              get(c).reset();
              return;
            }
            if (!e.value().IsScalar()) fail_expected(e, "null or " + describe_range(range));
            get(c) = read_real(e, range);
          },
          [get](const ExperimentConfig& c) {
            return get(c) ? format_real(*get(c)) : std::string("null");
          }};
}

template <class Get>
FieldSpec bool_field(std::string path, std::string doc, Get get) {
  return {std::move(path), std::move(doc),
          [get](const Entry& e, ExperimentConfig& c) { get(c) = read_bool(e); },
          [get](const ExperimentConfig& c) { return std::string(get(c) ? "true" : "false"); }};
}

template <class Get>
FieldSpec string_list_field(std::string path, std::string doc, Get get) {
  return {std::move(path), std::move(doc),
          [get](const Entry& e, ExperimentConfig& c) { get(c) = read_string_list(e); },
          [get](const ExperimentConfig& c) { return format_string_list(get(c)); }};
}

template <class Get, class E = FieldType<Get>>
FieldSpec enum_field(std::string path, std::string doc, Get get, std::vector<E> values,
                     std::string_view (*name)(E)) {
  std::vector<std::string_view> names;
  for (E v : values) names.push_back(name(v));
  return {std::move(path), std::move(doc),
          [get, values, names](const Entry& e, ExperimentConfig& c) {
            get(c) = values[read_choice(e, names)];
          },
          [get, name](const ExperimentConfig& c) { return std::string(name(get(c))); }};
}

// A file path that may be null; relative paths resolve against the YAML file naming them.
template <class Get>
FieldSpec optional_path_field(std::string path, std::string doc, Get get) {
  return {std::move(path), std::move(doc),
          [get](const Entry& e, ExperimentConfig& c) {
            if (is_null(e)) {
              get(c).reset();
              return;
            }
            if (!e.value().IsScalar() || e.value().Scalar().empty())
              fail_expected(e, "null or a file path");
            get(c) = resolve_path(e, e.value().Scalar());
          },
          [get](const ExperimentConfig& c) {
            return get(c) ? format_string(*get(c)) : std::string("null");
          }};
}

// ----------------------------------------------------------------------------------------
// Keys whose value is not one plain type.
// ----------------------------------------------------------------------------------------

FieldSpec experiment_field() {
  return {"experiment", "run name; outputs go to runs/<experiment> unless run_dir is set",
          [](const Entry& e, ExperimentConfig& c) {
            std::string s = read_string(e);
            if (s.empty() || s == "." || s == ".." || s.find('/') != std::string::npos ||
                s.find('\\') != std::string::npos)
              fail_expected(e, "a non-empty name without '/' (it becomes a directory name)");
            c.experiment = s;
          },
          [](const ExperimentConfig& c) { return format_string(c.experiment); }};
}

FieldSpec run_dir_field() {
  return {"run_dir", "output directory (relative to the current directory); null = runs/<experiment>",
          [](const Entry& e, ExperimentConfig& c) {
            if (is_null(e)) {
              c.run_dir.reset();
              return;
            }
            if (!e.value().IsScalar() || e.value().Scalar().empty())
              fail_expected(e, "null or a directory path");
            c.run_dir = e.value().Scalar();
          },
          [](const ExperimentConfig& c) {
            return c.run_dir ? format_string(*c.run_dir) : std::string("null");
          }};
}

FieldSpec layer_pattern_field() {
  return {"model.layer_pattern", "one letter per layer: M = Mamba, E = MoE (e.g. MEME)",
          [](const Entry& e, ExperimentConfig& c) {
            const char* expected = "a non-empty string of the letters M (Mamba) and E (MoE)";
            if (!e.value().IsScalar()) fail_expected(e, expected);
            const std::string& s = e.value().Scalar();
            if (s.empty()) fail_expected(e, expected);
            for (size_t i = 0; i < s.size(); ++i)
              if (s[i] != 'M' && s[i] != 'E')
                fail_expected(e, expected,
                              fmt::format(" (character '{}' at position {}{})", s[i], i,
                                          s[i] == 'm' || s[i] == 'e' ? "; use upper case" : ""));
            if (static_cast<int64_t>(s.size()) > 4096) fail_expected(e, "at most 4096 layers");
            c.model.layer_pattern = s;
          },
          [](const ExperimentConfig& c) { return format_string(c.model.layer_pattern); }};
}

FieldSpec dt_rank_field() {
  return {"model.dt_rank", "R, rank of dt_proj: auto = ceil(d_model / 16), or an integer",
          [](const Entry& e, ExperimentConfig& c) {
            if (e.value().IsScalar() && e.value().Scalar() == "auto") {
              c.model.dt_rank.reset();
              return;
            }
            const std::string expected = fmt::format("auto or an integer in [1, {}]", kMaxDim);
            if (!e.value().IsScalar()) fail_expected(e, expected);
            try {
              c.model.dt_rank = static_cast<int>(read_int(e, 1, kMaxDim));
            } catch (const Error&) {
              fail_expected(e, expected);
            }
          },
          [](const ExperimentConfig& c) {
            return c.model.dt_rank ? fmt::format("{}", *c.model.dt_rank) : std::string("auto");
          }};
}

FieldSpec betas_field() {
  return {"optimizer.betas", "AdamW moment decay rates [beta1, beta2], each in [0, 1)",
          [](const Entry& e, ExperimentConfig& c) {
            if (!e.value().IsSequence() || e.value().size() != 2)
              fail_expected(e, "a list of two numbers in [0, 1), e.g. [0.9, 0.999]");
            for (size_t i = 0; i < 2; ++i)
              c.optimizer.betas[i] = read_real(list_element(e, i), RealRange{0, false, 1, true});
          },
          [](const ExperimentConfig& c) {
            return fmt::format("[{}, {}]", format_real(c.optimizer.betas[0]),
                               format_real(c.optimizer.betas[1]));
          }};
}

FieldSpec data_path_field() {
  return {"data.path", "text/jsonl files or directories (a string or a list); relative to this file",
          [](const Entry& e, ExperimentConfig& c) {
            c.data.path.clear();
            if (is_null(e)) return;
            if (e.value().IsScalar()) {
              if (e.value().Scalar().empty()) fail_expected(e, "null, a path, or a list of paths");
              c.data.path.push_back(resolve_path(e, e.value().Scalar()));
              return;
            }
            if (!e.value().IsSequence()) fail_expected(e, "null, a path, or a list of paths");
            for (size_t i = 0; i < e.value().size(); ++i) {
              Entry el = list_element(e, i);
              if (!el.value().IsScalar() || el.value().Scalar().empty()) fail_expected(el, "a path");
              c.data.path.push_back(resolve_path(el, el.value().Scalar()));
            }
          },
          [](const ExperimentConfig& c) {
            return c.data.path.empty() ? std::string("null") : format_string_list(c.data.path);
          }};
}

FieldSpec tokenizer_field() {
  return {"data.tokenizer", "byte, gpt2:<dir> (encoder.json + vocab.bpe), or a tokenizer.json path",
          [](const Entry& e, ExperimentConfig& c) {
            const char* expected = "byte, gpt2:<dir>, or a path ending in .json";
            if (!e.value().IsScalar()) fail_expected(e, expected);
            const std::string& s = e.value().Scalar();
            if (s == "byte") {
              c.data.tokenizer = s;
            } else if (s.rfind("gpt2:", 0) == 0 && s.size() > 5) {
              c.data.tokenizer = "gpt2:" + resolve_path(e, s.substr(5));
            } else if (s.size() > 5 && s.compare(s.size() - 5, 5, ".json") == 0) {
              c.data.tokenizer = resolve_path(e, s);
            } else {
              fail_expected(e, expected,
                            edit_distance(s, "byte") <= 2 ? "; did you mean 'byte'?" : "");
            }
          },
          [](const ExperimentConfig& c) { return format_string(c.data.tokenizer); }};
}

std::vector<FieldSpec> make_fields() {
  const RealRange positive = greater_than(0), non_negative = at_least(0);
  const RealRange unit_open{0, false, 1, true};  // [0, 1)
  std::vector<FieldSpec> f;
  // Top level.
  f.push_back(experiment_field());
  f.push_back(run_dir_field());
  f.push_back({"seed", "seeds every random stream (init, data order, dropout)",
               [](const Entry& e, ExperimentConfig& c) { c.seed = read_uint64(e); },
               [](const ExperimentConfig& c) { return fmt::format("{}", c.seed); }});
  f.push_back(int_field("threads", "OpenMP threads; 0 = all cores", FIELD(threads), 0, 4096));

  // model (design.md §3).
  f.push_back(int_field("model.d_model", "C, residual width", FIELD(model.d_model), 1, kMaxDim));
  f.push_back(int_field("model.vocab_size", "V, embedding rows and logits",
                        FIELD(model.vocab_size), 2, int64_t{1} << 24));
  f.push_back(layer_pattern_field());
  f.push_back(int_field("model.d_state", "N, SSM state size per channel", FIELD(model.d_state), 1, 1024));
  f.push_back(int_field("model.d_conv", "K, causal depthwise conv kernel", FIELD(model.d_conv), 1, 256));
  f.push_back(int_field("model.expand", "D = expand * d_model", FIELD(model.expand), 1, 64));
  f.push_back(dt_rank_field());
  f.push_back(real_field("model.dt_min", "dt init ~ logUniform(dt_min, dt_max)", FIELD(model.dt_min), positive));
  f.push_back(real_field("model.dt_max", "upper end of the dt init range", FIELD(model.dt_max), positive));
  f.push_back(real_field("model.dt_init_floor", "dt init is floored at this value",
                         FIELD(model.dt_init_floor), non_negative));
  f.push_back(int_field("model.n_experts", "E, experts per MoE layer", FIELD(model.n_experts), 0, 4096));
  f.push_back(int_field("model.top_k", "k, experts per token", FIELD(model.top_k), 1, 4096));
  f.push_back(int_field("model.expert_hidden", "F, expert MLP width", FIELD(model.expert_hidden), 1, kMaxDim));
  f.push_back(enum_field("model.expert_mlp", "gelu: down(gelu(up h)); swiglu: down(silu(gate h) * up h)",
                         FIELD(model.expert_mlp), {ExpertMlp::Gelu, ExpertMlp::Swiglu}, expert_mlp_name));
  f.push_back(optional_real_field("model.capacity_factor", "null = dropless; else tokens per expert cap factor",
                                  FIELD(model.capacity_factor), positive));
  f.push_back(real_field("model.aux_loss_coef", "load-balancing loss weight", FIELD(model.aux_loss_coef), non_negative));
  f.push_back(real_field("model.z_loss_coef", "router z-loss weight", FIELD(model.z_loss_coef), non_negative));
  f.push_back(bool_field("model.tie_embeddings", "logits use embedding.weight (no lm_head)", FIELD(model.tie_embeddings)));
  f.push_back(real_field("model.norm_eps", "RMSNorm epsilon", FIELD(model.norm_eps), RealRange{0, true, 1, true}));

  // lora (design.md §5, PEFT semantics).
  f.push_back(bool_field("lora.enabled", "train LoRA adapters; base weights frozen", FIELD(lora.enabled)));
  f.push_back(int_field("lora.r", "r, adapter rank", FIELD(lora.r), 1, 65536));
  f.push_back(real_field("lora.alpha", "scale = alpha / r (alpha / sqrt(r) with use_rslora)", FIELD(lora.alpha), positive));
  f.push_back(real_field("lora.dropout", "dropout on the adapter input", FIELD(lora.dropout), unit_open));
  f.push_back(bool_field("lora.use_rslora", "rank-stabilized scale alpha / sqrt(r)", FIELD(lora.use_rslora)));
  f.push_back(string_list_field("lora.target_modules", "Linear name patterns that get adapters ('*' wildcards)",
                                FIELD(lora.target_modules)));
  f.push_back(string_list_field("lora.trainable", "extra parameter patterns left trainable (e.g. norm)",
                                FIELD(lora.trainable)));

  // qlora.
  f.push_back(bool_field("qlora.enabled", "store frozen base weights as NF4", FIELD(qlora.enabled)));
  f.push_back(optional_path_field("qlora.base_checkpoint", "checkpoint with the base weights; null = fresh init",
                                  FIELD(qlora.base_checkpoint)));
  f.push_back(bool_field("qlora.quantize_embedding", "the embedding (the tied head too) is frozen NF4 as well",
                         FIELD(qlora.quantize_embedding)));

  // optimizer.
  f.push_back(enum_field("optimizer.name", "adamw or sgd", FIELD(optimizer.name),
                         {OptimizerKind::AdamW, OptimizerKind::Sgd}, optimizer_name));
  f.push_back(real_field("optimizer.lr", "peak learning rate", FIELD(optimizer.lr), positive));
  f.push_back(betas_field());
  f.push_back(real_field("optimizer.eps", "AdamW denominator epsilon", FIELD(optimizer.eps), positive));
  f.push_back(real_field("optimizer.weight_decay", "decoupled weight decay", FIELD(optimizer.weight_decay), non_negative));
  f.push_back(string_list_field("optimizer.no_decay", "parameter patterns without weight decay",
                                FIELD(optimizer.no_decay)));
  f.push_back(enum_field("optimizer.state_dtype", "AdamW moment storage: fp16 or fp32",
                         FIELD(optimizer.state_dtype), {StateDtype::F16, StateDtype::F32}, state_dtype_name));
  f.push_back(real_field("optimizer.momentum", "sgd momentum", FIELD(optimizer.momentum), unit_open));
  f.push_back(bool_field("optimizer.nesterov", "sgd Nesterov momentum", FIELD(optimizer.nesterov)));
  f.push_back(real_field("optimizer.grad_clip", "clip the global gradient L2 norm; 0 = off",
                         FIELD(optimizer.grad_clip), non_negative));

  // scheduler.
  f.push_back(enum_field("scheduler.name", "constant, linear, cosine or wsd (warmup-stable-decay)",
                         FIELD(scheduler.name),
                         {SchedulerKind::Constant, SchedulerKind::Linear, SchedulerKind::Cosine, SchedulerKind::Wsd},
                         scheduler_name));
  f.push_back(int_field("scheduler.warmup_steps", "linear warmup from 0 to lr", FIELD(scheduler.warmup_steps), 0));
  f.push_back(real_field("scheduler.min_lr", "floor of the decay", FIELD(scheduler.min_lr), non_negative));
  f.push_back(real_field("scheduler.decay_fraction", "wsd: fraction of steps spent decaying",
                         FIELD(scheduler.decay_fraction), RealRange{0, false, 1, false}));

  // data.
  f.push_back(enum_field("data.source", "synthetic, text, jsonl, or none (an imported model)", FIELD(data.source),
                         {DataSource::Synthetic, DataSource::Text, DataSource::Jsonl, DataSource::None},
                         data_source_name));
  f.push_back(enum_field("data.task", "synthetic task: selective_copy or induction", FIELD(data.task),
                         {SyntheticTask::SelectiveCopy, SyntheticTask::Induction}, synthetic_task_name));
  f.push_back(data_path_field());
  f.push_back(tokenizer_field());
  f.push_back(int_field("data.seq_len", "T, tokens per training sequence", FIELD(data.seq_len), 1, int64_t{1} << 24));
  f.push_back(real_field("data.val_fraction", "share of the data held out for eval", FIELD(data.val_fraction), unit_open));
  f.push_back(int_field("data.n_memorize", "synthetic: tokens to copy / recall", FIELD(data.n_memorize), 1, kMaxDim));
  f.push_back(int_field("data.n_tokens", "synthetic: task vocabulary size", FIELD(data.n_tokens), 2, int64_t{1} << 24));

  // training.
  f.push_back(int_field("training.steps", "optimizer steps", FIELD(training.steps), 1));
  f.push_back(int_field("training.batch_size", "B, sequences per micro-batch", FIELD(training.batch_size), 1, kMaxDim));
  f.push_back(int_field("training.grad_accum", "micro-batches per optimizer step", FIELD(training.grad_accum), 1, kMaxDim));
  f.push_back(enum_field("training.grad_checkpointing", "none, every_layer or every_n",
                         FIELD(training.grad_checkpointing),
                         {GradCheckpointing::None, GradCheckpointing::EveryLayer, GradCheckpointing::EveryN},
                         grad_checkpointing_name));
  f.push_back(int_field("training.checkpoint_every_n_layers", "every_n: layers per recomputed segment",
                        FIELD(training.checkpoint_every_n_layers), 1, 4096));
  f.push_back(enum_field("training.on_nonfinite", "a NaN/Inf loss or gradient: skip the step or stop",
                         FIELD(training.on_nonfinite), {OnNonfinite::Skip, OnNonfinite::Stop}, on_nonfinite_name));
  f.push_back(int_field("training.log_every", "steps between log lines (metrics.h5 gets every step)", FIELD(training.log_every), 1));
  f.push_back(bool_field("training.block_cache", "keep freed activation blocks for the next step (faster, "
                         "up to 25% more mapped memory)", FIELD(training.block_cache)));
  f.push_back(enum_field("training.device", "cpu, or cuda (a GPU: a build with MAGELLAN_CUDA, docs/gpu.md)",
                         FIELD(training.device), {ComputeDevice::Cpu, ComputeDevice::Cuda}, compute_device_name));

  // eval, checkpoint, logging.
  f.push_back(int_field("eval.every", "steps between evals; 0 = never", FIELD(eval.every), 0));
  f.push_back(int_field("eval.batches", "batches per eval", FIELD(eval.batches), 1, kMaxDim));
  f.push_back(int_field("checkpoint.every", "steps between checkpoints; 0 = only at the end", FIELD(checkpoint.every), 0));
  f.push_back(int_field("checkpoint.keep_last", "periodic checkpoints kept", FIELD(checkpoint.keep_last), 1, 1 << 20));
  f.push_back(bool_field("checkpoint.keep_best", "also keep the best-by-eval checkpoint", FIELD(checkpoint.keep_best)));
  f.push_back(enum_field("logging.progress", "progress line: auto (on a terminal), always, never",
                         FIELD(logging.progress), {ProgressMode::Auto, ProgressMode::Always, ProgressMode::Never},
                         progress_mode_name));
  f.push_back(enum_field("logging.level", "trace, debug, info, warn, error, critical, off", FIELD(logging.level),
                         {LogLevel::Trace, LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error,
                          LogLevel::Critical, LogLevel::Off},
                         log_level_name));
  return f;
}

#undef FIELD

}  // namespace

const std::vector<FieldSpec>& config_fields() {
  static const std::vector<FieldSpec> fields = make_fields();
  return fields;
}

std::vector<std::string> config_sections() {
  std::vector<std::string> out;
  for (const auto& f : config_fields()) {
    size_t dot = f.path.find('.');
    if (dot == std::string::npos) continue;
    std::string section = f.path.substr(0, dot);
    if (out.empty() || out.back() != section) out.push_back(section);
  }
  return out;
}

}  // namespace mg::config_detail
