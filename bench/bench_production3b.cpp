// production3B on one small machine (issues 3 and 4): can the 3.3B-parameter preset be built,
// initialized and run, and what does one QLoRA training step cost in time and peak RSS?
// Plain main, prints figures:
//   (from the repository root) build-x/bench_production3b [--mode fp32|qlora|all] [--config PATH] [--fwd-seq 64]
//                              [--seq 512] [--rank 64] [--steps 1] [--no-baseline] [--no-block-cache]
//   fp32   float32 model: construct, init(seed), one no-grad forward at batch 1, fwd-seq tokens.
//   qlora  streaming QLoRA init (HybridLM::init(seed, quantize_linears=true): one layer's
//          float32 weights resident at a time; the tied embedding NF4 too, as the config's
//          qlora.quantize_embedding, default true), apply_lora (r on in_proj, out_proj), then
//          `steps` training steps at batch 1, `seq` tokens, gradient checkpointing every layer,
//          AdamW over the adapters. Baseline, same run: one no-grad forward at the same
//          length (so a step reads as a multiple of a forward). The steps run inside a
//          BlockCache scope, as the trainer's (--no-block-cache: without, to compare; peak RSS
//          is per process, so compare two runs).
// Peak RSS is VmHWM; it is reset through /proc/self/clear_refs ("5") between the modes of
// --mode all and before the qlora steps, so each phase's peak is its own.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "autograd/block_cache.h"
#include "autograd/tape.h"
#include "experiments/config_loader.h"
#include "model/hybrid_lm.h"
#include "model/lora.h"
#include "trainer/optimizer.h"
#include "util/memory.h"

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Args {
  std::string mode = "all";
  std::string config = "experiments/presets/production3B.yaml";  // run from the repository root
  int fwd_seq = 64, seq = 512, rank = 64, steps = 1;
  bool baseline = true;
  bool block_cache = true;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      MG_CHECK(i + 1 < argc, "[bench_production3b] {} needs a value", k);
      return argv[++i];
    };
    if (k == "--mode") a.mode = next();
    else if (k == "--config") a.config = next();
    else if (k == "--fwd-seq") a.fwd_seq = std::stoi(next());
    else if (k == "--seq") a.seq = std::stoi(next());
    else if (k == "--rank") a.rank = std::stoi(next());
    else if (k == "--steps") a.steps = std::stoi(next());
    else if (k == "--no-baseline") a.baseline = false;
    else if (k == "--no-block-cache") a.block_cache = false;
    else throw mg::Error("[bench_production3b] unknown option " + k +
                         "; see the comment at the top of bench/bench_production3b.cpp");
  }
  MG_CHECK(a.mode == "fp32" || a.mode == "qlora" || a.mode == "all",
           "[bench_production3b] --mode must be fp32, qlora or all, got {}", a.mode);
  return a;
}

void reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";  // Linux: resets VmHWM to the current RSS
}

std::string rss_line() {
  return fmt::format("rss {:>10}  peak {:>10}", mg::format_bytes(mg::current_rss_bytes()),
                     mg::format_bytes(mg::peak_rss_bytes()));
}

mg::Tensor random_ids(int64_t T, int64_t V, uint64_t seed) {  // (1, T)
  mg::Rng rng(seed);
  std::vector<int32_t> v(T);
  for (auto& x : v) x = static_cast<int32_t>(rng.below(V));
  return mg::Tensor::from_ids(v, {1, T});
}

