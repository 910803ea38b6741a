#pragma once
// y = x W^T with W frozen in NF4 (model/nf4.h), as an autograd op: the input gets a gradient
// (dx = dy W, through the fused dequant-matmul), the weight never does: it is not a tensor
// and cannot be made trainable (train a LoRA adapter on it instead).
#include <memory>

#include "autograd/tensor.h"
#include "model/nf4.h"

namespace mg::ops {

// x (..., in) f32, W NF4 [out, in] -> (..., out)
Tensor nf4_linear(const Tensor& x, const std::shared_ptr<const NF4Weight>& W);

}  // namespace mg::ops
