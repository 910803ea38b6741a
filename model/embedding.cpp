#include "model/embedding.h"

#include "autograd/ops.h"
#include "model/nf4_embedding_op.h"
#include "model/nf4_linear_op.h"
#include "model/nf4_param.h"

namespace mg {

Embedding::Embedding(int64_t V, int64_t C, DType dtype, bool meta) : num_embeddings(V), embedding_dim(C) {
  weight = meta ? Tensor::meta({V, C}, dtype) : Tensor::zeros({V, C}, dtype);
  register_parameter("weight", weight);
}

Tensor Embedding::forward(const Tensor& ids) const {
  return quantized_ ? ops::nf4_embedding(ids, *quantized_, absmax_.data()) : ops::embedding(ids, weight);
}

Tensor Embedding::attend(const Tensor& h) const {
  return quantized_ ? ops::nf4_linear(h, quantized_) : ops::linear(h, weight);
}

void Embedding::quantize() {
  if (!quantized_) set_quantized(quantize_parameter(weight));
}

void Embedding::set_quantized(std::shared_ptr<NF4Weight> q) {
  MG_CHECK(q, "[qlora] no NF4 table given for {}", weight.name());
  freeze_as_nf4(weight, *q);  // frozen 4-bit storage only; `weight` keeps its name and shape
  absmax_ = nf4_absmax(*q);
  quantized_ = std::move(q);
}

void Embedding::dequantize() {
  if (!quantized_) return;
  Tensor table = dense_weight();  // named like weight; frozen, as the NF4 table was
  quantized_.reset();
  absmax_ = {};
  weight = table;  // the registry points at this member
  set_trainable(weight, false);
}

Tensor Embedding::dense_weight() const { return dense_parameter(weight, quantized_.get()); }

int64_t Embedding::nf4_resident_bytes(int64_t V, int64_t C) {
  NF4Weight shape_only;
  shape_only.rows = V;
  shape_only.cols = C;
  return nf4_bytes(V, C) + static_cast<int64_t>(sizeof(float)) * shape_only.n_blocks();
}

}  // namespace mg
