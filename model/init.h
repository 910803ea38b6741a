#pragma once
// Parameter initialization helpers (design.md §3 "Init"). All draws come from one Rng in a
// fixed order, so a seed fully determines a model.
#include "autograd/rng.h"
#include "autograd/tensor.h"

namespace mg {

void fill_uniform(Tensor& t, Rng& rng, double lo, double hi);
void fill_normal(Tensor& t, Rng& rng, double mean, double std);
// kaiming_uniform_(a = sqrt(5)) as PyTorch's nn.Linear uses: bound = 1/sqrt(fan_in).
void fill_kaiming_uniform_a_sqrt5(Tensor& t, Rng& rng, int64_t fan_in);

}  // namespace mg
