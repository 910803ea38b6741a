#include "model/lora.h"

#include <algorithm>
#include <cmath>

namespace mg {

namespace {

// "a, b, c, ..." of the first few names, for error messages that show what would match.
std::string first_names(const std::vector<std::string>& names, size_t n = 6) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < n; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > n) out += ", ...";
  return out;
}

// Throws unless every target_modules pattern hits a Linear that can take an adapter.
void check_target_patterns(const LoraConfig& lora, const std::vector<std::string>& targetable) {
  for (const std::string& pat : lora.target_modules) {
    const bool hit = std::any_of(targetable.begin(), targetable.end(),
                                 [&](const std::string& n) { return pattern_matches(pat, n); });
    if (hit) continue;
    const std::string why = pattern_matches(pat, "lm_head")
                                ? " (lm_head takes no adapter: the head stays full precision, as bitsandbytes "
                                  "keeps it; list 'lm_head.weight' in lora.trainable to train it)"
                                : "";
    throw Error(fmt::format("[lora] lora.target_modules pattern '{}' matches no linear layer{}; layers are "
                            "named like: {}",
                            pat, why, first_names(targetable)));
  }
}

// A weight that is (or is about to be) NF4, and what to do instead of training it.
struct Nf4Weight {
  std::string name;    // "layers.0.mixer.in_proj.weight"
  std::string remedy;  // "add its module to lora.target_modules ..."
};

// Throws unless every lora.trainable pattern names some parameter, and none names a weight
// that is (or is about to be) NF4: it has no float copy and the NF4 ops give it no gradient.
void check_trainable_patterns(const LoraConfig& lora, const std::vector<std::string>& param_names,
                              const std::vector<Nf4Weight>& nf4_weights) {
  for (const std::string& pat : lora.trainable) {
    for (const Nf4Weight& w : nf4_weights)
      if (pattern_matches(pat, w.name))
        throw Error(fmt::format("[lora] lora.trainable pattern '{}' names {}, a frozen NF4 weight: NF4 weights "
                                "get no gradient; {}, or use a narrower pattern",
                                pat, w.name, w.remedy));
    const bool hit = std::any_of(param_names.begin(), param_names.end(),
                                 [&](const std::string& n) { return pattern_matches(pat, n); });
    if (!hit)
      throw Error(fmt::format("[lora] lora.trainable pattern '{}' matches no parameter; parameters are "
                              "named like: {}",
                              pat, first_names(param_names, 8)));
  }
}

}  // namespace

std::string lora_A_name(std::string_view module) { return std::string(module) + ".lora_A"; }
std::string lora_B_name(std::string_view module) { return std::string(module) + ".lora_B"; }
bool is_adapter_param(std::string_view name) { return name.ends_with(".lora_A") || name.ends_with(".lora_B"); }

std::string LoraReport::summary() const {
  const double total = static_cast<double>(trainable_params + frozen_params);
  return fmt::format("{} adapters, {} NF4 weights{}; trainable {} of {} parameters ({:.3f}%)", adapted.size(),
                     quantized, embedding_quantized ? " (embedding included)" : "", trainable_params,
                     trainable_params + frozen_params,
                     total > 0 ? 100.0 * static_cast<double>(trainable_params) / total : 0.0);
}

