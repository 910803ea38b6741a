// Inverted dropout: y = x * mask, mask = 0 with probability p, else 1/(1-p). The mask is drawn
// serially from the caller's Rng, so a run is reproducible (and resumable) from its RNG state.
#include "autograd/op_util.h"
#include "autograd/ops.h"

namespace mg::ops {

using namespace mg::detail;

Tensor dropout(const Tensor& x, double p, Rng& rng, bool training) {
  check_float(x, "dropout");
  MG_CHECK(p >= 0.0 && p < 1.0, "[dropout] p must be in [0, 1), got {}", p);
  if (!training || p == 0.0) return x;
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
