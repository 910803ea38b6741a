#include "autograd/tape.h"

#include <algorithm>

namespace mg {

namespace {
thread_local std::vector<Tape*> tape_stack;
thread_local Tape default_tape;
thread_local bool grad_mode = true;
}  // namespace

Tape& current_tape() { return tape_stack.empty() ? default_tape : *tape_stack.back(); }
TapeScope::TapeScope(Tape& tape) { tape_stack.push_back(&tape); }
TapeScope::~TapeScope() { tape_stack.pop_back(); }

bool grad_enabled() { return grad_mode; }
NoGradGuard::NoGradGuard() : previous(grad_mode) { grad_mode = false; }
NoGradGuard::~NoGradGuard() { grad_mode = previous; }

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_mode) return false;
  return std::any_of(inputs.begin(), inputs.end(),
                     [](const Tensor* t) { return t && t->defined() && t->requires_grad(); });
}

std::shared_ptr<GradSlot> make_output_slot(Tensor& out) {
  out.set_requires_grad(true, /*is_param=*/false);
  return out.slot();
}

size_t Tape::saved_bytes() const {
  size_t total = 0;
  for (const Node& n : nodes_)
    for (const Tensor& t : n.saved) total += t.defined() ? t.bytes() : 0;
  return total;
}

void Tape::backward(const Tensor& loss) {
  MG_CHECK(loss.defined() && loss.numel() == 1,
           "[autograd] backward() needs a scalar loss, got {}", loss.describe());
  MG_CHECK(loss.requires_grad(),
           "[autograd] backward(): the loss does not depend on any tensor that requires grad "
           "(was it computed under NoGradGuard, or are all parameters frozen?)");
  Tensor g = slot_grad(*loss.slot());
  g.fill(1.0);
  run_backward();
}

void Tape::backward(const std::vector<Tensor>& outputs, const std::vector<Tensor>& output_grads) {
  MG_CHECK(outputs.size() == output_grads.size(), "[autograd] backward: {} outputs, {} grads",
           outputs.size(), output_grads.size());
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!outputs[i].requires_grad() || !output_grads[i].defined()) continue;
    Tensor g = slot_grad(*outputs[i].slot());
    g.copy_from(output_grads[i]);
  }
  run_backward();
}

void Tape::run_backward() {
  // Walk in reverse; free each node (and what it saved) as soon as it has run.
  while (!nodes_.empty()) {
    Node node = std::move(nodes_.back());
    nodes_.pop_back();
    bool any_out_grad = std::any_of(node.out.begin(), node.out.end(),
                                    [](const auto& s) { return s && s->grad; });
    if (any_out_grad && node.backward) node.backward(node);
    // Activation gradients are dead once their producer has run; parameters keep theirs.
    for (auto& s : node.out)
      if (s && !s->is_param) s->grad.reset();
  }
}

}  // namespace mg
