// One full training step (forward + backward + grad norm + fused fp16 AdamW) of the phase1
// preset (experiments/presets/phase1.yaml: C 512, V 10000, 'MEMEMEE', E 8, top-2, F 2048,
// N 16), fp32 weights, on random token ids (the data pipeline is not what is measured).
//
//   1. Throughput (seq 128, batch 4, 1 and 2 threads): median step time over --steps steps
//      after one validated warm-up step, tokens/s, analytic FLOPs per token (flop_model
//      below), achieved GFLOP/s and MFU against the FMA peak measured in this same run, with
//      the step split into its phases and a per-component forward/backward breakdown.
//   2. Gradient checkpointing (seq 512, batch 2): policies none vs every_layer, each in its own
//      child process (VmHWM is monotonic per process): peak RSS, step time, the bytes the tape
//      keeps saved at the end of the forward, and a hash of every gradient (they must agree).
//
//   run from the repository root:  build-*/bench_train_step   (~4 min at load 7 on 2 cores)
//   Both sections run with and without the BlockCache (autograd/block_cache.h: freed large
//   blocks kept for reuse, as the trainer does) and compare them in the same run.
//
//   flags: --steps N --threads 1,2 --seq S --batch B --ckpt-seq S --ckpt-batch B
//          --ckpt-steps N --ckpt-threads T --only throughput|checkpointing --no-breakdown
//          --block-cache off,on (the modes to run; default both)
//          --config FILE --set key=value (repeatable; e.g. --set lora.enabled=true --set
//          qlora.enabled=true: QLoRA, section 2 only);  internal: --child --checkpointing P
//   The machine is shared: the load average is printed at the start and the end.
#include <immintrin.h>

#include "bench/fma_chains.h"
#include <omp.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/blas.h"
#include "autograd/block_cache.h"
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "experiments/config_loader.h"
#include "model/hybrid_lm.h"
#include "model/init.h"
#include "model/lora.h"
#include "trainer/adamw.h"
#include "trainer/optimizer.h"
#include "util/memory.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
// CPU time of every thread of this process: on an idle machine ~ threads * wall time; on a
// loaded one the wall time also counts the waits for descheduled threads, this does not.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c + " (1/5/15 min, on " + std::to_string(omp_get_num_procs()) +
         " CPUs)";
}
double load_1min() { return std::stod(load_average()); }
std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

// ---------------------------------------------------------------------------------------------
// Options: "--key value" pairs and two switches, parsed by hand (nothing here needs more).
// ---------------------------------------------------------------------------------------------
struct Options {
  std::string config = "experiments/presets/phase1.yaml";
  std::vector<std::string> overrides;  // --set key=value (repeatable), as `magellan train`
  int steps = 5;                     // timed steps after the warm-up
  std::vector<int> threads = {1, 2};
  std::vector<bool> block_cache = {false, true};  // --block-cache off,on
  int seq = 128, batch = 4;
  int ckpt_seq = 512, ckpt_batch = 2, ckpt_steps = 3, ckpt_threads = 2;
  std::string only;                  // "", "throughput" or "checkpointing"
  bool breakdown = true;
  bool child = false;
  std::string checkpointing = "none";  // child: none | every_layer
};

