#include "model/nf4_linear_op.h"

#include "autograd/op_util.h"

namespace mg::ops {

Tensor nf4_linear(const Tensor& x, const std::shared_ptr<const NF4Weight>& W) {
  MG_CHECK(W, "[nf4_linear] no quantized weight");
  MG_CHECK(x.dtype() == DType::F32,
           "[nf4_linear] NF4 layers run in float32; got {} (gradient checks of a QLoRA model "
           "use a dequantized float64 copy instead)", x.describe());
  MG_CHECK(x.dim(-1) == W->cols, "[nf4_linear] input {} does not match NF4 weight [{}, {}]",
           x.describe(), W->rows, W->cols);
  const int64_t M = x.numel() / W->cols;
  Shape shape = x.shape();
  shape.back() = W->rows;
  Tensor out = Tensor::empty(shape, DType::F32);
  nf4_matmul(x.data<float>(), *W, out.data<float>(), M);
  if (any_requires_grad({&x})) {
    // Saves nothing but the (shared, frozen) weight: dx needs only dy and W.
    Node node{"nf4_linear", {input_slot(x)}, {make_output_slot(out)}, {}, nullptr};
    node.backward = [W, M](Node& nd) {
      nf4_matmul_input_grad(nd.out_grad().data<float>(), *W, nd.in_grad(0).data<float>(), M,
                            /*accumulate=*/true);
    };
    current_tape().record(std::move(node));
  }
  return out;
}

}  // namespace mg::ops
