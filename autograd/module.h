#pragma once
// Module: a node of the model tree that owns parameters and child modules by name, so the
// whole model can be visited by dotted parameter names (design.md §3), e.g.
// "layers.3.mixer.experts.5.up.weight". Registration stores pointers to the members, so a
// module is neither copyable nor movable once built (hold modules by unique_ptr).
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.h"

namespace mg {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  using ParamVisitor = std::function<void(const std::string& name, Tensor& param)>;
  // Visits every parameter (trainable or frozen) depth-first in registration order.
  void visit_parameters(const ParamVisitor& fn, const std::string& prefix = "");
  std::vector<std::pair<std::string, Tensor>> named_parameters();
  Tensor* find_parameter(const std::string& name);  // null if absent
  int64_t num_parameters(bool trainable_only = false);
  void zero_grad();
  // Moves every parameter (trainable or frozen) to `device`, keeping names and whether it
  // requires a gradient; accumulated gradients are dropped. Meta parameters stay meta.
  void to(Device device);
  // The device of the first stored parameter (CPU when every parameter is meta or none exists).
  Device device() const;

 protected:
  // Registers a member tensor as a parameter named `name`; names it and (if trainable) makes
  // it require a persistent gradient.
  void register_parameter(const std::string& name, Tensor& member, bool trainable = true);
  void register_module(const std::string& name, Module& child);

 private:
  std::optional<Device> stored_device() const;  // nullopt: no stored parameter in this subtree
  std::vector<std::pair<std::string, Tensor*>> params_;
  std::vector<std::pair<std::string, Module*>> children_;
};

// Marks a tensor as a trainable (or frozen) parameter.
void set_trainable(Tensor& param, bool trainable);

}  // namespace mg