void run_fp32(const mg::ExperimentConfig& cfg, const Args& a) {
  std::printf("== fp32: construct, init, forward (batch 1, seq %d, no grad) ==\n", a.fwd_seq);
  auto t0 = Clock::now();
  mg::HybridLM model(cfg.model);
  std::printf("construct   %8.2f s   %s\n", since(t0), rss_line().c_str());
  int64_t n = 0;
  model.visit_parameters([&](const std::string&, mg::Tensor& p) { n += p.numel(); });
  std::printf("parameters  %lld (%s float32)\n", static_cast<long long>(n), mg::format_bytes(4.0 * n).c_str());
  t0 = Clock::now();
  model.init(cfg.seed);
  std::printf("init        %8.2f s   %s   (%.1f M draws/s)\n", since(t0), rss_line().c_str(), n / since(t0) / 1e6);
  const mg::Tensor tokens = random_ids(a.fwd_seq, cfg.model.vocab_size, 1);
  mg::NoGradGuard no_grad;
  t0 = Clock::now();
  mg::LmOutput out = model.forward(tokens, tokens);
  const double t = since(t0);
  std::printf("forward     %8.2f s   %s   (loss %.4f, ln V = %.4f)\n", t, rss_line().c_str(), out.loss.item(),
              std::log(static_cast<double>(cfg.model.vocab_size)));
}

// Bytes of the model by kind: NF4 Linear bases, the NF4 embedding (with the absmax it caches
// for lookups), float32 parameters that are not adapters, adapters.
struct Breakdown {
  int64_t nf4 = 0, nf4_embedding = 0, fp32 = 0, adapters = 0;
  int n_nf4 = 0;
  int64_t frozen_base() const { return nf4 + nf4_embedding + fp32; }
};
Breakdown breakdown(mg::HybridLM& model) {
  Breakdown b;
  mg::visit_linears(model, [&](const std::string&, mg::Linear& l) {
    if (l.is_quantized()) b.nf4 += l.quantized()->bytes(), ++b.n_nf4;
  });
  if (model.embedding.is_quantized())
    b.nf4_embedding = mg::Embedding::nf4_resident_bytes(model.embedding.num_embeddings, model.embedding.embedding_dim);
  model.visit_parameters([&](const std::string& name, mg::Tensor& p) {
    if (p.is_meta()) return;
    (mg::is_adapter_param(name) ? b.adapters : b.fp32) += static_cast<int64_t>(p.bytes());
  });
  return b;
}

