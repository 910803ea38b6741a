#include "autograd/checkpoint.h"

#include "autograd/tape.h"

namespace mg {

std::vector<Tensor> checkpoint(const Segment& segment, const std::vector<Tensor>& inputs, Rng* rng) {
  if (!grad_enabled()) return segment(inputs);

  const auto rng_state = rng ? rng->state() : std::array<uint64_t, 4>{};
  std::vector<Tensor> outputs;
  {
    NoGradGuard no_grad;
    outputs = segment(inputs);
  }
  Node node{"checkpoint", {}, {}, {}, nullptr};
  for (const Tensor& t : inputs) {
    node.in.push_back(input_slot(t));
    node.saved.push_back(t.detach());  // the only activations a checkpointed segment keeps
  }
  for (Tensor& t : outputs) node.out.push_back(make_output_slot(t));

  node.backward = [segment, rng, rng_state](Node& nd) {
    // Recompute the segment on fresh leaves that stand in for the inputs.
    std::vector<Tensor> leaves;
    for (size_t i = 0; i < nd.saved.size(); ++i) {
      Tensor leaf = nd.saved[i].detach();
      if (nd.needs(i)) leaf.set_requires_grad(true);
      leaves.push_back(leaf);
    }
    // Replay the segment's random draws, then put the generator back where it was, so a
    // checkpointed run leaves the RNG exactly as a non-checkpointed one does.
    const auto rng_now = rng ? rng->state() : std::array<uint64_t, 4>{};
    if (rng) rng->set_state(rng_state);
    Tape tape;
    std::vector<Tensor> outs;
    {
      TapeScope scope(tape);
      outs = segment(leaves);
    }
    if (rng) rng->set_state(rng_now);
    std::vector<Tensor> grads;
    for (size_t i = 0; i < outs.size(); ++i) grads.push_back(nd.out_grad(i));
    tape.backward(outs, grads);  // parameters inside accumulate into their own slots
    for (size_t i = 0; i < leaves.size(); ++i) {
      if (!nd.needs(i) || !leaves[i].grad().defined()) continue;
      Tensor g = nd.in_grad(i);
      Tensor lg = leaves[i].grad();
      MG_DISPATCH_FLOAT(g.dtype(), "checkpoint backward", [&] {
        scalar_t* d = g.data<scalar_t>();
        const scalar_t* s = lg.data<scalar_t>();
        for (int64_t j = 0; j < g.numel(); ++j) d[j] += s[j];
      });
    }
  };
  current_tape().record(std::move(node));
  return outputs;
}

}  // namespace mg
