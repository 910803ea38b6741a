// RMSNorm (Zhang & Sennrich 2019), as in Mamba: y = x * r * w, r = 1/sqrt(mean(x^2) + eps).
//   dw_c += sum_rows dy_c x_c r
//   dx_c  = r (dy_c w_c) - x_c r^3 / C * sum_j (dy_j w_j x_j)
#include <cmath>

#include "autograd/op_util.h"
#include "autograd/ops.h"
#include "cuda/norm.h"

namespace mg::ops {

using namespace mg::detail;

// x (..., C), weight (C) -> (..., C)
Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps) {
  check_float(x, "rmsnorm");
  check_float(weight, "rmsnorm");
  check_same_dtype(x, weight, "rmsnorm");
  const int64_t C = x.dim(-1), M = x.numel() / (C ? C : 1);
  MG_CHECK(weight.numel() == C, "[rmsnorm] weight {} for input {}", weight.describe(), x.describe());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor rstd = Tensor::empty({M}, x.dtype(), x.device());  // (M): 1/sqrt(mean(x^2)+eps), saved for backward
  MG_DISPATCH_FLOAT(x.dtype(), "rmsnorm", [&] {
    if (x.is_cuda())
      return cuda::rmsnorm_forward<scalar_t>(x.dev_data<scalar_t>(), weight.dev_data<scalar_t>(),
                                             out.dev_data<scalar_t>(), rstd.dev_data<scalar_t>(), M, C, eps);
    const scalar_t* in = x.data<scalar_t>();
    const scalar_t* w = weight.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    scalar_t* r = rstd.data<scalar_t>();
    parallel_for(M, [&](int64_t i) {
      const scalar_t* row = in + i * C;
      scalar_t ss = 0;
      for (int64_t c = 0; c < C; ++c) ss += row[c] * row[c];
      scalar_t ri = scalar_t(1) / std::sqrt(ss / scalar_t(C) + scalar_t(eps));
      r[i] = ri;
      for (int64_t c = 0; c < C; ++c) o[i * C + c] = row[c] * ri * w[c];
    }, 16);
  });
  if (!any_requires_grad({&x, &weight})) return out;

  Node node{"rmsnorm", {input_slot(x), input_slot(weight)}, {make_output_slot(out)},
            {x.detach(), weight.detach(), rstd}, nullptr};
  node.backward = [=](Node& nd) {
    Tensor dO = nd.out_grad();
    MG_DISPATCH_FLOAT(dO.dtype(), "rmsnorm backward", [&] {
      if (dO.is_cuda()) {
        const scalar_t* g = dO.dev_data<scalar_t>();
        const scalar_t* in = nd.saved[0].dev_data<scalar_t>();
        const scalar_t* r = nd.saved[2].dev_data<scalar_t>();
        if (nd.needs(0))
          cuda::rmsnorm_backward_x<scalar_t>(g, in, nd.saved[1].dev_data<scalar_t>(), r,
                                             nd.in_grad(0).dev_data<scalar_t>(), M, C);
        if (nd.needs(1)) cuda::rmsnorm_backward_weight<scalar_t>(g, in, r, nd.in_grad(1).dev_data<scalar_t>(), M, C);
        return;
      }
      const scalar_t* g = dO.data<scalar_t>();
      const scalar_t* in = nd.saved[0].data<scalar_t>();
      const scalar_t* w = nd.saved[1].data<scalar_t>();
      const scalar_t* r = nd.saved[2].data<scalar_t>();
      if (nd.needs(0)) {
        scalar_t* dx = nd.in_grad(0).data<scalar_t>();
        parallel_for(M, [&](int64_t i) {
          scalar_t dot = 0;
          for (int64_t c = 0; c < C; ++c) dot += g[i * C + c] * w[c] * in[i * C + c];
          const scalar_t ri = r[i], k = ri * ri * ri * dot / scalar_t(C);
          for (int64_t c = 0; c < C; ++c) dx[i * C + c] += ri * g[i * C + c] * w[c] - in[i * C + c] * k;
        }, 16);
      }
      if (nd.needs(1)) {
        scalar_t* dw = nd.in_grad(1).data<scalar_t>();
        for (int64_t i = 0; i < M; ++i)
          for (int64_t c = 0; c < C; ++c) dw[c] += g[i * C + c] * in[i * C + c] * r[i];
      }
    });
  };
  current_tape().record(std::move(node));
  return out;
}

}  // namespace mg::ops
