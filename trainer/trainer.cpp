#include "trainer/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "autograd/blas.h"
#include "autograd/block_cache.h"
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "checkpoints/atomic_save.h"
#include "checkpoints/metrics_writer.h"
#include "checkpoints/model_io.h"
#include "cuda/runtime.h"
#include "data/tokenizer.h"
#include "model/lora.h"
#include "trainer/adamw.h"
#include "trainer/checkpoint_state.h"
#include "trainer/lr_scheduler.h"
#include "trainer/optimizer.h"
#include "util/memory.h"
#include "util/progress.h"

namespace fs = std::filesystem;

namespace mg {

namespace {

std::atomic<bool> g_stop_requested{false};

const std::vector<std::string> kSeries = {
    "train/loss", "train/ce_loss", "train/aux_loss", "train/z_loss", "train/lr", "train/grad_norm",
    "train/tokens_per_s", "train/step_time_s", "train/moe_dropped", "eval/loss", "eval/ppl", "eval/accuracy"};

Tensor ids_tensor(const std::vector<int32_t>& v, int64_t B, int64_t T) { return Tensor::from_ids(v, {B, T}); }

std::vector<int32_t> argmax_rows(const Tensor& logits_any) {  // (M, V) -> (M)
  const Tensor logits = logits_any.to(Device::CPU);
  const int64_t V = logits.dim(-1), M = logits.numel() / V;
  std::vector<int32_t> out(static_cast<size_t>(M));
  const float* p = logits.data<float>();
  for (int64_t m = 0; m < M; ++m) {
    int32_t best = 0;
    for (int64_t v = 1; v < V; ++v)
      if (p[m * V + v] > p[m * V + best]) best = static_cast<int32_t>(v);
    out[m] = best;
  }
  return out;
}

LrSchedule make_schedule(const ExperimentConfig& c) {
  LrSchedule s;
  s.kind = static_cast<LrScheduleKind>(static_cast<int>(c.scheduler.name));  // same order, see config.h
  s.peak_lr = c.optimizer.lr;
  s.min_lr = c.scheduler.min_lr;
  s.warmup_steps = c.scheduler.warmup_steps;
  s.total_steps = c.training.steps;
  s.decay_fraction = c.scheduler.decay_fraction;
  validate_lr_schedule(s);
  return s;
}

DatasetOptions dataset_options(const ExperimentConfig& c, bool quiet) {
  DatasetOptions o;
  MG_CHECK(c.data.source != DataSource::None,
           "[config] data.source is none (a model imported without data): set data.source and data.path "
           "to train on it");
  o.source = data_source_name(c.data.source);
  o.task = c.data.task == SyntheticTask::SelectiveCopy ? "selective_copy" : "induction";
  o.path = c.data.path;
  o.seq_len = c.data.seq_len;
  o.val_fraction = c.data.val_fraction;
  o.seed = c.seed;
  o.n_memorize = c.data.n_memorize;
  o.n_tokens = c.data.n_tokens;
  o.quiet = quiet;
  return o;
}

}  // namespace

void request_training_stop() { g_stop_requested = true; }

EvalResult evaluate(const HybridLM& model, const Dataset& data, int64_t batch_size, int64_t max_batches,
                    bool show_progress) {
  NoGradGuard no_grad;
  EvalResult r;
  double loss_sum = 0;
  TaskScore score;
  const Device dev = model.device();
  const std::vector<Batch> batches = data.validation_batches(batch_size, max_batches);
  Progress progress("eval", static_cast<int64_t>(batches.size()), "batch", !show_progress);
  for (const Batch& b : batches) {
    progress.advance();
    const int64_t counted = b.counted_targets();
    if (counted == 0) continue;
    LmOutput out = model.forward(ids_tensor(b.tokens, b.B, b.T).to(dev), ids_tensor(b.targets, b.B, b.T).to(dev));
    loss_sum += out.ce_loss.item() * static_cast<double>(counted);
    r.tokens += counted;
    score += data.task_accuracy(b, argmax_rows(out.logits));
  }
  progress.clear();
  r.loss = r.tokens ? loss_sum / static_cast<double>(r.tokens) : std::numeric_limits<double>::quiet_NaN();
  r.ppl = std::exp(r.loss);
  if (data.has_task_metric()) r.accuracy = score.accuracy();
  return r;
}

struct Trainer::Impl {
  ExperimentConfig cfg;
  std::string yaml;
  TrainOptions opts;
  std::string run_dir, ckpt_dir;
  std::shared_ptr<spdlog::logger> log;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Dataset> data;
  std::unique_ptr<HybridLM> model;
  std::unique_ptr<Optimizer> optim;
  LrSchedule schedule;
  Rng rng{0};  // LoRA dropout
  TrainState state;

  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> early_log;  // until the run dir is written