void run_qlora(const mg::ExperimentConfig& cfg, const Args& a) {
  std::printf("== qlora: streaming NF4 init, LoRA r=%d on in_proj,out_proj, step at batch 1, seq %d, "
              "checkpointing every layer ==\n", a.rank, a.seq);
  auto t0 = Clock::now();
  mg::HybridLM model(cfg.model);
  std::printf("construct   %8.2f s   %s\n", since(t0), rss_line().c_str());
  t0 = Clock::now();
  model.init(cfg.seed, /*quantize_linears=*/true, cfg.qlora.quantize_embedding);
  std::printf("init+nf4    %8.2f s   %s\n", since(t0), rss_line().c_str());
  Breakdown b = breakdown(model);
  const int64_t base_rss = mg::current_rss_bytes();
  std::printf("frozen base %d NF4 linears %s + NF4 embedding %s + float32 params %s = %s accounted; resident now %s "
              "(target 1.8 GB = %s)\n", b.n_nf4, mg::format_bytes(b.nf4).c_str(), mg::format_bytes(b.nf4_embedding).c_str(), mg::format_bytes(b.fp32).c_str(),
              mg::format_bytes(b.frozen_base()).c_str(), mg::format_bytes(base_rss).c_str(),
              mg::format_bytes(1.8e9).c_str());

  mg::LoraConfig lora = cfg.lora;
  lora.enabled = true;
  lora.r = a.rank;
  lora.target_modules = {"in_proj", "out_proj"};
  mg::QloraConfig qlora = cfg.qlora;
  qlora.enabled = true;
  const mg::LoraReport rep = mg::apply_lora(model, lora, qlora, cfg.seed);
  std::printf("apply_lora  %s\n", rep.summary().c_str());
  mg::Optimizer optim(cfg.optimizer, mg::trainable_parameters(model));
  b = breakdown(model);

  const mg::Tensor tokens = random_ids(a.seq + 1, cfg.model.vocab_size, 2);
  const mg::Tensor input = mg::Tensor::from_ids(
      std::vector<int32_t>(tokens.data<int32_t>(), tokens.data<int32_t>() + a.seq), {1, a.seq});
  const mg::Tensor target = mg::Tensor::from_ids(
      std::vector<int32_t>(tokens.data<int32_t>() + 1, tokens.data<int32_t>() + a.seq + 1), {1, a.seq});
  mg::Rng rng(cfg.seed + 17);

  double fwd = 0;
  if (a.baseline) {
    mg::NoGradGuard no_grad;
    t0 = Clock::now();
    mg::LmOutput out = model.forward(input, target, {.want_logits = false});
    fwd = since(t0);
    std::printf("baseline: no-grad forward %8.2f s   %s   (loss %.4f)\n", fwd, rss_line().c_str(), out.loss.item());
  }
  const int64_t init_peak = mg::peak_rss_bytes();
  reset_peak_rss();  // the step's own peak, apart from the init's
  mg::BlockCache::Scope keep_blocks(a.block_cache);  // as training.block_cache in the trainer
  std::printf("block cache %s\n", a.block_cache ? "on (training.block_cache: true)" : "off");
  for (int s = 0; s < a.steps; ++s) {
    t0 = Clock::now();
    mg::ForwardOptions opts;
    opts.training = true;
    opts.want_logits = false;
    opts.checkpointing = mg::GradCheckpointing::EveryLayer;
    opts.rng = &rng;
    mg::LmOutput out = model.forward(input, target, opts);
    const double t_fwd = since(t0);
    mg::current_tape().backward(out.loss);
    const double t_bwd = since(t0) - t_fwd;
    optim.step(cfg.optimizer.lr, 1.0f);
    optim.zero_grad();
    const double t = since(t0);
    std::printf("step %d      %8.2f s   %s   (forward %.2f s, backward %.2f s, optimizer %.2f s; loss %.4f%s)\n",
                s + 1, t, rss_line().c_str(), t_fwd, t_bwd, t - t_fwd - t_bwd, out.loss.item(),
                fwd > 0 ? fmt::format("; {:.2f}x the no-grad forward", t / fwd).c_str() : "");
  }
  std::printf("breakdown   NF4 linears %s | NF4 embedding %s | float32 non-adapter %s | adapters %s (%lld params) | "
              "optimizer state %s\n",
              mg::format_bytes(b.nf4).c_str(), mg::format_bytes(b.nf4_embedding).c_str(), mg::format_bytes(b.fp32).c_str(),
              mg::format_bytes(b.adapters).c_str(), static_cast<long long>(optim.num_parameters()),
              mg::format_bytes(optim.state_bytes()).c_str());
  std::printf("peak RSS    init+baseline %s, steps %s (target 4 GB = %s)\n", mg::format_bytes(init_peak).c_str(),
              mg::format_bytes(mg::peak_rss_bytes()).c_str(), mg::format_bytes(4e9).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // figures appear as they are measured, even into a file
  try {
    const Args a = parse(argc, argv);
    const mg::ExperimentConfig cfg = mg::load_config(a.config).config;
    std::printf("config %s: C %d, V %d, %d layers (%s), E %d, F %d\n", a.config.c_str(), cfg.model.d_model,
                cfg.model.vocab_size, cfg.model.n_layers(), cfg.model.layer_pattern.c_str(), cfg.model.n_experts,
                cfg.model.expert_hidden);
    std::printf("start       %s\n", rss_line().c_str());
    if (a.mode != "qlora") run_fp32(cfg, a);
    if (a.mode == "all") {
      reset_peak_rss();
      std::printf("(peak RSS reset: %s)\n", rss_line().c_str());
    }
    if (a.mode != "fp32") run_qlora(cfg, a);
    std::fflush(stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_production3b: %s\n", e.what());
    return 1;
  }
}
