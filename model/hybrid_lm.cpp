#include "model/hybrid_lm.h"

#include <cstring>

#include "autograd/checkpoint.h"
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "model/init.h"

namespace mg {

HybridLayer::HybridLayer(const ModelConfig& cfg, char k, DType dtype, bool meta)
    : kind(k), norm(cfg.d_model, cfg.norm_eps, dtype, meta) {
  register_module("norm", norm);
  if (kind == 'M') {
    mamba = std::make_unique<MambaMixer>(cfg, dtype, meta);
    register_module("mixer", *mamba);
  } else if (kind == 'E') {
    moe = std::make_unique<MoeMixer>(cfg, dtype, meta);
    register_module("mixer", *moe);
  } else {
    throw Error(fmt::format("[model] layer kind '{}' is not 'M' (Mamba) or 'E' (MoE)", kind));
  }
}

HybridLM::HybridLM(const ModelConfig& cfg, DType dtype, bool meta)
    : embedding(cfg.vocab_size, cfg.d_model, dtype, meta), norm_f(cfg.d_model, cfg.norm_eps, dtype, meta),
      cfg_(cfg), dtype_(dtype) {
  MG_CHECK(!cfg.layer_pattern.empty(), "[model] model.layer_pattern is empty: give one letter per layer (M or E)");
  register_module("embedding", embedding);
  for (int i = 0; i < cfg.n_layers(); ++i) {
    layers.push_back(std::make_unique<HybridLayer>(cfg, cfg.layer_pattern[i], dtype, meta));
    register_module("layers." + std::to_string(i), *layers.back());
  }
  register_module("norm_f", norm_f);
  if (!cfg.tie_embeddings) {
    lm_head = std::make_unique<Linear>(cfg.d_model, cfg.vocab_size, false, dtype, meta);
    register_module("lm_head", *lm_head);
  }
}

void HybridLM::init(uint64_t seed, bool quantize_linears, bool quantize_embedding) {
  Rng rng(seed);
  fill_normal(embedding.weight, rng, 0.0, 0.02);
  // Quantizing consumes no draws (here and per layer below), so the draws are those of init(seed).
  if (quantize_linears && quantize_embedding && !embedding.weight.is_meta()) embedding.quantize();
  for (auto& layer : layers) {
    if (layer->mamba) layer->mamba->init(cfg_, rng);
    if (layer->moe) layer->moe->init(rng);
    if (quantize_linears)
      visit_layer_linears(*layer, "", [](const std::string&, Linear& l) {
        if (!l.weight.is_meta()) l.quantize_base();  // meta: nothing drawn, nothing to quantize
      });
  }
  if (lm_head) init_linear_default(*lm_head, rng);
}

// x (B,T,C) -> x + mixer(norm(x)); an MoE layer appends its L_aux and L_z to `extra`.
Tensor HybridLM::run_layer(int i, const Tensor& x, const ForwardOptions& opts, std::vector<Tensor>& extra,
                           std::vector<RoutingStats>& stats) const {
  const HybridLayer& layer = *layers[i];
  Tensor hn = layer.norm.forward(x);
  if (layer.mamba) return ops::add(x, layer.mamba->forward(hn, opts.rng, opts.training));
  MoeOutput mo = layer.moe->forward(hn, opts.rng, opts.training);
  extra.push_back(mo.aux);
  extra.push_back(mo.z);
  stats.push_back(mo.stats);
  return ops::add(x, mo.out);
}

LmOutput HybridLM::forward(const Tensor& tokens, const Tensor& targets, const ForwardOptions& opts) const {
  MG_CHECK(tokens.dtype() == DType::I32 && tokens.ndim() == 2, "[model] tokens must be i32 (B,T), got {}",
           tokens.describe());
  const int64_t B = tokens.dim(0), T = tokens.dim(1), C = cfg_.d_model;
  LmOutput res;
  Tensor x = embedding.forward(tokens);  // (B,T,C)
  Tensor aux_sum, z_sum;
  int n_moe = 0;

  const int group = opts.checkpointing == GradCheckpointing::None ? 0
                    : opts.checkpointing == GradCheckpointing::EveryLayer ? 1
                                                                            : std::max(1, opts.checkpoint_every_n);
  const int L = static_cast<int>(layers.size());
  for (int start = 0; start < L;) {
    const int end = group ? std::min(L, start + group) : start + 1;
    // Segment [start, end): outputs {x, aux, z of each MoE layer in it}. A checkpointed
    // segment re-runs during backward, after this function has returned: it captures only
    // values and the model itself.
    auto stats = std::make_shared<std::vector<RoutingStats>>();
    auto segment = [this, opts, start, end, stats](const std::vector<Tensor>& in) {
      stats->clear();
      std::vector<Tensor> extra;
      Tensor h = in[0];
      for (int i = start; i < end; ++i) h = run_layer(i, h, opts, extra, *stats);
      std::vector<Tensor> outs{h};
      outs.insert(outs.end(), extra.begin(), extra.end());
      return outs;
    };
    std::vector<Tensor> outs = group ? checkpoint(segment, {x}, opts.rng) : segment({x});
    res.routing.insert(res.routing.end(), stats->begin(), stats->end());
    x = outs[0];
    for (size_t j = 1; j + 1 < outs.size(); j += 2) {
      aux_sum = aux_sum.defined() ? ops::add(aux_sum, outs[j]) : outs[j];
      z_sum = z_sum.defined() ? ops::add(z_sum, outs[j + 1]) : outs[j + 1];
      ++n_moe;
    }
    start = end;
  }

  Tensor h = ops::reshape(norm_f.forward(x), {B * T, C});  // (B*T, C)
  Tensor logits = head(h, opts.rng, opts.training);         // (B*T, V)
  if (opts.want_logits) res.logits = logits;
  if (n_moe > 0) {
    res.aux_loss = ops::scale(aux_sum, 1.0 / n_moe);
    res.z_loss = ops::scale(z_sum, 1.0 / n_moe);
  }
  if (targets.defined()) {
    MG_CHECK(targets.dtype() == DType::I32 && targets.numel() == B * T,
             "[model] targets must be i32 (B,T) like tokens {}, got {}", tokens.describe(), targets.describe());
    res.ce_loss = ops::cross_entropy(logits, targets.view({B * T}));
    res.loss = res.ce_loss;
    if (n_moe > 0) {
      if (cfg_.aux_loss_coef != 0) res.loss = ops::add(res.loss, ops::scale(res.aux_loss, cfg_.aux_loss_coef));
      if (cfg_.z_loss_coef != 0) res.loss = ops::add(res.loss, ops::scale(res.z_loss, cfg_.z_loss_coef));
    }
  }
  return res;
}

Tensor HybridLM::decode_step(const Tensor& tokens, DecodeState& state) const {
  NoGradGuard no_grad;
  MG_CHECK(tokens.dtype() == DType::I32 && tokens.ndim() == 1, "[decode] tokens must be i32 (B), got {}",
           tokens.describe());
  const int64_t B = tokens.dim(0), C = cfg_.d_model;
  if (state.mamba.size() != layers.size()) state.mamba.resize(layers.size());
  Tensor x = embedding.forward(tokens.view({B, 1}));  // (B,1,C)
  // Prefetch guess for the first MoE layer at or after `from`, from x as it is now: made at
  // the start and after each MoE layer, so each MoE layer is guessed once per token.
  auto guess_next_moe = [&](size_t from) {
    if (!expert_source_ || !expert_source_->wants_prefetch()) return;
    size_t j = from;
    while (j < layers.size() && !layers[j]->moe) ++j;
    if (j < layers.size())
      expert_source_->prefetch(static_cast<int>(j), layers[j]->moe->route(layers[j]->norm.forward(x)));
  };
  guess_next_moe(0);
  for (size_t i = 0; i < layers.size(); ++i) {
    const HybridLayer& layer = *layers[i];
    Tensor hn = layer.norm.forward(x);
    x = ops::add(x, layer.mamba ? layer.mamba->step(hn, state.mamba[i]) : layer.moe->forward(hn).out);
    if (layer.moe) guess_next_moe(i + 1);
  }
  Tensor h = ops::reshape(norm_f.forward(x), {B, C});
  return head(h);  // (B, V)
}

Tensor HybridLM::prefill(const Tensor& tokens, DecodeState& state) const {
  NoGradGuard no_grad;
  MG_CHECK(tokens.dtype() == DType::I32 && tokens.ndim() == 2 && tokens.dim(1) > 0,
           "[decode] prefill tokens must be i32 (B,T) with T >= 1, got {}", tokens.describe());
  MG_CHECK(state.mamba.empty(), "[decode] prefill starts a sequence: give it a fresh DecodeState");
  const int64_t B = tokens.dim(0), T = tokens.dim(1), C = cfg_.d_model;
  state.mamba.resize(layers.size());
  Tensor x = embedding.forward(tokens);  // (B,T,C)
  for (size_t i = 0; i < layers.size(); ++i) {
    const HybridLayer& layer = *layers[i];
    Tensor hn = layer.norm.forward(x);
    x = ops::add(x, layer.mamba ? layer.mamba->prefill(hn, state.mamba[i]) : layer.moe->forward(hn).out);
  }
  Tensor last = Tensor::empty({B, 1, C}, x.dtype());  // (B,1,C): only the last position needs logits
  const size_t row = static_cast<size_t>(C) * dtype_size(x.dtype());
  for (int64_t b = 0; b < B; ++b)
    std::memcpy(static_cast<char*>(last.raw()) + b * row, static_cast<const char*>(x.raw()) + (b * T + T - 1) * row, row);
  return head(ops::reshape(norm_f.forward(last), {B, C}));  // (B, V)
}

Tensor HybridLM::head(const Tensor& h, Rng* rng, bool training) const {
  // Untied: lm_head is a Linear, so it could be NF4 or carry an adapter (policy in lora.h).
  return lm_head ? lm_head->forward(h, rng, training) : embedding.attend(h);
}

void HybridLM::stream_experts(ExpertSource* source) {
  expert_source_ = source;
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i]->moe) layers[i]->moe->stream_experts(source, static_cast<int>(i));
}

void visit_linears(HybridLM& model, const std::function<void(const std::string&, Linear&)>& fn) {
  for (size_t i = 0; i < model.layers.size(); ++i)
    visit_layer_linears(*model.layers[i], "layers." + std::to_string(i) + ".mixer.", fn);
  if (model.lm_head) fn("lm_head", *model.lm_head);
}

void visit_layer_linears(HybridLayer& layer, const std::string& p,
                         const std::function<void(const std::string&, Linear&)>& fn) {
  if (layer.mamba) {
    MambaMixer& m = *layer.mamba;
    fn(p + "in_proj", m.in_proj);
    fn(p + "x_proj", m.x_proj);
    fn(p + "dt_proj", m.dt_proj);
    fn(p + "out_proj", m.out_proj);
    return;
  }
  MoeMixer& m = *layer.moe;
  fn(p + "router", m.router);
  for (size_t e = 0; e < m.experts.size(); ++e) {
    const std::string ep = p + "experts." + std::to_string(e) + ".";
    fn(ep + "up", m.experts[e]->up);
    fn(ep + "down", m.experts[e]->down);
    if (m.experts[e]->gate) fn(ep + "gate", *m.experts[e]->gate);
  }
}

}  // namespace mg