  void setup();
  void setup_logging();
  void open_run_dir();
  void build_model();
  void save_checkpoint(const std::string& path);
  void load_checkpoint(const std::string& path);
  TrainSummary train();
  void write_summary(const TrainSummary& s) const;
};

// runs/<x>/summary.yaml: the outcome of the latest invocation, read by `magellan sweep`.
void Trainer::Impl::write_summary(const TrainSummary& s) const {
  auto num = [](double v) { return std::isfinite(v) ? fmt::format("{:.9g}", v) : std::string(".nan"); };
  // Temp, fsync, rename: a full disk leaves the previous summary whole (a warning, not a failed
  // run: the checkpoints are written).
  try {
    atomic_write(run_dir + "/summary.yaml", [&](const std::string& tmp) {
      std::ofstream out(tmp);
      out << "status: " << s.status << "\n"
          << "final_step: " << s.final_step << "\n"
          << "total_steps: " << cfg.training.steps << "\n"
          << "final_train_loss: " << num(s.final_train_loss) << "\n"
          << "best_eval_loss: " << num(s.best_eval_loss) << "\n"
          << "best_eval_step: " << s.best_eval_step << "\n"
          << "final_eval_loss: " << num(s.final_eval_loss) << "\n"
          << "final_eval_accuracy: " << num(s.final_eval_accuracy >= 0 ? s.final_eval_accuracy : NAN) << "\n"
          << "tokens_per_s: " << num(s.tokens_per_s) << "\n"
          << "wall_s: " << num(s.wall_s) << "\n"
          << "skipped_steps: " << s.skipped_steps << "\n"
          << "last_checkpoint: \"" << s.last_checkpoint << "\"\n";
      out.close();
      MG_CHECK(out.good(), "[train] cannot write {} (disk full?)", tmp);
    });
  } catch (const Error& e) {
    log->warn("{}", e.what());
  }
}

Trainer::Trainer(ExperimentConfig cfg, std::string resolved_yaml, TrainOptions opts)
    : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(cfg);
  impl_->yaml = std::move(resolved_yaml);
  impl_->opts = std::move(opts);
}
Trainer::~Trainer() = default;

TrainSummary Trainer::run() {
  impl_->setup();
  return impl_->train();
}

// The console, and a memory buffer for train.log: nothing is written into the run dir until
// setup has accepted the run (open_run_dir), so a refused resume or a failed start leaves the
// directory as it was (or absent).
void Trainer::Impl::setup_logging() {
  std::vector<spdlog::sink_ptr> sinks;
  if (!opts.quiet) sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  early_log = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(4096);
  sinks.push_back(early_log);
  log = std::make_shared<spdlog::logger>("train", sinks.begin(), sinks.end());
  log->set_pattern("[%Y-%m-%d %H:%M:%S] %v");
  log->set_level(static_cast<spdlog::level::level_enum>(static_cast<int>(cfg.logging.level)));
  log->flush_on(spdlog::level::info);
}

