#pragma once
// What the modules whose 2-D weight [rows, cols] may become frozen NF4 share (Linear, and the
// Embedding's table): quantizing the float parameter, putting the NF4 copy in its place, and
// the float view of either. design.md §5: the frozen NF4 weight gets no gradient.
#include <memory>

#include "autograd/tensor.h"
#include "model/nf4.h"

namespace mg {

// NF4 quantization of a float32 2-D parameter [rows, cols]. Throws on another dtype.
std::shared_ptr<NF4Weight> quantize_parameter(const Tensor& weight);

// Makes `q` the frozen storage of `weight` [rows, cols]: checks that the shapes agree, then
// replaces the float tensor by a meta one with the same name and shape, frozen. The module's
// registry points at the member, so the parameter is still listed (reported and counted,
// never trained) while its float storage is released.
void freeze_as_nf4(Tensor& weight, const NF4Weight& q);

// The float32 values of a weight that may be NF4: `weight` itself, or when q is set its
// dequantization [rows, cols], named like `weight`.
Tensor dense_parameter(const Tensor& weight, const NF4Weight* q);

}  // namespace mg
