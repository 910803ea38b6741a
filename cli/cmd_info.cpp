// magellan info CONFIG: parameters by component (counted on the model the code builds, in
// meta mode: shapes without storage) and memory for fp32, NF4 + LoRA, and a training step.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>

#include <boost/program_options.hpp>

#include "cli/commands.h"
#include "experiments/config_loader.h"
#include "model/embedding.h"
#include "model/hybrid_lm.h"
#include "model/nf4.h"
#include "util/memory.h"

namespace po = boost::program_options;

namespace mg::cli {

namespace {

// "layers.3.mixer.experts.5.up.weight" -> "MoE experts"
std::string component_of(const std::string& name, const ModelConfig& cfg) {
  if (name.starts_with("embedding")) return "embedding";
  if (name.starts_with("lm_head")) return "lm_head";
  if (name.starts_with("norm_f")) return "norms";
  if (name.find(".norm.") != std::string::npos) return "norms";
  if (name.find(".lora_") != std::string::npos) return "LoRA adapters";
  if (name.find(".experts.") != std::string::npos) return "MoE experts";
  if (name.find(".router.") != std::string::npos) return "MoE routers";
  return "Mamba mixers";
}

}  // namespace

int cmd_info(const Args& args) {
  po::options_description desc(
      "magellan info CONFIG.yaml [key.sub=value ...]\n\n"
      "Prints the parameter count by component (the count the code allocates) and the memory\n"
      "for float32 weights, NF4 + LoRA (QLoRA) weights, one training step (activations estimated\n"
      "from what each layer saves, with training.grad_checkpointing taken into account), and\n"
      "inference with all NF4 weights resident or with the experts streamed.\n\noptions");
  desc.add_options()("help,h", "show this help");
  std::vector<std::string> positional;
  po::variables_map vm = parse_args(args, desc, &positional);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  std::string path;
  std::vector<std::string> overrides;
  for (const auto& a : positional) (a.find('=') != std::string::npos ? overrides.push_back(a) : void(path = a));
  MG_CHECK(!path.empty(), "[info] no config given: magellan info experiments/presets/phase1.yaml");
  const ExperimentConfig cfg = load_config(path, overrides).config;
  const ModelConfig& m = cfg.model;

  HybridLM meta(m, DType::F32, /*meta=*/true);
  std::map<std::string, int64_t> by_component;
  int64_t total = 0;
  meta.visit_parameters([&](const std::string& name, Tensor& p) {
    by_component[component_of(name, m)] += p.numel();
    total += p.numel();
  });
  // QLoRA's NF4 weights (model/lora.h): every Linear but an untied lm_head, and the embedding
  // with qlora.quantize_embedding (with the absmax it keeps for lookups).
  int64_t lora_params = 0, nf4_weight_bytes = 0, nf4_params = 0, expert_nf4_bytes = 0;
  visit_linears(meta, [&](const std::string& name, Linear& l) {
    const int64_t n = l.in_features * l.out_features;
    if (name == "lm_head") return;  // stays float32 and takes no adapter
    nf4_params += n;
    nf4_weight_bytes += nf4_bytes(l.out_features, l.in_features);
    if (name.find(".experts.") != std::string::npos) expert_nf4_bytes += nf4_bytes(l.out_features, l.in_features);
    if (any_pattern_matches(cfg.lora.target_modules, name))
      lora_params += static_cast<int64_t>(cfg.lora.r) * (l.in_features + l.out_features);
  });
  const bool nf4_embedding = cfg.qlora.quantize_embedding;
  if (nf4_embedding) {
    nf4_params += meta.embedding.weight.numel();
    nf4_weight_bytes += Embedding::nf4_resident_bytes(m.vocab_size, m.d_model);
  }

  std::printf("%s: %d layers '%s' (%d Mamba, %d MoE), d_model %d, vocab %d, E=%d top-%d, F=%d, d_state %d\n\n",
              path.c_str(), m.n_layers(), m.layer_pattern.c_str(), m.n_mamba_layers(), m.n_moe_layers(), m.d_model,
              m.vocab_size, m.n_experts, m.top_k, m.expert_hidden, m.d_state);
  std::printf("%-16s %16s %8s\n", "component", "parameters", "share");
  for (const auto& [c, n] : by_component)
    std::printf("%-16s %16lld %7.2f%%\n", c.c_str(), static_cast<long long>(n), 100.0 * n / static_cast<double>(total));
  std::printf("%-16s %16lld  (%.1fM)\n", "total", static_cast<long long>(total), total / 1e6);
  const int64_t active = total - by_component["MoE experts"] +
                         (m.n_experts ? by_component["MoE experts"] * m.top_k / m.n_experts : 0);
  std::printf("%-16s %16lld  (%.1fM; top-%d of %d experts per token)\n\n", "active/token", static_cast<long long>(active),
              active / 1e6, m.top_k, m.n_experts);

  const int64_t other = total - nf4_params;  // norms, conv, A_log, D, biases (lm_head, embedding): stay fp32
  const double fp32 = 4.0 * static_cast<double>(total);
  const double qlora = static_cast<double>(nf4_weight_bytes) + 4.0 * static_cast<double>(other) + 4.0 * static_cast<double>(lora_params);
  std::printf("memory (weights)\n");
  std::printf("  float32                  %12s\n", format_bytes(fp32).c_str());
  std::printf("  NF4 + LoRA r=%-3d         %12s   (NF4 linears%s: %.3f bits/param; %lld fp32 params; "
              "%lld LoRA params on %s)\n", cfg.lora.r, format_bytes(qlora).c_str(),
              nf4_embedding ? " + embedding" : ", embedding fp32 (qlora.quantize_embedding: false)",
              8.0 * static_cast<double>(nf4_weight_bytes) / static_cast<double>(nf4_params), static_cast<long long>(other),
              static_cast<long long>(lora_params), fmt::format("{}", fmt::join(cfg.lora.target_modules, ",")).c_str());
  // A training step: weights + grads + AdamW state (fp16 state ~4 bytes/param, fp32 8) +
  // activations. Activations are an estimate from the tensors each layer saves (see
  // docs/benchmarks.md for measured peaks): per token, a Mamba layer keeps ~(6C + 10D +
  // 2(R+2N)) floats, an MoE layer ~(4C + E + k(2C + 3F)), the head 2V (logits + grad).
  const double BT = static_cast<double>(cfg.training.batch_size) * cfg.data.seq_len;
  const double D = m.d_inner(), C = m.d_model, R = m.resolved_dt_rank(), N = m.d_state;
  auto layer_act = [&](char k) {  // floats saved per token by one layer
    return k == 'M' ? 6 * C + 10 * D + 2 * (R + 2 * N) : 4 * C + m.n_experts + m.top_k * (2 * C + 3.0 * m.expert_hidden);
  };
  double all_layers = 0, largest_group = 0;
  const int group = cfg.training.grad_checkpointing == GradCheckpointing::EveryLayer ? 1
                    : cfg.training.grad_checkpointing == GradCheckpointing::EveryN ? cfg.training.checkpoint_every_n_layers
                                                                                      : 0;
  for (int i = 0; i < m.n_layers(); ++i) {
    all_layers += layer_act(m.layer_pattern[i]);
    if (group && i % group == 0) {  // a checkpointed segment re-runs alone in backward
      double seg = 0;
      for (int j = i; j < std::min(m.n_layers(), i + group); ++j) seg += layer_act(m.layer_pattern[j]);
      largest_group = std::max(largest_group, seg);
    }
  }
  // With checkpointing a segment keeps only its input (C per token) until backward re-runs it.
  const double act_per_token =
      2.0 * m.vocab_size + (group ? C * std::ceil(m.n_layers() / static_cast<double>(group)) + largest_group : all_layers);
  const double acts = 4.0 * BT * act_per_token;
  const double state_bytes = cfg.optimizer.state_dtype == StateDtype::F16 ? 4.0 : 8.0;
  const double full_step = fp32 * 2 + state_bytes * static_cast<double>(total) + acts;
  const double qlora_step = qlora + (4.0 + state_bytes) * static_cast<double>(lora_params) + acts;
  std::printf("memory (one training step, batch %d x seq %d, grad checkpointing %s; activations estimated %s)\n",
              cfg.training.batch_size, cfg.data.seq_len,
              std::string(grad_checkpointing_name(cfg.training.grad_checkpointing)).c_str(), format_bytes(acts).c_str());
  std::printf("  full fp32 + AdamW(%s)    %12s\n", cfg.optimizer.state_dtype == StateDtype::F16 ? "fp16" : "fp32",
              format_bytes(full_step).c_str());
  std::printf("  QLoRA (NF4 + LoRA)       %12s\n", format_bytes(qlora_step).c_str());
  if (cfg.training.block_cache)  // autograd/block_cache.h: mapped <= 1.25x the live peak
    std::printf("  (these are without training.block_cache, on here: it keeps freed blocks for the next "
                "step, up to 25%% more; measured 4-17%% more peak RSS)\n");
  if (m.n_moe_layers() > 0) {  // generate/eval --stream-experts (docs/inference.md)
    const double experts = static_cast<double>(expert_nf4_bytes);
    std::printf("memory (inference, NF4 weights)\n");
    std::printf("  all resident             %12s\n", format_bytes(qlora - 4.0 * lora_params).c_str());
    std::printf("  experts streamed         %12s + the expert cache (experts: %s on disk; default cache a quarter)\n",
                format_bytes(qlora - 4.0 * lora_params - experts).c_str(), format_bytes(experts).c_str());
  }
  return 0;
}

}  // namespace mg::cli
