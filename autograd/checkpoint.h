#pragma once
// Gradient checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"):
// the forward of a segment runs without recording, keeping only its inputs; backward re-runs
// the segment with a fresh tape and backpropagates through that. Gradients are identical to
// the non-checkpointed run because the same code runs on the same inputs (and the same RNG
// state, when the segment draws random numbers: pass its Rng to have it replayed).
#include <functional>
#include <vector>

#include "autograd/rng.h"
#include "autograd/tensor.h"

namespace mg {

using Segment = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs)>;

// Runs `segment(inputs)`; with grad mode on, records one node whose backward recomputes it.
// Outputs must be float tensors. Inputs that are not float (token ids) are passed through.
std::vector<Tensor> checkpoint(const Segment& segment, const std::vector<Tensor>& inputs,
                               Rng* rng = nullptr);

}  // namespace mg