Options parse_options(int argc, char** argv) {
  Options o;
  auto to_int = [](const std::string& key, const std::string& v) {
    try {
      return std::stoi(v);
    } catch (...) {
      throw mg::Error("[bench_train_step] " + key + " wants an integer, got '" + v + "'");
    }
  };
  const std::map<std::string, int*> int_flags = {
      {"--steps", &o.steps},         {"--seq", &o.seq},
      {"--batch", &o.batch},         {"--ckpt-seq", &o.ckpt_seq},
      {"--ckpt-batch", &o.ckpt_batch}, {"--ckpt-steps", &o.ckpt_steps},
      {"--ckpt-threads", &o.ckpt_threads}};
  const std::map<std::string, std::string*> string_flags = {
      {"--config", &o.config}, {"--only", &o.only}, {"--checkpointing", &o.checkpointing}};
  for (int i = 1; i < argc; ++i) {
    const std::string key = argv[i];
    if (key == "--child") { o.child = true; continue; }
    if (key == "--no-breakdown") { o.breakdown = false; continue; }
    MG_CHECK(i + 1 < argc, "[bench_train_step] {} needs a value (see the flags at the top of "
             "bench/bench_train_step.cpp)", key);
    const std::string v = argv[++i];
    if (int_flags.count(key)) *int_flags.at(key) = to_int(key, v);
    else if (string_flags.count(key)) *string_flags.at(key) = v;
    else if (key == "--set") o.overrides.push_back(v);
    else if (key == "--threads") {
      o.threads.clear();
      std::stringstream ss(v);
      for (std::string t; std::getline(ss, t, ',');) o.threads.push_back(to_int(key, t));
    } else if (key == "--block-cache") {
      o.block_cache.clear();
      std::stringstream ss(v);
      for (std::string t; std::getline(ss, t, ',');) {
        MG_CHECK(t == "on" || t == "off", "[bench_train_step] --block-cache takes on, off or "
                 "on,off; got '{}'", v);
        o.block_cache.push_back(t == "on");
      }
    } else {
      throw mg::Error("[bench_train_step] unknown flag '" + key + "'; the flags are listed at "
                      "the top of bench/bench_train_step.cpp");
    }
  }
  MG_CHECK(o.steps >= 1 && o.ckpt_steps >= 1 && o.seq >= 1 && o.batch >= 1 && o.ckpt_seq >= 1 &&
               o.ckpt_batch >= 1 && !o.threads.empty() &&
               *std::min_element(o.threads.begin(), o.threads.end()) >= 1,
           "[bench_train_step] --steps, --ckpt-steps, --seq, --batch, --threads must be >= 1");
  MG_CHECK(!o.block_cache.empty(), "[bench_train_step] --block-cache needs on, off or off,on");
  MG_CHECK(o.checkpointing == "none" || o.checkpointing == "every_layer",
           "[bench_train_step] --checkpointing is none or every_layer, got '{}'", o.checkpointing);
  MG_CHECK(o.only.empty() || o.only == "throughput" || o.only == "checkpointing",
           "[bench_train_step] --only is throughput or checkpointing, got '{}'", o.only);
  return o;
}

// FMA peak: the kernel bench_sgemm and bench_train_step share (bench/fma_chains.h), so their
// fractions of peak are against the same loop.
using mg::bench::fma_chains;
using mg::bench::kFlopsPerIteration;
using mg::bench::kFmaChains;

