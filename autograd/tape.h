#pragma once
// The tape: an eager, define-by-run record of ops. Each op, as it runs forward, appends a
// Node holding (a) the GradSlots of its inputs and outputs, (b) exactly the tensors its
// backward reads (`saved`), and (c) the backward function. backward(loss) walks the nodes in
// reverse recording order (already a topological order), then frees them and their saved
// tensors.
//
// Gradient convention: every backward ACCUMULATES (+=) into its inputs' gradient buffers,
// which start at zero when first touched. Parameter gradients therefore accumulate across
// backward calls (free gradient accumulation: zero them after the optimizer step); an
// activation's gradient is freed as soon as the node that produced it has run.
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "autograd/tensor.h"

namespace mg {

struct Node {
  std::string_view op;                       // op name, for errors and memory reports
  std::vector<std::shared_ptr<GradSlot>> in;  // null where the input needs no gradient
  std::vector<std::shared_ptr<GradSlot>> out;
  std::vector<Tensor> saved;                 // exactly what backward reads
  std::function<void(Node&)> backward;

  bool needs(size_t i) const { return i < in.size() && in[i] != nullptr; }
  Tensor in_grad(size_t i) { return slot_grad(*in[i]); }  // zeroed on first use
  Tensor out_grad(size_t i = 0) const {                    // undefined if nothing flowed back
    return out[i] && out[i]->grad ? Tensor(out[i]->grad) : Tensor();
  }
};

class Tape {
 public:
  // Appends a node. Called by ops only when grad mode is on and some input requires grad.
  void record(Node node) { nodes_.push_back(std::move(node)); }

  // Seeds d(loss)/d(loss) = 1 and runs every node's backward in reverse order; then clears.
  void backward(const Tensor& loss);
  // Same, but seeds the given output gradients (used by gradient checkpointing).
  void backward(const std::vector<Tensor>& outputs, const std::vector<Tensor>& output_grads);

  void clear() { nodes_.clear(); }
  size_t size() const { return nodes_.size(); }
  size_t saved_bytes() const;  // bytes held by saved tensors (memory the tape keeps alive)

 private:
  void run_backward();
  std::vector<Node> nodes_;
};

// The tape ops record into: a per-thread stack, with a default tape at the bottom.
Tape& current_tape();
struct TapeScope {  // pushes `tape` as current for this scope
  explicit TapeScope(Tape& tape);
  ~TapeScope();
};

bool grad_enabled();
struct NoGradGuard {  // evaluation / inference: ops record nothing
  NoGradGuard();
  ~NoGradGuard();
  bool previous;
};

// Helpers for op implementations.
// True when grad mode is on and any of the inputs requires a gradient.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
// Makes `out` require grad (an activation) and returns its slot.
std::shared_ptr<GradSlot> make_output_slot(Tensor& out);
// The input's slot or null.
inline std::shared_ptr<GradSlot> input_slot(const Tensor& t) {
  return t.defined() ? t.slot() : nullptr;
}

}  // namespace mg
