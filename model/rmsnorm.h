#pragma once
// RMSNorm module: one parameter "weight" [C], initialized to ones (design.md §3).
#include "autograd/module.h"
#include "autograd/ops.h"

namespace mg {

class RMSNorm : public Module {
 public:
  RMSNorm(int64_t C, double eps, DType dtype, bool meta = false) : eps_(eps) {
    weight = meta ? Tensor::meta({C}, dtype) : Tensor::full({C}, 1.0, dtype);
    register_parameter("weight", weight);
  }
  Tensor forward(const Tensor& x) const { return ops::rmsnorm(x, weight, eps_); }  // (..., C)
  Tensor weight;  // [C]

 private:
  double eps_;
};

// Mamba's depthwise conv1d parameters: "weight" [D, 1, K], "bias" [D].
class DepthwiseConv1d : public Module {
 public:
  DepthwiseConv1d(int64_t D, int64_t K, DType dtype, bool meta = false) {
    weight = meta ? Tensor::meta({D, 1, K}, dtype) : Tensor::zeros({D, 1, K}, dtype);
    bias = meta ? Tensor::meta({D}, dtype) : Tensor::zeros({D}, dtype);
    register_parameter("weight", weight);
    register_parameter("bias", bias);
  }
  Tensor forward(const Tensor& x) const { return ops::causal_conv1d(x, weight, bias); }  // (B,T,D)
  Tensor weight, bias;
};

}  // namespace mg