// Best GFLOP/s of `threads` OpenMP threads over `reps` short samples (~50 ms each), timed by
// the process CPU time / threads: on a shared machine that is the rate the cores reach while
// the loop runs, so the peak is not understated when other processes take turns on them.
double fma_peak_gflops(int threads, int reps) {
  const int64_t iterations = 20'000'000;
  volatile float sink = 0;
  double best = 0;
  for (int r = 0; r <= reps; ++r) {  // r = 0 warms up (clock ramp, thread start)
    const auto t0 = Clock::now();
    const double cpu0 = process_cpu_seconds();
    float sum = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sum)
    sum += fma_chains(iterations);
    const double s = std::min(seconds_since(t0), (process_cpu_seconds() - cpu0) / threads);
    sink = sink + sum;
    if (r > 0) best = std::max(best, threads * iterations * kFlopsPerIteration / s * 1e-9);
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Analytic model FLOPs of one training token (forward + backward), the PaLM MFU convention
// (Chowdhury et al. 2022, appendix B): recomputation (the scan's chunk replay, gradient
// checkpointing) is NOT counted, so MFU compares useful work only.
//   matmuls: 6 * P_active (2 forward + 4 backward: input and weight gradients), P_active =
//     Mamba layer: in_proj 2D*C + x_proj (R+2N)*D + dt_proj R*D + out_proj C*D + conv K*D
//     MoE layer:   router E*C + k * (up F*C + down C*F [+ gate F*C for swiglu])  (dropless)
//     head:        V*C (tied: the embedding matrix again; the lookup itself is free)
//   selective scan per (token, d, n), from model/selective_scan*.cpp: forward 7 (delta*A, exp,
//     delta*u*B, h fma, y fma); backward 14 (G, dC, dB, G*B, carry, w, w*A, dA: 6 fma + 2 mul)
//     -> 21 * D * N per token per Mamba layer (the backward also replays the forward: 7 more,
//     not counted).
//   Not counted: norms, activations, softplus, softmax/CE (~5V = 5e4 per token, < 0.1%).
// ---------------------------------------------------------------------------------------------
struct FlopModel {
  double active_params = 0;     // per token, matmul/conv weights only
  double mamba_params = 0, moe_params = 0, head_params = 0;  // per layer / head
  double scan_flops = 0;        // per token, all Mamba layers, fwd + bwd
  double total_params = 0;      // every parameter, all experts: checked against the model
  double per_token() const { return 6.0 * active_params + scan_flops; }
};

FlopModel flop_model(const mg::ModelConfig& m) {
  const double C = m.d_model, D = m.d_inner(), N = m.d_state, R = m.resolved_dt_rank(),
               K = m.d_conv, E = m.n_experts, k = m.top_k, F = m.expert_hidden, V = m.vocab_size;
  FlopModel f;
  f.mamba_params = 2 * D * C + (R + 2 * N) * D + R * D + C * D + K * D;
  f.moe_params = E * C + k * F * C * (m.expert_mlp == mg::ExpertMlp::Swiglu ? 3 : 2);
  f.head_params = V * C;
  f.active_params =
      m.n_mamba_layers() * f.mamba_params + m.n_moe_layers() * f.moe_params + f.head_params;
  f.scan_flops = m.n_mamba_layers() * 21.0 * D * N;
  // + conv and dt_proj biases, A_log, D, the norms; all E experts; untied head.
  f.total_params = V * C * (m.tie_embeddings ? 1 : 2) + C +
                   m.n_mamba_layers() * (f.mamba_params + 3 * D + D * N + C) +
                   m.n_moe_layers() * (f.moe_params + (E - k) * (f.moe_params - E * C) / k + C);
  return f;
}

// ---------------------------------------------------------------------------------------------
// The training step under test and its setup.
// ---------------------------------------------------------------------------------------------
struct Setup {
  mg::ExperimentConfig cfg;
  std::unique_ptr<mg::HybridLM> model;
  std::unique_ptr<mg::Optimizer> optim;
  mg::Tensor tokens, targets;  // I32 (B,T)
};

Setup make_setup(const Options& o, int seq, int batch) {
  Setup s;
  s.cfg = mg::load_config(o.config, o.overrides).config;
  s.model = std::make_unique<mg::HybridLM>(s.cfg.model, mg::DType::F32);
  s.model->init(s.cfg.seed);
  if (s.cfg.lora.enabled || s.cfg.qlora.enabled)  // NF4 bases and adapters, as the trainer
    mg::apply_lora(*s.model, s.cfg.lora, s.cfg.qlora, s.cfg.seed);
  s.optim = std::make_unique<mg::Optimizer>(s.cfg.optimizer, mg::trainable_parameters(*s.model));
  // One fixed random batch: the same tokens every step, so the loss must fall (a check that
  // forward, backward and the optimizer compose), and both checkpointing children see it.
  mg::Rng rng(12345);
  std::vector<int32_t> ids(size_t(batch) * seq), next(ids.size());
  for (auto& t : ids) t = int32_t(rng.below(uint64_t(s.cfg.model.vocab_size)));
  for (auto& t : next) t = int32_t(rng.below(uint64_t(s.cfg.model.vocab_size)));
  s.tokens = mg::Tensor::from_ids(ids, {batch, seq});
  s.targets = mg::Tensor::from_ids(next, {batch, seq});
  return s;
}

struct StepResult {
  double forward_s = 0, backward_s = 0, optimizer_s = 0, total_s = 0;
  double cpu_s = 0;        // process CPU time of the step, all threads
  double loss = 0, grad_norm = 0;
  // Tape::saved_bytes() at the end of the forward. It counts every saved tensor, so also the
  // weights that Linear ops save by reference (no copy): read it with the RSS figures.
  size_t saved_bytes = 0;
  int64_t rss_after_forward = 0, rss_after_backward = 0;
  uint64_t grad_hash = 0;  // only when asked (it reads every gradient)
};

// 64-bit multiply-xorshift hash over the raw gradient bytes, parameters in optimizer order.
uint64_t hash_gradients(const mg::Optimizer& optim) {
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (const auto& [name, p] : optim.params()) {
    for (char c : name) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
    mg::Tensor g = p.grad();
    if (!g.defined()) continue;
    const auto* w = static_cast<const uint32_t*>(g.raw());
    for (int64_t i = 0; i < g.numel(); ++i) {
      h = (h ^ w[i]) * 0x9fb21c651e98df25ull;
      h ^= h >> 29;
    }
  }
  return h;
}

// forward -> backward -> global grad norm -> clip -> fused AdamW -> zero_grad, as trainer.cpp.
StepResult train_step(Setup& s, mg::GradCheckpointing policy, bool hash) {
  StepResult r;
  mg::ForwardOptions fo{.training = true, .want_logits = false, .checkpointing = policy};
  const double cpu0 = process_cpu_seconds();
  const auto t0 = Clock::now();
  mg::LmOutput out = s.model->forward(s.tokens, s.targets, fo);
  r.loss = out.loss.item();
  r.forward_s = seconds_since(t0);
  r.saved_bytes = mg::current_tape().saved_bytes();
  r.rss_after_forward = mg::current_rss_bytes();
  const auto t1 = Clock::now();
  mg::current_tape().backward(out.loss);
  r.backward_s = seconds_since(t1);
  r.rss_after_backward = mg::current_rss_bytes();
  const auto t2 = Clock::now();
  r.grad_norm = s.optim->grad_norm();
  const double norm_s = seconds_since(t2);
  if (hash) r.grad_hash = hash_gradients(*s.optim);  // outside the timed phases
  const auto t3 = Clock::now();
  const double clip = s.cfg.optimizer.grad_clip;
  s.optim->step(s.cfg.optimizer.lr, clip > 0 ? mg::clip_coefficient(r.grad_norm, clip) : 1.0f);
  s.optim->zero_grad();
  r.optimizer_s = norm_s + seconds_since(t3);
  r.total_s = r.forward_s + r.backward_s + r.optimizer_s;
  r.cpu_s = process_cpu_seconds() - cpu0;  // includes the hash when asked (children only)
  return r;
}

// The warm-up step's checks: a finite loss near ln V (random tokens, near-zero logits at init:
// embedding ~ N(0, 0.02)), finite non-zero gradients.
void validate_first_step(const StepResult& r, const mg::ModelConfig& m, const char* where) {
  const double expected = std::log(double(m.vocab_size));
  MG_CHECK(std::isfinite(r.loss) && std::fabs(r.loss - expected) < 0.5,
           "[bench_train_step] {}: first-step loss {} is not finite or not near ln V = {}", where,
           r.loss, expected);
  MG_CHECK(std::isfinite(r.grad_norm) && r.grad_norm > 0,
           "[bench_train_step] {}: gradient norm {} is not finite and positive", where,
           r.grad_norm);
}
void validate_loss_fell(double first, double last, const char* where) {
  MG_CHECK(std::isfinite(last) && last < first,
           "[bench_train_step] {}: the loss on a repeated batch went {} -> {}; training is broken",
           where, first, last);
}

// ---------------------------------------------------------------------------------------------
// Per-component breakdown: each kind of block run alone on its own tape, forward then
// backward, on the real shapes (input (B,T,C) ~ N(0,1), random output gradient), best of 2,
// multiplied by how many the model has. Their sum against the measured step shows what the
// components leave out (residual adds, the loss sum, allocation).
// ---------------------------------------------------------------------------------------------
struct Part {
  std::string name;
  int count = 0;
  double forward_s = 1e30, backward_s = 1e30;
};

std::vector<Part> component_breakdown(Setup& s) {
  mg::HybridLM& model = *s.model;
  const mg::ModelConfig& m = s.cfg.model;
  const int64_t B = s.tokens.dim(0), T = s.tokens.dim(1), C = m.d_model;
  mg::Rng rng(7);
  auto random = [&](const mg::Shape& shape) {
    mg::Tensor t = mg::Tensor::empty(shape);
    mg::fill_normal(t, rng, 0.0, 1.0);
    return t;
  };
  const mg::Tensor dy = random({B, T, C});
  int first_m = -1, first_e = -1;
  for (int i = 0; i < m.n_layers(); ++i) {
    if (m.layer_pattern[size_t(i)] == 'M' && first_m < 0) first_m = i;
    if (m.layer_pattern[size_t(i)] == 'E' && first_e < 0) first_e = i;
  }
  // body(x) records the component's forward on the current tape and returns (outputs, grads).
  using Body = std::function<std::pair<std::vector<mg::Tensor>, std::vector<mg::Tensor>>(mg::Tensor)>;
  auto time_part = [&](Part& part, const Body& body) {
    for (int rep = 0; rep < 2; ++rep) {
      mg::Tape tape;
      mg::TapeScope scope(tape);
      mg::Tensor x = random({B, T, C});
      x.set_requires_grad(true);  // the block's input gradient is part of the real backward
      const auto t0 = Clock::now();
      auto [outs, grads] = body(x);
      part.forward_s = std::min(part.forward_s, seconds_since(t0));
      const auto t1 = Clock::now();
      tape.backward(outs, grads);
      part.backward_s = std::min(part.backward_s, seconds_since(t1));
    }
  };
  std::vector<Part> parts;
  if (first_m >= 0) {
    parts.push_back({"Mamba layer (norm+mixer+residual)", m.n_mamba_layers()});
    const mg::HybridLayer& layer = *model.layers[size_t(first_m)];
    time_part(parts.back(), [&](mg::Tensor x) {
      mg::Tensor y = mg::ops::add(x, layer.mamba->forward(layer.norm.forward(x), nullptr, true));
      return std::pair{std::vector{y}, std::vector{dy}};
    });
  }
  if (first_e >= 0) {
    parts.push_back({"MoE layer (norm+router+experts+residual)", m.n_moe_layers()});
    const mg::HybridLayer& layer = *model.layers[size_t(first_e)];
    time_part(parts.back(), [&](mg::Tensor x) {
      mg::MoeOutput mo = layer.moe->forward(layer.norm.forward(x), nullptr, true);
      mg::Tensor y = mg::ops::add(x, mo.out);
      return std::pair{std::vector{y, mo.aux, mo.z},
                       std::vector{dy, mg::Tensor::full(mo.aux.shape(), m.aux_loss_coef),
                                   mg::Tensor::full(mo.z.shape(), m.z_loss_coef)}};
    });
  }
  parts.push_back({"head (norm_f + tied V x C matmul + CE)", 1});
  time_part(parts.back(), [&](mg::Tensor x) {
    mg::Tensor h = mg::ops::reshape(model.norm_f.forward(x), {B * T, C});
    mg::Tensor loss = mg::ops::cross_entropy(model.head(h, nullptr, true), s.targets.view({B * T}));
    return std::pair{std::vector{loss}, std::vector{mg::Tensor::full(loss.shape(), 1.0)}};
  });
  model.zero_grad();
  return parts;
}

// ---------------------------------------------------------------------------------------------
// Section 1: throughput.
// ---------------------------------------------------------------------------------------------
struct ThroughputRow {
  int threads = 1;
  bool block_cache = false;
  mg::BlockCacheStats cache;  // over the timed steps
  double peak = 0, load = 0;                             // FMA GFLOP/s; 1-min load at the end
  double median_s = 0, min_s = 0, cpu_s = 0, fwd = 0, bwd = 0, opt = 0;  // per step
  double loss_first = 0, loss_last = 0;
  std::vector<Part> parts;
};

ThroughputRow measure_throughput(const Options& o, int threads, bool block_cache) {
  mg::set_num_threads(threads);
  ThroughputRow row;
  row.threads = threads;
  row.block_cache = block_cache;
  row.peak = fma_peak_gflops(threads, 5);
  Setup s = make_setup(o, o.seq, o.batch);  // fresh weights: every thread count starts equal
  mg::BlockCache::Scope keep_blocks(block_cache);  // as the trainer's loop, when on
  std::fprintf(stderr, "[bench_train_step] %d thread(s), block cache %s: warm-up + %d steps\n", threads,
               block_cache ? "on" : "off", o.steps);
  const StepResult warm = train_step(s, mg::GradCheckpointing::None, false);
  validate_first_step(warm, s.cfg.model, "throughput warm-up");
  mg::BlockCache::reset_stats();
  std::vector<double> total, cpu, fwd, bwd, opt;
  row.loss_first = row.loss_last = warm.loss;
  for (int i = 0; i < o.steps; ++i) {
    const StepResult r = train_step(s, mg::GradCheckpointing::None, false);
    MG_CHECK(std::isfinite(r.loss) && std::isfinite(r.grad_norm),
             "[bench_train_step] step {}: non-finite loss {} or grad norm {}", i, r.loss, r.grad_norm);
    total.push_back(r.total_s), cpu.push_back(r.cpu_s), fwd.push_back(r.forward_s);
    bwd.push_back(r.backward_s), opt.push_back(r.optimizer_s);
    row.loss_last = r.loss;
  }
  validate_loss_fell(row.loss_first, row.loss_last, "throughput");
  row.cache = mg::BlockCache::stats();
  row.median_s = median(total), row.min_s = *std::min_element(total.begin(), total.end());
  row.cpu_s = median(cpu), row.fwd = median(fwd), row.bwd = median(bwd), row.opt = median(opt);
  if (o.breakdown) row.parts = component_breakdown(s);
  row.peak = std::max(row.peak, fma_peak_gflops(threads, 5));  // best of before / after
  row.load = load_1min();
  return row;
}

void run_throughput(const Options& o) {
  const mg::ExperimentConfig cfg = mg::load_config(o.config, o.overrides).config;
  const mg::ModelConfig& m = cfg.model;
  MG_CHECK(!cfg.lora.enabled && !cfg.qlora.enabled, "[bench_train_step] the throughput FLOP "
           "count assumes full fine-tuning; run (Q)LoRA configs with --only checkpointing");
  const FlopModel fm = flop_model(m);
  const int64_t allocated = mg::HybridLM(m, mg::DType::F32, /*meta=*/true).num_parameters();
  // The FLOP formula's architecture must be the one the code builds.
  MG_CHECK(int64_t(fm.total_params) == allocated,
           "[bench_train_step] flop_model counts {} parameters, the model allocates {}: update "
           "flop_model to the model's architecture", int64_t(fm.total_params), allocated);
  const double tokens = double(o.seq) * o.batch;
  std::printf("\n## 1. Training step throughput: %s, seq %d, batch %d (%g tokens/step), fp32 "
              "weights, AdamW %s state, %lld parameters (= flop_model's count)\n",
              o.config.c_str(), o.seq, o.batch, tokens,
              std::string(mg::state_dtype_name(cfg.optimizer.state_dtype)).c_str(),
              static_cast<long long>(allocated));
  std::printf("FLOPs/token = 6 * %.4gM active params (Mamba %.4gM x %d, MoE top-%d %.4gM x %d, "
              "tied head %.4gM) + scan %.4gM = %.1f MFLOP\n",
              fm.active_params / 1e6, fm.mamba_params / 1e6, m.n_mamba_layers(), m.top_k,
              fm.moe_params / 1e6, m.n_moe_layers(), fm.head_params / 1e6, fm.scan_flops / 1e6,
              fm.per_token() / 1e6);
  std::vector<ThroughputRow> rows;
  for (int threads : o.threads)
    for (bool cache : o.block_cache) rows.push_back(measure_throughput(o, threads, cache));

  std::printf("\n| threads | block cache | step s (median of %d) | min s | CPU s | forward s | "
              "backward s | norm+AdamW s | tokens/s | vs no cache | GFLOP/s | FMA peak GFLOP/s | "
              "MFU | MFU by CPU time | loss first -> last | large blocks reused | load 1 min |\n|",
              o.steps);
  for (int i = 0; i < 17; ++i) std::printf(" --- |");
  for (const ThroughputRow& r : rows) {
    const double flops = fm.per_token() * tokens, gflops = flops / r.median_s * 1e-9;
    const double cpu_gflops = flops / (r.cpu_s / r.threads) * 1e-9;
    std::string ratio = "-", reused = "-";
    for (const ThroughputRow& base : rows)  // the same thread count without the cache
      if (r.block_cache && !base.block_cache && base.threads == r.threads)
        ratio = fmt::format("{:.2f}x", base.median_s / r.median_s);
    if (r.block_cache)
      reused = fmt::format("{} of {}, {} unmapped", r.cache.hits, r.cache.hits + r.cache.misses,
                           r.cache.unmapped_blocks);
    std::printf("\n| %d | %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.0f | %s | %.1f | %.1f | "
                "%.1f%% | %.1f%% | %.3f -> %.3f | %s | %.2f |",
                r.threads, r.block_cache ? "on" : "off", r.median_s, r.min_s, r.cpu_s, r.fwd, r.bwd,
                r.opt, tokens / r.median_s, ratio.c_str(), gflops, r.peak, 100.0 * gflops / r.peak,
                100.0 * cpu_gflops / r.peak, r.loss_first, r.loss_last, reused.c_str(), r.load);
  }
  std::printf("\n");
  if (!o.breakdown) return;
  std::printf("\nPer-component time (each block alone on its own tape, best of 2, times its "
              "count), seconds per step:\n\n| component | count |");
  for (const ThroughputRow& r : rows) {
    const char* c = r.block_cache ? ", cache" : "";
    std::printf(" %d thr%s fwd | %d thr%s bwd |", r.threads, c, r.threads, c);
  }
  std::printf("\n| --- | --- |");
  for (size_t i = 0; i < rows.size(); ++i) std::printf(" --- | --- |");
  for (size_t p = 0; p < rows.front().parts.size(); ++p) {
    std::printf("\n| %s | %d |", rows.front().parts[p].name.c_str(), rows.front().parts[p].count);
    for (const ThroughputRow& r : rows)
      std::printf(" %.3f | %.3f |", r.parts[p].count * r.parts[p].forward_s,
                  r.parts[p].count * r.parts[p].backward_s);
  }
  std::printf("\n| sum of components | |");
  for (const ThroughputRow& r : rows) {
    double f = 0, b = 0;
    for (const Part& p : r.parts) f += p.count * p.forward_s, b += p.count * p.backward_s;
    std::printf(" %.3f | %.3f |", f, b);
  }
  std::printf("\n| measured full step | |");
  for (const ThroughputRow& r : rows) std::printf(" %.3f | %.3f |", r.fwd, r.bwd);
  std::printf("\n");
}

// ---------------------------------------------------------------------------------------------
// Section 2: gradient checkpointing, one child process per policy and block-cache mode.
// ---------------------------------------------------------------------------------------------
// Resets VmHWM to the current RSS (Linux >= 4.0: "5" to /proc/self/clear_refs), so the peak
// excludes the setup (QLoRA builds fp32 weights, then quantizes them). False if refused.
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return bool(f);
}

