#include "trainer/optimizer.h"

#include "cuda/optimizer_kernels.h"
#include "trainer/adamw.h"
#include "trainer/sgd.h"

namespace mg {

namespace {

// A zeroed 1-d state tensor of n elements on `device`; undefined for n == 0 (nothing to keep,
// and nothing is saved for it, as for an empty vector before).
Tensor state_tensor(int64_t n, DType dtype, Device device) {
  return n > 0 ? Tensor::zeros({n}, dtype, device) : Tensor();
}

int64_t bytes_of(const Tensor& t) { return t.defined() ? static_cast<int64_t>(t.bytes()) : 0; }

}  // namespace

Optimizer::Optimizer(const OptimizerConfig& cfg, std::vector<std::pair<std::string, Tensor>> params)
    : cfg_(cfg), params_(std::move(params)) {
  if (!params_.empty()) device_ = params_.front().second.device();
  for (auto& [name, p] : params_) {
    MG_CHECK(p.dtype() == DType::F32, "[optimizer] {} is {}: training runs in float32", name, dtype_name(p.dtype()));
    MG_CHECK(p.device() == device_,
             "[optimizer] {} is on {} but {} is on {}: all trainable parameters must be on one device "
             "(move the whole model with the same device setting)",
             name, device_name(p.device()), params_.front().first, device_name(device_));
    State s;
    for (const std::string& pat : cfg_.no_decay) s.decay = s.decay && !pattern_matches(pat, name);
    const int64_t n = p.numel();
    if (cfg_.name == OptimizerKind::Sgd) {
      if (cfg_.momentum > 0) s.m = state_tensor(n, DType::F32, device_);
    } else if (cfg_.state_dtype == StateDtype::F32) {
      s.m = state_tensor(n, DType::F32, device_);
      s.v = state_tensor(n, DType::F32, device_);
    } else {
      auto layout = AdamWFp16Layout::for_size(n);
      s.m_q = state_tensor(n, DType::F16, device_);
      s.v_sqrt_q = state_tensor(n, DType::F16, device_);
      s.m_scale = state_tensor(layout.n_blocks, DType::F32, device_);
      s.v_sqrt_scale = state_tensor(layout.n_blocks, DType::F32, device_);
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
    b += bytes_of(s.m) + bytes_of(s.v) + bytes_of(s.m_q) + bytes_of(s.v_sqrt_q) + bytes_of(s.m_scale) +
         bytes_of(s.v_sqrt_scale);
  return b;
}

double Optimizer::grad_norm() const {
  if (device_ == Device::CUDA) {
    std::vector<cuda::DeviceFloats> arrays;
    for (auto& [name, p] : params_) {
      Tensor g = p.grad();
      if (!g.defined()) continue;
      MG_CHECK(g.is_cuda(), "[optimizer] the gradient of {} is on the CPU, its parameter on the GPU", name);
      arrays.push_back({g.dev_data<float>(), g.numel()});
    }
    return cuda::global_grad_l2_norm(arrays);
  }
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
  const bool gpu = device_ == Device::CUDA;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i].second;
    Tensor g = p.grad();
    if (!g.defined()) continue;  // not used by this step's graph (e.g. an expert with no tokens)
    MG_CHECK(g.device() == device_, "[optimizer] the gradient of {} is on {}, its parameter on {}",
             params_[i].first, device_name(g.device()), device_name(device_));
    State& s = state_[i];
    const int64_t n = p.numel();
    if (n == 0) continue;
    const float wd = s.decay ? static_cast<float>(cfg_.weight_decay) : 0.0f;
    // dev_data is the host pointer on the CPU, the device pointer on the GPU.
    float* param = p.dev_data<float>();
    const float* grad = g.dev_data<float>();
    if (cfg_.name == OptimizerKind::Sgd) {
      SgdHyper h{static_cast<float>(lr), static_cast<float>(cfg_.momentum), 0.0f, wd, cfg_.nesterov, step_};
      float* buf = s.m.defined() ? s.m.dev_data<float>() : nullptr;
      if (gpu) {
        validate_sgd_hyper(h);
        cuda::sgd_step({h.lr, h.momentum, h.dampening, h.weight_decay, h.nesterov, h.step}, grad_scale, n, param,
                       grad, buf);
      } else {
        sgd_step(h, grad_scale, n, param, grad, buf);
      }
      continue;
    }
    AdamWHyper h{static_cast<float>(lr), static_cast<float>(cfg_.betas[0]), static_cast<float>(cfg_.betas[1]),
                 static_cast<float>(cfg_.eps), wd, step_};
    const cuda::AdamWArgs a{h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.step};
    if (gpu) validate_adamw_hyper(h);
    if (cfg_.state_dtype == StateDtype::F32) {
      float* m = s.m.dev_data<float>();
      float* v = s.v.dev_data<float>();
      if (gpu)
        cuda::adamw_step_fp32(a, grad_scale, n, param, grad, m, v);
      else
        adamw_step_fp32(h, grad_scale, n, param, grad, m, v);
    } else {
      const AdamWFp16State st{s.m_q.dev_data<uint16_t>(), s.v_sqrt_q.dev_data<uint16_t>(),
                              s.m_scale.dev_data<float>(), s.v_sqrt_scale.dev_data<float>()};
      if (gpu)
        cuda::adamw_step_fp16(a, grad_scale, n, param, grad, st.m_q, st.v_sqrt_q, st.m_scale, st.v_sqrt_scale);
      else
        adamw_step_fp16(h, grad_scale, n, param, grad, st);
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
    // The same datasets (1-d, F32 or F16) whichever device holds the state.
    auto put = [&](const char* what, const Tensor& t) {
      if (!t.defined()) return;
      const Tensor host = t.to(Device::CPU);  // the same handle on the CPU
      f.write(g + "/" + what, host.dtype(), {host.numel()}, host.raw());
    };
    f.create_group(g);
    put("m", s.m);
    put("v", s.v);
    put("m_q", s.m_q);
    put("v_sqrt_q", s.v_sqrt_q);
    put("m_scale", s.m_scale);
    put("v_sqrt_scale", s.v_sqrt_scale);
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
    auto get = [&](const char* what, Tensor& t) {
      if (!t.defined()) return;
      Tensor host = t.is_cuda() ? Tensor::empty(t.shape(), t.dtype()) : t;
      f.read(g + "/" + what, host.dtype(), {host.numel()}, host.raw());
      if (!host.same(t)) t.copy_from(host);
    };
    get("m", s.m);
    get("v", s.v);
    get("m_q", s.m_q);
    get("v_sqrt_q", s.v_sqrt_q);
    get("m_scale", s.m_scale);
    get("v_sqrt_scale", s.v_sqrt_scale);
  }
}

}  // namespace mg
