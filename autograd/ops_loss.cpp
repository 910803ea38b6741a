// Cross-entropy fused with log-softmax, ignore_index = -1, mean over counted targets.
//   loss = (1/n) sum_{i counted} (lse_i - logits[i, t_i])
//   dlogits[i, j] += dloss / n * (softmax_ij - [j == t_i])   for counted rows, 0 otherwise
// Only the per-row lse (M) is saved, not the (M, V) probabilities. On the GPU the targets may
// live on either device: they are checked and counted on the host (a copy of M ids).
#include <cmath>

#include "autograd/op_util.h"
#include "autograd/ops.h"
#include "cuda/loss.h"

namespace mg::ops {

using namespace mg::detail;

// logits (M, V), targets I32 (M) -> []
Tensor cross_entropy(const Tensor& logits, const Tensor& targets) {
  check_float(logits, "cross_entropy");
  MG_CHECK(targets.dtype() == DType::I32, "[cross_entropy] targets must be i32, got {}", targets.describe());
  const int64_t V = logits.dim(-1), M = logits.numel() / (V ? V : 1);
  MG_CHECK(targets.numel() == M, "[cross_entropy] {} targets for logits {}", targets.numel(), logits.describe());
  const Tensor host_targets = targets.to(Device::CPU);  // the same handle when on the CPU
  const int32_t* t = host_targets.data<int32_t>();
  int64_t counted = 0;
  for (int64_t i = 0; i < M; ++i) {
    MG_CHECK(t[i] == -1 || (t[i] >= 0 && t[i] < V),
             "[cross_entropy] target {} at row {} is outside [0, {}) and is not ignore_index -1", t[i], i, V);
    counted += t[i] >= 0;
  }
  Tensor lse = Tensor::empty({M}, logits.dtype(), logits.device());  // (M): saved for backward
  Tensor out = Tensor::empty({}, logits.dtype(), logits.device());
  const Tensor saved_targets = logits.is_cuda() ? targets.to(Device::CUDA) : host_targets;
  MG_DISPATCH_FLOAT(logits.dtype(), "cross_entropy", [&] {
    if (logits.is_cuda())
      return cuda::cross_entropy_forward<scalar_t>(logits.dev_data<scalar_t>(), saved_targets.dev_data<int32_t>(), M,
                                                   V, counted, lse.dev_data<scalar_t>(), out.dev_data<scalar_t>());
    const scalar_t* x = logits.data<scalar_t>();
    scalar_t* l = lse.data<scalar_t>();
    std::vector<double> row_loss(static_cast<size_t>(M), 0.0);
    parallel_for(M, [&](int64_t i) {
      const scalar_t* r = x + i * V;
      scalar_t mx = r[0];
      for (int64_t j = 1; j < V; ++j) mx = std::max(mx, r[j]);
      scalar_t s = 0;
      for (int64_t j = 0; j < V; ++j) s += std::exp(r[j] - mx);
      l[i] = mx + std::log(s);
      if (t[i] >= 0) row_loss[i] = static_cast<double>(l[i] - r[t[i]]);
    }, 4);
    double total = 0;  // summed in row order: the same bits for any thread count
    for (double v : row_loss) total += v;
    out.data<scalar_t>()[0] = static_cast<scalar_t>(counted ? total / static_cast<double>(counted) : 0.0);
  });

  if (any_requires_grad({&logits})) {
    Node node{"cross_entropy", {input_slot(logits), nullptr}, {make_output_slot(out)},
              {logits.detach(), saved_targets, lse}, nullptr};
    node.backward = [=](Node& nd) {
      if (counted == 0) return;
      Tensor dO = nd.out_grad();
      if (dO.is_cuda()) {
        MG_DISPATCH_FLOAT(dO.dtype(), "cross_entropy backward", [&] {
          cuda::cross_entropy_backward<scalar_t>(nd.saved[0].dev_data<scalar_t>(), nd.saved[1].dev_data<int32_t>(),
                                                 nd.saved[2].dev_data<scalar_t>(), dO.dev_data<scalar_t>(), counted,
                                                 nd.in_grad(0).dev_data<scalar_t>(), M, V);
        });
        return;
      }
      const int32_t* tg = nd.saved[1].data<int32_t>();
      MG_DISPATCH_FLOAT(dO.dtype(), "cross_entropy backward", [&] {
        const scalar_t g = dO.data<scalar_t>()[0] / static_cast<scalar_t>(counted);
        const scalar_t* x = nd.saved[0].data<scalar_t>();
        const scalar_t* l = nd.saved[2].data<scalar_t>();
        scalar_t* dx = nd.in_grad(0).data<scalar_t>();
        parallel_for(M, [&](int64_t i) {
          if (tg[i] < 0) return;
          for (int64_t j = 0; j < V; ++j) dx[i * V + j] += g * std::exp(x[i * V + j] - l[i]);
          dx[i * V + tg[i]] -= g;
        }, 4);
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}

}  // namespace mg::ops
