#include "model/nf4_param.h"

namespace mg {

std::shared_ptr<NF4Weight> quantize_parameter(const Tensor& weight) {
  MG_CHECK(weight.dtype() == DType::F32 && weight.ndim() == 2 && !weight.is_meta(),
           "[qlora] only float32 matrices can be quantized to NF4, got {}", weight.describe());
  return std::make_shared<NF4Weight>(nf4_quantize(weight.data<float>(), weight.dim(0), weight.dim(1)));
}

void freeze_as_nf4(Tensor& weight, const NF4Weight& q) {
  const int64_t rows = weight.dim(0), cols = weight.dim(1);
  MG_CHECK(q.rows == rows && q.cols == cols, "[qlora] NF4 weight [{}, {}] does not fit {} [{}, {}]", q.rows, q.cols,
           weight.name(), rows, cols);
  const std::string name = weight.name();
  weight.set_requires_grad(false);
  weight = Tensor::meta({rows, cols}, DType::F32, name);
}

Tensor dense_parameter(const Tensor& weight, const NF4Weight* q) {
  if (!q) return weight;
  Tensor w = Tensor::empty({q->rows, q->cols}, DType::F32, weight.name());
  nf4_dequantize(*q, w.data<float>());
  return w;
}

}  // namespace mg
