#include "autograd/module.h"

namespace mg {

void set_trainable(Tensor& param, bool trainable) { param.set_requires_grad(trainable, /*is_param=*/true); }

void Module::register_parameter(const std::string& name, Tensor& member, bool trainable) {
  MG_CHECK(member.defined(), "[module] parameter '{}' registered before it was allocated", name);
  for (auto& [n, _] : params_) MG_CHECK(n != name, "[module] parameter '{}' registered twice", name);
  if (member.name().empty()) member.set_name(name);
  set_trainable(member, trainable);
  params_.emplace_back(name, &member);
}

void Module::register_module(const std::string& name, Module& child) {
  for (auto& [n, _] : children_) MG_CHECK(n != name, "[module] submodule '{}' registered twice", name);
  children_.emplace_back(name, &child);
}

void Module::visit_parameters(const ParamVisitor& fn, const std::string& prefix) {
  for (auto& [name, p] : params_)
    if (p->defined()) fn(prefix + name, *p);  // undefined: a removed optional parameter
  for (auto& [name, child] : children_) child->visit_parameters(fn, prefix + name + ".");
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() {
  std::vector<std::pair<std::string, Tensor>> out;
  visit_parameters([&](const std::string& n, Tensor& p) { out.emplace_back(n, p); });
  return out;
}

Tensor* Module::find_parameter(const std::string& name) {
  Tensor* found = nullptr;
  visit_parameters([&](const std::string& n, Tensor& p) {
    if (n == name) found = &p;
  });
  return found;
}

int64_t Module::num_parameters(bool trainable_only) {
  int64_t n = 0;
  visit_parameters([&](const std::string&, Tensor& p) {
    if (!trainable_only || p.requires_grad()) n += p.numel();
  });
  return n;
}

void Module::to(Device device) {
  visit_parameters([device](const std::string&, Tensor& p) {
    if (p.is_meta() || p.device() == device) return;
    const bool grad = p.requires_grad();
    const bool is_param = grad && p.slot()->is_param;
    Tensor moved = p.to(device);
    if (grad) moved.set_requires_grad(true, is_param);
    p = moved;
  });
}

Device Module::device() const { return stored_device().value_or(Device::CPU); }

std::optional<Device> Module::stored_device() const {
  for (const auto& [_, p] : params_)
    if (p->defined() && !p->is_meta()) return p->device();
  for (const auto& [_, child] : children_)
    if (auto d = child->stored_device()) return d;
  return std::nullopt;
}

void Module::zero_grad() {
  visit_parameters([](const std::string&, Tensor& p) { p.zero_grad(); });
}

}  // namespace mg
