#include "trainer/optimizer.h"

#include "trainer/adamw.h"
#include "trainer/sgd.h"

namespace mg {

Optimizer::Optimizer(const OptimizerConfig& cfg, std::vector<std::pair<std::string, Tensor>> params)
    : cfg_(cfg), params_(std::move(params)) {
  for (auto& [name, p] : params_) {
    MG_CHECK(p.dtype() == DType::F32, "[optimizer] {} is {}: training runs in float32", name, dtype_name(p.dtype()));
    State s;
    for (const std::string& pat : cfg_.no_decay) s.decay = s.decay && !pattern_matches(pat, name);
    const int64_t n = p.numel();
    if (cfg_.name == OptimizerKind::Sgd) {
      if (cfg_.momentum > 0) s.m.assign(n, 0.0f);
    } else if (cfg_.state_dtype == StateDtype::F32) {
      s.m.assign(n, 0.0f);
      s.v.assign(n, 0.0f);
    } else {
      auto layout = AdamWFp16Layout::for_size(n);
      s.m_q.assign(n, 0);
      s.v_sqrt_q.assign(n, 0);
      s.m_scale.assign(layout.n_blocks, 0.0f);
      s.v_sqrt_scale.assign(layout.n_blocks, 0.0f);
    }
    state_.push_back(std::move(s));
  }
}

int64_t Optimizer::num_parameters() const {
  int64_t n = 0;
  for (auto& [_, p] : params_) n += p.numel();
  return n;
}

int64_t Optimizer::state_bytes() const {
  int64_t b = 0;
  for (const State& s : state_)
    b += 4 * static_cast<int64_t>(s.m.size() + s.v.size() + s.m_scale.size() + s.v_sqrt_scale.size()) +
         2 * static_cast<int64_t>(s.m_q.size() + s.v_sqrt_q.size());
  return b;
}

double Optimizer::grad_norm() const {
  std::vector<std::span<const float>> spans;
  for (auto& [_, p] : params_) {
    Tensor g = p.grad();
    if (g.defined()) spans.emplace_back(g.data<float>(), static_cast<size_t>(g.numel()));
  }
  return global_grad_l2_norm(spans);
}

void Optimizer::zero_grad() {
  for (auto& [_, p] : params_) p.zero_grad();
}

void Optimizer::step(double lr, float grad_scale) {
  ++step_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i].second;
    Tensor g = p.grad();
    if (!g.defined()) continue;  // not used by this step's graph (e.g. an expert with no tokens)
    State& s = state_[i];
    const int64_t n = p.numel();
    const float wd = s.decay ? static_cast<float>(cfg_.weight_decay) : 0.0f;
    if (cfg_.name == OptimizerKind::Sgd) {
      SgdHyper h{static_cast<float>(lr), static_cast<float>(cfg_.momentum), 0.0f, wd, cfg_.nesterov, step_};
      sgd_step(h, grad_scale, n, p.data<float>(), g.data<float>(), s.m.empty() ? nullptr : s.m.data());
      continue;
    }
    AdamWHyper h{static_cast<float>(lr), static_cast<float>(cfg_.betas[0]), static_cast<float>(cfg_.betas[1]),
                 static_cast<float>(cfg_.eps), wd, step_};
    if (cfg_.state_dtype == StateDtype::F32) {
      adamw_step_fp32(h, grad_scale, n, p.data<float>(), g.data<float>(), s.m.data(), s.v.data());
    } else {
      adamw_step_fp16(h, grad_scale, n, p.data<float>(), g.data<float>(),
                      AdamWFp16State{s.m_q.data(), s.v_sqrt_q.data(), s.m_scale.data(), s.v_sqrt_scale.data()});
    }
  }
}

void Optimizer::save(H5File& f, const std::string& group) const {
  f.create_group(group);
  f.set_string_attr(group, "name", cfg_.name == OptimizerKind::Sgd ? "sgd"
                                   : cfg_.state_dtype == StateDtype::F32 ? "adamw_fp32" : "adamw_fp16");
  f.set_int_attr(group, "step", step_);
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string g = group + "/" + params_[i].first;
    const State& s = state_[i];
    auto put_f = [&](const char* what, const std::vector<float>& v) {
      if (!v.empty()) f.write(g + "/" + what, DType::F32, {static_cast<int64_t>(v.size())}, v.data());
    };
    auto put_h = [&](const char* what, const std::vector<uint16_t>& v) {
      if (!v.empty()) f.write(g + "/" + what, DType::F16, {static_cast<int64_t>(v.size())}, v.data());
    };
    f.create_group(g);
    put_f("m", s.m);
    put_f("v", s.v);
    put_h("m_q", s.m_q);
    put_h("v_sqrt_q", s.v_sqrt_q);
    put_f("m_scale", s.m_scale);
    put_f("v_sqrt_scale", s.v_sqrt_scale);
  }
}

void Optimizer::load(const H5File& f, const std::string& group) {
  MG_CHECK(f.is_group(group), "[optimizer] {} has no {} group", f.path(), group);
  step_ = f.int_attr(group, "step");
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string g = group + "/" + params_[i].first;
    MG_CHECK(f.is_group(g), "[optimizer] {}: no state for parameter {} (was the checkpoint written with the same "
             "trainable parameters: lora/qlora settings?)", f.path(), params_[i].first);
    State& s = state_[i];
    auto get_f = [&](const char* what, std::vector<float>& v) {
      if (!v.empty()) f.read(g + "/" + what, DType::F32, {static_cast<int64_t>(v.size())}, v.data());
    };
    auto get_h = [&](const char* what, std::vector<uint16_t>& v) {
      if (!v.empty()) f.read(g + "/" + what, DType::F16, {static_cast<int64_t>(v.size())}, v.data());
    };
    get_f("m", s.m);
    get_f("v", s.v);
    get_h("m_q", s.m_q);
    get_h("v_sqrt_q", s.v_sqrt_q);
    get_f("m_scale", s.m_scale);
    get_f("v_sqrt_scale", s.v_sqrt_scale);
  }
}

}  // namespace mg
