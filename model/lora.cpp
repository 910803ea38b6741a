#include "model/lora.h"

#include <cmath>

namespace mg {

std::string LoraReport::summary() const {
  const double total = static_cast<double>(trainable_params + frozen_params);
  return fmt::format("{} adapters, {} NF4 layers; trainable {} of {} parameters ({:.3f}%)", adapted.size(),
                     quantized, trainable_params, trainable_params + frozen_params,
                     total > 0 ? 100.0 * static_cast<double>(trainable_params) / total : 0.0);
}

LoraReport apply_lora(HybridLM& model, const LoraConfig& lora, const QloraConfig& qlora, uint64_t seed) {
  LoraReport rep;
  std::vector<std::pair<std::string, Linear*>> linears;
  visit_linears(model, [&](const std::string& name, Linear& l) { linears.emplace_back(name, &l); });

  if (qlora.enabled) {
    for (auto& [name, l] : linears) {
      l->quantize_base();
      ++rep.quantized;
    }
  }
  if (lora.enabled) {
    for (const std::string& pat : lora.target_modules) {
      bool hit = false;
      for (auto& [name, l] : linears) hit = hit || pattern_matches(pat, name);
      if (!hit) {
        std::string some;
        for (size_t i = 0; i < linears.size() && i < 6; ++i) some += (i ? ", " : "") + linears[i].first;
        throw Error(fmt::format("[lora] lora.target_modules pattern '{}' matches no linear layer; layers are "
                                "named like: {}", pat, some));
      }
    }
    Rng rng(seed ^ 0x10a5eedull);
    LoraSettings s{lora.r, lora.alpha, lora.dropout, lora.use_rslora};
    for (auto& [name, l] : linears)
      if (any_pattern_matches(lora.target_modules, name)) {
        l->add_lora(s, rng);
        rep.adapted.push_back(name);
      }
  }
  // Freeze what the mode says is frozen.
  if (lora.enabled || qlora.enabled) {
    model.visit_parameters([&](const std::string& name, Tensor& p) {
      if (p.is_meta()) return;  // NF4 base
      const bool adapter = name.ends_with(".lora_A") || name.ends_with(".lora_B");
      const bool listed = any_pattern_matches(lora.trainable, name);
      set_trainable(p, adapter || listed || (!lora.enabled && !qlora.enabled));
    });
    for (const std::string& pat : lora.trainable)
      for (auto& [name, l] : linears)
        if (l->is_quantized() && pattern_matches(pat, name + ".weight"))
          throw Error(fmt::format("[lora] lora.trainable pattern '{}' names {}.weight, which is frozen NF4 "
                                  "(qlora.enabled): NF4 weights get no gradient; add '{}' to "
                                  "lora.target_modules to train an adapter on it instead", pat, name, name));
  }
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
  double sq = 0;
  int64_t count = 0;
  visit_linears(model, [&](const std::string&, Linear& l) {
    if (!l.has_lora() || l.merged()) return;
    l.merge_lora();
    l.drop_lora();
    ++rep.merged;
    if (requantize) {
      Tensor w = l.weight.clone();
      l.quantize_base();
      NF4ErrorStats st = nf4_error_stats(w.data<float>(), *l.quantized());
      rep.max_abs_error = std::max(rep.max_abs_error, st.max_abs_error);
      sq += st.rms_error * st.rms_error * static_cast<double>(st.count);
      count += st.count;
    }
  });
  if (count) rep.rms_error = std::sqrt(sq / static_cast<double>(count));
  return rep;
}

}  // namespace mg