// The run is accepted: create the run dir, write the resolved config and the overrides, and
// send the log (what setup said so far, then everything after) to train.log.
void Trainer::Impl::open_run_dir() {
  fs::create_directories(ckpt_dir);
  {  // The resolved config and the overrides, as this invocation saw them.
    atomic_write(run_dir + "/config.yaml", [&](const std::string& tmp) {  // a resume replaces it
      std::ofstream out(tmp);
      out << yaml;
      out.close();
      MG_CHECK(out.good(), "[train] cannot write {} (disk full?)", tmp);
    });
    std::ofstream ov(run_dir + "/overrides.txt", opts.resume ? std::ios::app : std::ios::trunc);
    if (opts.resume) ov << "# --resume\n";
    for (const std::string& o : opts.overrides) ov << o << "\n";
  }
  {
    std::ofstream train_log(run_dir + "/train.log", std::ios::app);
    for (const std::string& line : early_log->last_formatted()) train_log << line;
  }
  auto& sinks = log->sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), early_log), sinks.end());
  early_log.reset();
  sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(run_dir + "/train.log", /*truncate=*/false));
}

void Trainer::Impl::build_model() {
  model = std::make_unique<HybridLM>(cfg.model, DType::F32);
  model->init(cfg.seed);
  if (cfg.qlora.base_checkpoint) {
    H5File base = H5File::open_read(*cfg.qlora.base_checkpoint);
    read_model(base, *model, /*require_all=*/true);
    log->info("base weights: {}", *cfg.qlora.base_checkpoint);
  }
  LoraReport rep = apply_lora(*model, cfg.lora, cfg.qlora, cfg.seed);
  log->info("model: {} layers '{}', {} parameters; {}", cfg.model.n_layers(), cfg.model.layer_pattern,
            model->num_parameters(), rep.summary());
  if (cfg.training.device == ComputeDevice::Cuda) {
    // Built and initialised on the CPU (the same numbers as a CPU run), then moved.
    cuda::require("training.device=cuda");
    MG_CHECK(!cfg.qlora.enabled && !model->embedding.is_quantized(),
             "[train] training.device=cuda: NF4 (QLoRA) bases do not run on the GPU yet; train "
             "QLoRA on the CPU, or LoRA over a float32 base (qlora.enabled=false) on the GPU");
    model->to(Device::CUDA);
    log->info("device: {}", cuda::device_description());
  }
  optim = std::make_unique<Optimizer>(cfg.optimizer, trainable_parameters(*model));
}

void Trainer::Impl::setup() {
  set_num_threads(cfg.threads);
  run_dir = cfg.resolved_run_dir();
  ckpt_dir = run_dir + "/checkpoints";
  std::optional<CheckpointFile> latest;
  if (opts.resume) {
    MG_CHECK(fs::is_directory(run_dir), "[train] --resume {}: no such run directory", run_dir);
    latest = latest_complete_checkpoint(ckpt_dir);
    MG_CHECK(latest, "[train] --resume {}: no complete checkpoint in {}; start the run again without --resume",
             run_dir, ckpt_dir);
    // The checkpoint's file name is its step (checkpoint_filename).
    MG_CHECK(latest->step < cfg.training.steps,
             "[train] --resume {}: the run is finished (step {} of training.steps={}); nothing was done. To train "
             "it further: magellan train --resume {} training.steps=N with N > {}",
             run_dir, latest->step, cfg.training.steps, run_dir, latest->step);
  } else if (fs::exists(ckpt_dir) && !list_checkpoints(ckpt_dir).empty()) {
    throw Error(fmt::format("[train] {} already holds checkpoints: continue it with `magellan train --resume {}`, "
                            "or choose another experiment name / run_dir", run_dir, run_dir));
  }
  setup_logging();
  log->info("run dir {} ({} threads)", run_dir, num_threads());

  if (cfg.data.source != DataSource::Synthetic) tokenizer = load_tokenizer(cfg.data.tokenizer);
  data = make_dataset(dataset_options(cfg, opts.quiet || cfg.logging.progress == ProgressMode::Never), tokenizer.get());
  MG_CHECK(data->vocab_size_needed() <= cfg.model.vocab_size,
           "[train] the data uses token ids up to {} but model.vocab_size is {}; raise model.vocab_size",
           data->vocab_size_needed() - 1, cfg.model.vocab_size);
  log->info("data: {}", data->describe());
  build_model();
  schedule = make_schedule(cfg);
  rng.reseed(cfg.seed ^ 0xd70f0a7ull);
  if (latest) {
    load_checkpoint(latest->path);
    log->info("resumed from {} (step {})", latest->path, state.step);
  }
  open_run_dir();
}