// Child: one validated warm-up step (its gradients hashed), then --ckpt-steps timed steps;
// prints one "RESULT key=value ..." line on stdout.
int run_child(const Options& o) {
  mg::set_num_threads(o.ckpt_threads);
  const auto policy = o.checkpointing == "none" ? mg::GradCheckpointing::None
                                                : mg::GradCheckpointing::EveryLayer;
  Setup s = make_setup(o, o.ckpt_seq, o.ckpt_batch);
  mg::BlockCache::Scope keep_blocks(o.block_cache.front());
  const bool peak_reset = reset_peak_rss();
  const int64_t rss_before = mg::current_rss_bytes();
  const StepResult first = train_step(s, policy, true);
  validate_first_step(first, s.cfg.model, o.checkpointing.c_str());
  std::vector<double> times;
  double last_loss = first.loss;
  for (int i = 0; i < o.ckpt_steps; ++i) {
    const StepResult r = train_step(s, policy, false);
    times.push_back(r.total_s);
    last_loss = r.loss;
  }
  validate_loss_fell(first.loss, last_loss, o.checkpointing.c_str());
  std::printf("RESULT policy=%s block_cache=%s step_s=%.4f saved_bytes=%zu rss_before=%lld rss_fwd=%lld "
              "rss_bwd=%lld peak_rss=%lld loss=%.9g grad_norm=%.17g grad_hash=%016llx "
              "trainable=%lld peak_reset=%d\n",
              o.checkpointing.c_str(), o.block_cache.front() ? "on" : "off", median(times), first.saved_bytes,
              static_cast<long long>(rss_before), static_cast<long long>(first.rss_after_forward),
              static_cast<long long>(first.rss_after_backward),
              static_cast<long long>(mg::peak_rss_bytes()),
              first.loss, first.grad_norm, static_cast<unsigned long long>(first.grad_hash),
              static_cast<long long>(s.optim->num_parameters()), int(peak_reset));
  std::fflush(stdout);
  return 0;
}

