// Inverted dropout: y = x * mask, mask = 0 with probability p, else 1/(1-p). The mask is drawn
// serially from the caller's Rng, so a run is reproducible (and resumable) from its RNG state.
// On the GPU one draw of the Rng seeds a counter-based hash of the element index
// (cuda/dropout.h): the Rng advances by exactly one step per call and the mask is reproducible,
// but it differs from the CPU's for the same Rng state. The GPU saves the mask as U8.
#include "autograd/op_util.h"
#include "autograd/ops.h"
#include "cuda/dropout.h"

namespace mg::ops {

using namespace mg::detail;

namespace {
Tensor dropout_gpu(const Tensor& x, double p, uint64_t seed) {
  const int64_t n = x.numel();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mask = Tensor::empty(x.shape(), DType::U8, x.device());
  MG_DISPATCH_FLOAT(x.dtype(), "dropout", [&] {
    cuda::dropout_forward<scalar_t>(x.dev_data<scalar_t>(), out.dev_data<scalar_t>(), mask.dev_data<uint8_t>(), n, p,
                                    seed);
  });
  if (any_requires_grad({&x})) {
    Node node{"dropout", {input_slot(x)}, {make_output_slot(out)}, {mask}, nullptr};
    node.backward = [=](Node& nd) {
      Tensor dO = nd.out_grad();
      MG_DISPATCH_FLOAT(dO.dtype(), "dropout backward", [&] {
        cuda::dropout_backward<scalar_t>(dO.dev_data<scalar_t>(), nd.saved[0].dev_data<uint8_t>(),
                                         nd.in_grad(0).dev_data<scalar_t>(), n, p);
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}
}  // namespace

Tensor dropout(const Tensor& x, double p, Rng& rng, bool training) {
  check_float(x, "dropout");
  MG_CHECK(p >= 0.0 && p < 1.0, "[dropout] p must be in [0, 1), got {}", p);
  if (!training || p == 0.0) return x;
  if (x.is_cuda()) return dropout_gpu(x, p, rng.next_u64());
  Tensor mask = Tensor::empty(x.shape(), x.dtype());
  const int64_t n = x.numel();
  MG_DISPATCH_FLOAT(x.dtype(), "dropout", [&] {
    scalar_t* m = mask.data<scalar_t>();
    const scalar_t keep = static_cast<scalar_t>(1.0 / (1.0 - p));
    for (int64_t i = 0; i < n; ++i) m[i] = rng.uniform() < p ? scalar_t(0) : keep;
  });
  return mul(x, mask);  // mul's backward is dropout's: dx = dy * mask
}

}  // namespace mg::ops