void Trainer::Impl::save_checkpoint(const std::string& path) {
  const bool adapter_only = cfg.qlora.base_checkpoint.has_value() && (cfg.lora.enabled || cfg.qlora.enabled);
  atomic_save(path, [&](H5File& f) {
    write_checkpoint_header(f, state, yaml, adapter_only ? "adapter" : "full", cfg.qlora.base_checkpoint);
    write_model(f, *model, adapter_only ? ModelSaveMode::AdapterOnly : ModelSaveMode::Full);
    optim->save(f, "/optimizer");
    write_train_state(f, state, rng, data->state(), lr_at(schedule, std::max<int64_t>(0, state.step - 1)));
  });
}

void Trainer::Impl::load_checkpoint(const std::string& path) {
  H5File f = H5File::open_read(path);
  read_model(f, *model, /*require_all=*/!cfg.qlora.base_checkpoint.has_value());
  optim->load(f, "/optimizer");
  std::vector<uint64_t> data_state;
  read_train_state(f, state, rng, data_state);
  data->restore(data_state);
}

TrainSummary Trainer::Impl::train() {
  TrainSummary sum;
  sum.run_dir = run_dir;
  sum.start_step = state.step;
  const auto t_start = std::chrono::steady_clock::now();
  MetricsWriter metrics = opts.resume ? MetricsWriter::resume(run_dir + "/metrics.h5", kSeries, state.step)
                                      : MetricsWriter::create(run_dir + "/metrics.h5", kSeries);
  const TrainingConfig& tc = cfg.training;
  const int64_t B = tc.batch_size, T = data->seq_len(), accum = tc.grad_accum;
  const Device device = model->device();
  const bool show_progress = !opts.quiet && (cfg.logging.progress == ProgressMode::Always ||
                                             (cfg.logging.progress == ProgressMode::Auto && Progress::stderr_is_tty()));
  Progress progress("train", tc.steps, "step", !show_progress);
  progress.update(state.step);
  ForwardOptions fopts{.training = true, .want_logits = false, .checkpointing = tc.grad_checkpointing,
                       .checkpoint_every_n = tc.checkpoint_every_n_layers, .rng = &rng};

  auto old_int = std::signal(SIGINT, [](int) { g_stop_requested = true; });
  auto old_term = std::signal(SIGTERM, [](int) { g_stop_requested = true; });
  g_stop_requested = false;

  double window_loss = 0, window_tokens_s = 0;
  int64_t window_n = 0, steps_this_run = 0, tokens_this_run = 0;
  double train_seconds = 0;
  std::string last_ckpt;
  auto checkpoint_now = [&] {
    last_ckpt = ckpt_dir + "/" + checkpoint_filename(state.step);
    save_checkpoint(last_ckpt);
    std::vector<std::string> protect;
    if (fs::exists(run_dir + "/best.h5")) protect.push_back(run_dir + "/best.h5");
    keep_last(ckpt_dir, "step_*.h5", cfg.checkpoint.keep_last, protect);
  };

  // The progress line's memory: the process's resident set, and on the GPU what the device
  // allocator holds (live now / peak since start).
  auto memory_in_use = [&] {
    const std::string rss = format_bytes(static_cast<double>(current_rss_bytes()));
    if (device != Device::CUDA) return rss;
    const cuda::MemoryStats m = cuda::memory_stats();
    return fmt::format("{}, gpu {}/{} peak", rss, format_bytes(static_cast<double>(m.allocated)),
                       format_bytes(static_cast<double>(m.peak_allocated)));
  };

  // Every step allocates the same activations and gradients: keep the freed blocks for the next
  // one instead of unmapping and page-faulting them again (autograd/block_cache.h).
  BlockCache::Scope keep_blocks(tc.block_cache);
  while (state.step < tc.steps) {
    if (g_stop_requested) {
      sum.interrupted = true;
      break;
    }
    if (opts.stop_after_steps >= 0 && steps_this_run >= opts.stop_after_steps) break;
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = lr_at(schedule, state.step);
    double loss = 0, ce = 0, aux = 0, z = 0;
    int64_t dropped = 0;
    bool finite = true;
    for (int64_t micro = 0; micro < accum; ++micro) {
      Batch b = data->next_train_batch(B);
      LmOutput out = model->forward(ids_tensor(b.tokens, B, T).to(device), ids_tensor(b.targets, B, T).to(device), fopts);
      const double l = out.loss.item();
      finite = finite && std::isfinite(l);
      loss += l / static_cast<double>(accum);
      ce += out.ce_loss.item() / static_cast<double>(accum);
      if (out.aux_loss.defined()) aux += out.aux_loss.item() / static_cast<double>(accum);
      if (out.z_loss.defined()) z += out.z_loss.item() / static_cast<double>(accum);
      for (const RoutingStats& rs : out.routing) dropped += rs.dropped;
      current_tape().backward(out.loss);
    }
    // Gradients hold the sum over micro-batches: the mean is sum / accum.
    const double grad_norm = optim->grad_norm() / static_cast<double>(accum);
    finite = finite && std::isfinite(grad_norm);
    const int64_t step_no = state.step + 1;  // 1-based for people
    if (!finite) {
      optim->zero_grad();
      if (tc.on_nonfinite == OnNonfinite::Stop) {
        std::signal(SIGINT, old_int);
        std::signal(SIGTERM, old_term);
        throw Error(fmt::format("[train] step {}: non-finite {} (loss {}, grad norm {}); stopped without saving. "
                                "The last checkpoint{} is intact. Lower optimizer.lr, set optimizer.grad_clip, or "
                                "set training.on_nonfinite=skip", step_no, std::isfinite(loss) ? "gradient" : "loss",
                                loss, grad_norm, last_ckpt.empty() ? "" : " (" + last_ckpt + ")"));
      }
      ++sum.skipped_steps;
      progress.clear();
      log->warn("step {}: non-finite loss/gradient (loss {}, grad norm {}): step skipped", step_no, loss, grad_norm);
      // The data advanced; the step counter does too, so the schedule stays aligned.
      ++state.step;
      continue;
    }
    const float clip = cfg.optimizer.grad_clip > 0 ? clip_coefficient(grad_norm, cfg.optimizer.grad_clip) : 1.0f;
    optim->step(lr, clip / static_cast<float>(accum));
    optim->zero_grad();
    ++state.step;
    ++steps_this_run;
    state.tokens_seen += B * T * accum;
    tokens_this_run += B * T * accum;
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    train_seconds += dt;
    const double tok_s = static_cast<double>(B * T * accum) / dt;
    sum.step_losses.push_back(loss);
    window_loss += ce;
    window_tokens_s += tok_s;
    ++window_n;
    metrics.append(state.step, {{"train/loss", loss}, {"train/ce_loss", ce}, {"train/aux_loss", aux},
                                {"train/z_loss", z}, {"train/lr", lr}, {"train/grad_norm", grad_norm},
                                {"train/tokens_per_s", tok_s}, {"train/step_time_s", dt},
                                {"train/moe_dropped", static_cast<double>(dropped)}});
    progress.update(state.step, fmt::format("loss {:.4f}  lr {:.2e}  gnorm {:.3f}  {:.0f} tok/s  mem {}", loss, lr,
                                            grad_norm, tok_s, memory_in_use()));
    if (state.step % tc.log_every == 0 || state.step == tc.steps) {
      sum.final_train_loss = window_loss / static_cast<double>(window_n);
      if (!show_progress)
        log->info("step {}/{}  loss {:.4f}  lr {:.2e}  gnorm {:.3f}  {:.0f} tok/s  ETA {}  mem {}", state.step,
                  tc.steps, sum.final_train_loss, lr, grad_norm, window_tokens_s / static_cast<double>(window_n),
                  Progress::format_duration(train_seconds / static_cast<double>(steps_this_run) *
                                            static_cast<double>(tc.steps - state.step)),
                  memory_in_use());
      window_loss = window_tokens_s = 0;
      window_n = 0;
    }
    const bool last = state.step == tc.steps;
    bool improved = false;
    if (cfg.eval.every > 0 && (state.step % cfg.eval.every == 0 || last)) {
      progress.clear();  // eval draws its own line, then the result is logged on a clean one
      EvalResult ev = evaluate(*model, *data, B, cfg.eval.batches, show_progress);
      metrics.append(state.step, {{"eval/loss", ev.loss}, {"eval/ppl", ev.ppl}, {"eval/accuracy", ev.accuracy}});
      improved = std::isfinite(ev.loss) && (state.best_eval_step < 0 || ev.loss < state.best_eval_loss);
      if (improved) {
        state.best_eval_loss = ev.loss;
        state.best_eval_step = state.step;
      }
      log->info("eval step {}: loss {:.4f}  ppl {:.2f}{}{}", state.step, ev.loss, ev.ppl,
                ev.accuracy >= 0 ? fmt::format("  accuracy {:.3f}", ev.accuracy) : "", improved ? "  (best)" : "");
      sum.final_eval_loss = ev.loss;
      sum.final_eval_accuracy = ev.accuracy;
    }
    if (improved && cfg.checkpoint.keep_best) save_checkpoint(run_dir + "/best.h5");
    if (!last && cfg.checkpoint.every > 0 && state.step % cfg.checkpoint.every == 0) checkpoint_now();
  }
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  progress.finish();
  if (state.step > sum.start_step || state.step == tc.steps) checkpoint_now();
  sum.status = state.step >= tc.steps ? "finished" : "stopped";
  sum.interrupted = sum.interrupted && sum.status == "stopped";
  // Steps since the last logging line (a run stopped between two): their mean, not nothing.
  if (window_n > 0) sum.final_train_loss = window_loss / static_cast<double>(window_n);
  if (sum.status == "stopped") log->info("stopped at step {}: {}", state.step, last_ckpt);
  sum.final_step = state.step;
  sum.best_eval_loss = state.best_eval_step >= 0 ? state.best_eval_loss : std::numeric_limits<double>::quiet_NaN();
  sum.best_eval_step = state.best_eval_step;
  sum.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  sum.tokens_per_s = train_seconds > 0 ? static_cast<double>(tokens_this_run) / train_seconds
                                       : std::numeric_limits<double>::quiet_NaN();
  sum.last_checkpoint = last_ckpt;
  metrics.close();
  write_summary(sum);
  log->info("{} at step {}: train loss {:.4f}, best eval {:.4f} (step {}), {:.0f} tok/s, peak RSS {}", sum.status,
            state.step, sum.final_train_loss, sum.best_eval_loss, sum.best_eval_step, sum.tokens_per_s,
            format_bytes(static_cast<double>(peak_rss_bytes())));
  return sum;
}

}  // namespace mg
