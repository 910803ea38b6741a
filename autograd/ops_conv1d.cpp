// Causal depthwise conv1d over time, as Mamba's conv1d (groups = channels, padding K-1,
// output truncated to the first T steps):
//   y[b,t,d] = bias[d] + sum_{j<K} w[d,j] x[b, t-(K-1)+j, d]         (x at t < 0 is 0)
//   dx[b,s,d] += sum_j w[d,j] dy[b, s+(K-1)-j, d]
//   dw[d,j]   += sum_{b,t} dy[b,t,d] x[b, t-(K-1)+j, d]
//   dbias[d]  += sum_{b,t} dy[b,t,d]
// Parallel over channel blocks, so the reductions over (b, t) for dw and dbias are race-free
// and deterministic; the inner loop over d is contiguous. The GPU path (cuda/conv1d.h) runs a
// thread per (b, t, d) and reduces dw and dbias over (b, t) in a fixed order.
#include "autograd/op_util.h"
#include "autograd/ops.h"
#include "cuda/conv1d.h"

namespace mg::ops {

using namespace mg::detail;

namespace {
constexpr int64_t kChannelBlock = 64;
}

// x (B, T, D), weight [D, 1, K], bias [D] -> (B, T, D)
Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_float(x, "causal_conv1d");
  check_float(weight, "causal_conv1d");
  check_same_dtype(x, weight, "causal_conv1d");
  MG_CHECK(x.ndim() == 3, "[causal_conv1d] x must be (B, T, D), got {}", x.describe());
  const int64_t B = x.dim(0), T = x.dim(1), D = x.dim(2);
  MG_CHECK(weight.ndim() == 3 && weight.dim(0) == D && weight.dim(1) == 1,
           "[causal_conv1d] weight must be [D, 1, K] with D = {}, got {}", D, weight.describe());
  const int64_t K = weight.dim(2);
  MG_CHECK(bias.defined() && bias.numel() == D && bias.dtype() == x.dtype(),
           "[causal_conv1d] bias must be [{}], got {}", D, bias.describe());
  check_same_device(x, bias, "causal_conv1d");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t nblocks = (D + kChannelBlock - 1) / kChannelBlock;

  MG_DISPATCH_FLOAT(x.dtype(), "causal_conv1d", [&] {
    if (x.is_cuda())
      return cuda::causal_conv1d_forward<scalar_t>(x.dev_data<scalar_t>(), weight.dev_data<scalar_t>(),
                                                   bias.dev_data<scalar_t>(), out.dev_data<scalar_t>(), B, T, D, K);
    const scalar_t* in = x.data<scalar_t>();
    const scalar_t* w = weight.data<scalar_t>();
    const scalar_t* bs = bias.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
_Pragma("omp parallel for collapse(2) schedule(static) if (B * T * D > kParallelGrain)")  // (_Pragma: inside a dispatch macro)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t blk = 0; blk < nblocks; ++blk) {
        const int64_t d0 = blk * kChannelBlock, d1 = std::min(D, d0 + kChannelBlock);
        for (int64_t t = 0; t < T; ++t) {
          scalar_t* yo = o + (b * T + t) * D;
          for (int64_t d = d0; d < d1; ++d) yo[d] = bs[d];
          for (int64_t j = 0; j < K; ++j) {
            const int64_t s = t - (K - 1) + j;
            if (s < 0) continue;
            const scalar_t* xs = in + (b * T + s) * D;
            for (int64_t d = d0; d < d1; ++d) yo[d] += w[d * K + j] * xs[d];
          }
        }
      }
  });
  if (!any_requires_grad({&x, &weight, &bias})) return out;

  Node node{"causal_conv1d", {input_slot(x), input_slot(weight), input_slot(bias)},
            {make_output_slot(out)}, {x.detach(), weight.detach()}, nullptr};
  node.backward = [=](Node& nd) {
    Tensor dO = nd.out_grad();
    MG_DISPATCH_FLOAT(dO.dtype(), "causal_conv1d backward", [&] {
      if (dO.is_cuda())
        return cuda::causal_conv1d_backward<scalar_t>(
            dO.dev_data<scalar_t>(), nd.saved[0].dev_data<scalar_t>(), nd.saved[1].dev_data<scalar_t>(),
            nd.needs(0) ? nd.in_grad(0).dev_data<scalar_t>() : nullptr,
            nd.needs(1) ? nd.in_grad(1).dev_data<scalar_t>() : nullptr,
            nd.needs(2) ? nd.in_grad(2).dev_data<scalar_t>() : nullptr, B, T, D, K);
      const scalar_t* g = dO.data<scalar_t>();
      const scalar_t* in = nd.saved[0].data<scalar_t>();
      const scalar_t* w = nd.saved[1].data<scalar_t>();
      scalar_t* dx = nd.needs(0) ? nd.in_grad(0).data<scalar_t>() : nullptr;
      scalar_t* dw = nd.needs(1) ? nd.in_grad(1).data<scalar_t>() : nullptr;
      scalar_t* db = nd.needs(2) ? nd.in_grad(2).data<scalar_t>() : nullptr;
_Pragma("omp parallel for schedule(static) if (B * T * D > kParallelGrain)")  // (_Pragma: inside a dispatch macro)
      for (int64_t blk = 0; blk < nblocks; ++blk) {
        const int64_t d0 = blk * kChannelBlock, d1 = std::min(D, d0 + kChannelBlock);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t t = 0; t < T; ++t) {
            const scalar_t* gy = g + (b * T + t) * D;
            if (db)
              for (int64_t d = d0; d < d1; ++d) db[d] += gy[d];
            for (int64_t j = 0; j < K; ++j) {
              const int64_t s = t - (K - 1) + j;
              if (s < 0) continue;
              if (dx) {
                scalar_t* dxs = dx + (b * T + s) * D;
                for (int64_t d = d0; d < d1; ++d) dxs[d] += w[d * K + j] * gy[d];
              }
              if (dw) {
                const scalar_t* xs = in + (b * T + s) * D;
                for (int64_t d = d0; d < d1; ++d) dw[d * K + j] += gy[d] * xs[d];
              }
            }
          }
      }
    });
  };
  current_tape().record(std::move(node));
  return out;
}

}  // namespace mg::ops