LoraReport apply_lora(HybridLM& model, const LoraConfig& lora, const QloraConfig& qlora, uint64_t seed) {
  std::vector<std::pair<std::string, Linear*>> linears;
  visit_linears(model, [&](const std::string& name, Linear& l) { linears.emplace_back(name, &l); });
  // lm_head bypasses Linear::forward (lora.h): never quantized, never a target.
  auto is_head = [](const std::string& name) { return name == "lm_head"; };

  // 1. Check every pattern against the model as it will be, before changing anything.
  // The embedding table (the tied head too) follows qlora.quantize_embedding.
  const bool quantize_embedding = qlora.enabled && qlora.quantize_embedding;
  std::vector<std::string> targetable, param_names;
  std::vector<Nf4Weight> nf4_weights;
  for (auto& [name, l] : linears) {
    if (is_head(name)) continue;
    targetable.push_back(name);
    if (qlora.enabled || l->is_quantized())
      nf4_weights.push_back({name + ".weight", "add its module to lora.target_modules to train an adapter on it "
                                               "instead (qlora.enabled)"});
  }
  if (model.embedding.is_quantized())
    nf4_weights.push_back({"embedding.weight", "it is NF4 already (as loaded, e.g. from a base written by "
                                               "`magellan quantize`: quantize it with --keep-embedding to keep "
                                               "the embedding float32 and trainable)"});
  else if (quantize_embedding)
    nf4_weights.push_back({"embedding.weight", "set qlora.quantize_embedding: false to keep the embedding "
                                               "float32 and trainable"});
  model.visit_parameters([&](const std::string& name, Tensor&) { param_names.push_back(name); });
  if (lora.enabled) {
    check_target_patterns(lora, targetable);
    for (const std::string& name : targetable)
      if (any_pattern_matches(lora.target_modules, name)) {
        param_names.push_back(lora_A_name(name));
        param_names.push_back(lora_B_name(name));
      }
  }
  const bool fine_tuning = lora.enabled || qlora.enabled;
  if (fine_tuning) check_trainable_patterns(lora, param_names, nf4_weights);

  // 2. Quantize, add adapters, freeze.
  LoraReport rep;
  if (qlora.enabled)
    for (auto& [name, l] : linears)
      if (!is_head(name)) l->quantize_base();  // no-op for a base already loaded as NF4
  if (quantize_embedding) model.embedding.quantize();  // likewise
  if (lora.enabled) {
    Rng rng(seed ^ 0x10a5eedull);  // A ~ kaiming-uniform, drawn layer by layer in model order
    const LoraSettings s{lora.r, lora.alpha, lora.dropout, lora.use_rslora};
    for (auto& [name, l] : linears)
      if (!is_head(name) && any_pattern_matches(lora.target_modules, name)) {
        l->add_lora(s, rng);
        rep.adapted.push_back(name);
      }
  }
  if (fine_tuning) {
    model.visit_parameters([&](const std::string& name, Tensor& p) {
      if (p.is_meta()) return;  // an NF4 base: no float data, never trainable
      set_trainable(p, is_adapter_param(name) || any_pattern_matches(lora.trainable, name));
    });
  }
  for (auto& [name, l] : linears) rep.quantized += l->is_quantized();
  rep.embedding_quantized = model.embedding.is_quantized();
  rep.quantized += rep.embedding_quantized;
  model.visit_parameters([&](const std::string&, Tensor& p) {
    (p.requires_grad() ? rep.trainable_params : rep.frozen_params) += p.numel();
  });
  return rep;
}

std::vector<std::pair<std::string, Tensor>> trainable_parameters(HybridLM& model) {
  std::vector<std::pair<std::string, Tensor>> out;
  model.visit_parameters([&](const std::string& name, Tensor& p) {
    if (p.requires_grad()) out.emplace_back(name, p);
  });
  return out;
}

MergeReport merge_all_lora(HybridLM& model, bool requantize) {
  MergeReport rep;
  double err_sq = 0, weight_sq = 0;
  int64_t count = 0;
  visit_linears(model, [&](const std::string&, Linear& l) {
    if (!l.has_lora()) return;
    if (!l.merged()) l.merge_lora();
    l.drop_lora();
    ++rep.merged;
    if (requantize) {
      Tensor merged = l.weight.clone();  // quantize_base frees the float weight
      l.quantize_base();
      const NF4ErrorStats st = nf4_error_stats(merged.data<float>(), *l.quantized());
      rep.max_abs_error = std::max(rep.max_abs_error, st.max_abs_error);
      err_sq += st.rms_error * st.rms_error * static_cast<double>(st.count);
      weight_sq += st.rms_weight * st.rms_weight * static_cast<double>(st.count);
      count += st.count;
    }
  });
  if (!requantize) {
    visit_linears(model, [&](const std::string&, Linear& l) {
      if (l.is_quantized()) l.dequantize_base(), ++rep.dequantized;
    });
    if (model.embedding.is_quantized()) model.embedding.dequantize(), ++rep.dequantized;
  }
  if (count) {
    rep.rms_error = std::sqrt(err_sq / static_cast<double>(count));
    rep.rms_weight = std::sqrt(weight_sq / static_cast<double>(count));
  }
  return rep;
}

int merge_adapters(HybridLM& model) {
  int n = 0;
  visit_linears(model, [&](const std::string&, Linear& l) {
    if (l.has_lora() && !l.merged()) l.merge_lora(), ++n;
  });
  return n;
}

int unmerge_adapters(HybridLM& model) {
  int n = 0;
  visit_linears(model, [&](const std::string&, Linear& l) {
    if (l.has_lora() && l.merged()) l.unmerge_lora(), ++n;
  });
  return n;
}

}  // namespace mg