// Re-executes this program (/proc/self/exe) with --child and reads its RESULT line from a pipe.
// posix_spawn, and only from a parent that has not started OpenMP threads yet.
std::map<std::string, std::string> spawn_child(const Options& o, const std::string& policy, bool block_cache) {
  std::vector<std::string> args = {
      "/proc/self/exe", "--child", "--checkpointing", policy, "--block-cache", block_cache ? "on" : "off",
      "--config", o.config,
      "--ckpt-seq", std::to_string(o.ckpt_seq), "--ckpt-batch", std::to_string(o.ckpt_batch),
      "--ckpt-steps", std::to_string(o.ckpt_steps), "--ckpt-threads", std::to_string(o.ckpt_threads)};
  for (const std::string& ov : o.overrides) args.insert(args.end(), {"--set", ov});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  MG_CHECK(pipe(fds) == 0, "[bench_train_step] pipe() failed: {}", std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  pid_t pid = 0;
  const int err = posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  MG_CHECK(err == 0, "[bench_train_step] posix_spawn(/proc/self/exe) failed: {}", std::strerror(err));
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) text.append(buf, size_t(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  MG_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "[bench_train_step] child ({}) failed (status {}); its error is printed above", policy,
           status);
  std::map<std::string, std::string> kv;
  const size_t at = text.find("RESULT ");
  MG_CHECK(at != std::string::npos, "[bench_train_step] child ({}) printed no RESULT line: '{}'",
           policy, text);
  std::stringstream ss(text.substr(at + 7));
  for (std::string item; ss >> item;) {
    const size_t eq = item.find('=');
    if (eq != std::string::npos) kv[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return kv;
}

bool same_grad_hashes(const std::vector<std::map<std::string, std::string>>& runs) {
  for (const auto& kv : runs)
    if (kv.at("grad_hash") != runs.front().at("grad_hash")) return false;
  return true;
}

void print_checkpointing(const Options& o, const std::vector<std::map<std::string, std::string>>& runs,
                         double load) {
  std::string config = o.config;
  for (const std::string& ov : o.overrides) config += " " + ov;
  std::printf("\n## 2. Gradient checkpointing: %s (%s trainable parameters), seq %d, batch %d, %d "
              "threads, one child process per policy and block-cache mode (median of %d steps after 1 warm-up); 1-min "
              "load after them %.2f\n\n",
              config.c_str(), runs[0].at("trainable").c_str(), o.ckpt_seq, o.ckpt_batch,
              o.ckpt_threads, o.ckpt_steps, load);
  std::printf("| policy | block cache | step s | peak RSS | RSS before step 1 | after forward | after backward | "
              "peak - before | Tape::saved_bytes() after forward | grad hash |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const auto& kv : runs) {
    const double peak = std::stod(kv.at("peak_rss")), before = std::stod(kv.at("rss_before"));
    std::printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", kv.at("policy").c_str(),
                kv.at("block_cache").c_str(), kv.at("step_s").c_str(), mg::format_bytes(peak).c_str(),
                mg::format_bytes(before).c_str(), mg::format_bytes(std::stod(kv.at("rss_fwd"))).c_str(),
                mg::format_bytes(std::stod(kv.at("rss_bwd"))).c_str(),
                mg::format_bytes(peak - before).c_str(),
                mg::format_bytes(std::stod(kv.at("saved_bytes"))).c_str(), kv.at("grad_hash").c_str());
  }
  if (runs[0].at("peak_reset") != "1")
    std::printf("\n(/proc/self/clear_refs refused the VmHWM reset: the peak includes the setup)\n");
  std::printf("\ngradients identical across policies and block-cache modes: %s (hash of every "
              "gradient's bits; grad norms %s vs %s; losses %s vs %s)\n",
              same_grad_hashes(runs) ? "yes" : "NO", runs[0].at("grad_norm").c_str(),
              runs.back().at("grad_norm").c_str(), runs[0].at("loss").c_str(),
              runs.back().at("loss").c_str());
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse_options(argc, argv);
    if (o.child) return run_child(o);
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // tables and stderr progress interleave in order

    std::printf("# bench_train_step on %s; load average at start: %s\n", cpu_model_name().c_str(),
                load_average().c_str());
    // Children first: this process must not have started OpenMP threads when it spawns.
    std::vector<std::map<std::string, std::string>> ckpt_runs;
    double ckpt_load = 0;
    if (o.only != "throughput") {
      for (const char* policy : {"none", "every_layer"})
        for (bool cache : o.block_cache) {
          std::fprintf(stderr, "[bench_train_step] checkpointing child: %s, block cache %s\n", policy,
                       cache ? "on" : "off");
          ckpt_runs.push_back(spawn_child(o, policy, cache));
        }
      ckpt_load = load_1min();
    }
    if (o.only != "checkpointing") run_throughput(o);
    if (!ckpt_runs.empty()) print_checkpointing(o, ckpt_runs, ckpt_load);
    std::printf("\nload average at end: %s\n", load_average().c_str());
    const bool grads_match = ckpt_runs.empty() || same_grad_hashes(ckpt_runs);
    return grads_match ? 0 : 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
