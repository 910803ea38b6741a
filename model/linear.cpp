#include "model/linear.h"

#include <cmath>

#include "autograd/blas.h"
#include "autograd/ops.h"
#include "model/init.h"
#include "model/nf4_linear_op.h"
#include "model/nf4_param.h"

namespace mg {

double LoraSettings::scale() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / r;
}

Linear::Linear(int64_t in, int64_t out, bool with_bias, DType dtype, bool meta)
    : in_features(in), out_features(out) {
  weight = meta ? Tensor::meta({out, in}, dtype) : Tensor::zeros({out, in}, dtype);
  register_parameter("weight", weight);
  if (with_bias) {
    bias = meta ? Tensor::meta({out}, dtype) : Tensor::zeros({out}, dtype);
    register_parameter("bias", bias);
  }
}

void init_linear_default(Linear& l, Rng& rng) {
  fill_kaiming_uniform_a_sqrt5(l.weight, rng, l.in_features);
  if (l.bias.defined()) fill_kaiming_uniform_a_sqrt5(l.bias, rng, l.in_features);
}

Tensor Linear::adapter_delta(const Tensor& x, Rng* rng, bool training) const {
  Tensor xin = x;
  if (training && lora_.dropout > 0) {
    MG_CHECK(rng, "[lora] dropout needs an Rng");
    xin = ops::dropout(x, lora_.dropout, *rng, true);
  }
  // (..., in) -> (..., r) -> (..., out), scaled
  return ops::scale(ops::linear(ops::linear(xin, lora_A), lora_B), lora_.scale());
}

Tensor Linear::forward_no_bias(const Tensor& x, Rng* rng, bool training) const {
  MG_CHECK(!released_, "[model] {} has released its weights (they are streamed): it cannot run", weight.name());
  Tensor y = quantized_ ? ops::nf4_linear(x, quantized_) : ops::linear(x, weight);
  if (has_lora() && !merged_) y = ops::add(y, adapter_delta(x, rng, training));
  return y;
}

Tensor Linear::forward(const Tensor& x, Rng* rng, bool training) const {
  Tensor y = forward_no_bias(x, rng, training);
  return bias.defined() ? ops::add(y, bias) : y;
}

void Linear::quantize_base() {
  if (quantized_ || released_) return;
  MG_CHECK(!merged_, "[qlora] unmerge the LoRA adapter of {} before quantizing", weight.name());
  set_quantized(quantize_parameter(weight));
}

void Linear::set_quantized(std::shared_ptr<NF4Weight> q) {
  MG_CHECK(!merged_, "[qlora] {} holds a merged LoRA adapter: unmerge (or drop) it before replacing the "
           "base weight by an NF4 one", weight.name());
  MG_CHECK(q, "[qlora] no NF4 weight given for {}", weight.name());
  freeze_as_nf4(weight, *q);  // frozen 4-bit storage only; `weight` keeps its name and shape
  quantized_ = std::move(q);
}

void Linear::dequantize_base() {
  if (!quantized_) return;
  Tensor w = dense_weight();
  w.set_name(weight.name());
  const bool trainable = weight.requires_grad();
  quantized_.reset();
  weight = w;  // the registry points at this member
  set_trainable(weight, trainable);
}

Tensor Linear::dense_weight() const { return dense_parameter(weight, quantized_.get()); }

void Linear::release_weights() {
  MG_CHECK(!has_lora(), "[moe] {} carries a LoRA adapter: merge it (magellan merge-lora) before streaming its "
           "weights from an expert store", weight.name());
  quantized_.reset();
  weight = Tensor::meta({out_features, in_features}, DType::F32, weight.name());
  if (bias.defined()) bias = Tensor::meta({out_features}, DType::F32, bias.name());
  released_ = true;
}

void Linear::add_lora(const LoraSettings& s, Rng& rng) {
  MG_CHECK(s.r > 0, "[lora] rank must be positive, got {}", s.r);
  MG_CHECK(!has_lora(), "[lora] {} already has an adapter", weight.name());
  MG_CHECK(!released_, "[lora] {} is streamed from an expert store and cannot take an adapter: merge the "
           "adapter into the checkpoint (magellan merge-lora) and export the experts from that", weight.name());
  lora_ = s;
  const DType dt = quantized_ ? DType::F32 : weight.dtype();
  lora_A = Tensor::zeros({s.r, in_features}, dt);
  lora_B = Tensor::zeros({out_features, s.r}, dt);  // B = 0: the adapted layer starts equal to the base
  fill_kaiming_uniform_a_sqrt5(lora_A, rng, in_features);
  if (!lora_registered_) {
    register_parameter("lora_A", lora_A);
    register_parameter("lora_B", lora_B);
    lora_registered_ = true;
  } else {
    // A new adapter after drop_lora: the registry already points at these members (a second
    // register_parameter would throw "registered twice"); name them and make them trainable.
    lora_A.set_name("lora_A");
    lora_B.set_name("lora_B");
    set_trainable(lora_A, true);
    set_trainable(lora_B, true);
  }
}

void Linear::merge_lora() {
  MG_CHECK(has_lora() && !merged_, "[lora] {} has no unmerged adapter to merge", weight.name());
  Tensor w = dense_weight().clone();
  const bool was_trainable = weight.requires_grad();
  // W [out,in] += scale * B [out,r] A [r,in]
  MG_DISPATCH_FLOAT(w.dtype(), "merge_lora", [&] {
    gemm<scalar_t>(false, false, out_features, in_features, lora_.r, static_cast<scalar_t>(lora_.scale()),
                   lora_B.data<scalar_t>(), lora_A.data<scalar_t>(), 1, w.data<scalar_t>());
  });
  quantized_.reset();
  w.set_name(weight.name());
  weight = w;  // the registry points at this member, so it now sees the merged float weight
  set_trainable(weight, was_trainable);
  merged_ = true;
}

void Linear::drop_lora() {
  MG_CHECK(merged_, "[lora] drop_lora on {}: merge the adapter first, or its update is lost", weight.name());
  lora_A = Tensor();  // the registry skips undefined parameters
  lora_B = Tensor();
  merged_ = false;
}

void Linear::unmerge_lora() {
  MG_CHECK(has_lora() && merged_, "[lora] {} has no merged adapter", weight.name());
  MG_DISPATCH_FLOAT(weight.dtype(), "unmerge_lora", [&] {
    gemm<scalar_t>(false, false, out_features, in_features, lora_.r, static_cast<scalar_t>(-lora_.scale()),
                   lora_B.data<scalar_t>(), lora_A.data<scalar_t>(), 1, weight.data<scalar_t>());
  });
  merged_ = false;
}

}  // namespace mg
