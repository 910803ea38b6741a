#include "model/selective_scan_op.h"

#include "autograd/op_util.h"
#include "cuda/selective_scan.h"
#include "cuda/tensor_kernels.h"
#include "model/selective_scan.h"

namespace mg::ops {

using namespace mg::detail;

Tensor selective_scan(const Tensor& u, const Tensor& dt, const Tensor& dt_bias, const Tensor& A_log,
                      const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip, const Tensor& z,
                      int64_t chunk) {
  for (const Tensor* t : {&u, &dt, &dt_bias, &A_log, &Bm, &Cm, &Dskip}) {
    check_float(*t, "selective_scan");
    check_same_dtype(*t, u, "selective_scan");
  }
  MG_CHECK(u.ndim() == 3, "[selective_scan] u must be (B,T,D), got {}", u.describe());
  const int64_t B = u.dim(0), T = u.dim(1), D = u.dim(2), N = A_log.dim(-1);
  MG_CHECK(dt.shape() == u.shape(), "[selective_scan] dt {} vs u {}", dt.describe(), u.describe());
  MG_CHECK(A_log.numel() == D * N && dt_bias.numel() == D && Dskip.numel() == D,
           "[selective_scan] parameter shapes A_log {}, dt_bias {}, D {} for D={}", A_log.describe(),
           dt_bias.describe(), Dskip.describe(), D);
  MG_CHECK(Bm.numel() == B * T * N && Cm.numel() == B * T * N,
           "[selective_scan] B {} and C {} must be ({}, {}, {})", Bm.describe(), Cm.describe(), B, T, N);
  if (z.defined()) {
    check_same_dtype(z, u, "selective_scan");
    MG_CHECK(z.shape() == u.shape(), "[selective_scan] z {} vs u {}", z.describe(), u.describe());
  }

  const ScanShape shape{B, T, D, N, chunk};
  const bool record = any_requires_grad({&u, &dt, &dt_bias, &A_log, &Bm, &Cm, &Dskip, &z});
  const Device dev = u.device();
  Tensor out = Tensor::empty(u.shape(), u.dtype(), dev);
  Tensor states = record ? Tensor::empty({scan_saved_state_elems(shape)}, u.dtype(), dev) : Tensor();
  MG_DISPATCH_FLOAT(u.dtype(), "selective_scan", [&] {
    // The same kernel contract on either device (cuda/selective_scan.h: one fused kernel).
    auto forward = dev == Device::CUDA ? cuda::selective_scan_forward<scalar_t> : selective_scan_forward<scalar_t>;
    forward(shape, u.dev_data<scalar_t>(), dt.dev_data<scalar_t>(), dt_bias.dev_data<scalar_t>(),
            A_log.dev_data<scalar_t>(), Bm.dev_data<scalar_t>(), Cm.dev_data<scalar_t>(), Dskip.dev_data<scalar_t>(),
            z.defined() ? z.dev_data<scalar_t>() : nullptr, out.dev_data<scalar_t>(),
            record ? states.dev_data<scalar_t>() : nullptr, nullptr);
  });
  if (!record) return out;

  Node node{"selective_scan",
            {input_slot(u), input_slot(dt), input_slot(dt_bias), input_slot(A_log), input_slot(Bm),
             input_slot(Cm), input_slot(Dskip), input_slot(z)},
            {make_output_slot(out)},
            {u.detach(), dt.detach(), dt_bias.detach(), A_log.detach(), Bm.detach(), Cm.detach(),
             Dskip.detach(), z.defined() ? z.detach() : Tensor(), states},
            nullptr};
  node.backward = [shape](Node& nd) {
    Tensor dO = nd.out_grad();
    auto& s = nd.saved;
    const bool has_z = s[7].defined();
    const Device dev = dO.device();
    // The kernel writes activation grads; stage them and accumulate into the slots.
    std::vector<Tensor> act(8);
    for (int i : {0, 1, 4, 5, 7})
      if (i != 7 || has_z) act[i] = Tensor::empty(s[i].shape(), s[0].dtype(), dev);
    // Parameter grads are accumulated by the kernel: hand it the slot buffers directly (or a
    // scratch buffer when that parameter needs no grad).
    auto param_grad = [&](int i) {
      return nd.needs(i) ? nd.in_grad(i) : Tensor::zeros(s[i].shape(), s[0].dtype(), dev);
    };
    Tensor d_dt_bias = param_grad(2), d_A_log = param_grad(3), d_D = param_grad(6);
    MG_DISPATCH_FLOAT(dO.dtype(), "selective_scan backward", [&] {
      auto p = [&](int i) { return s[i].defined() ? s[i].dev_data<scalar_t>() : nullptr; };
      auto backward = dev == Device::CUDA ? cuda::selective_scan_backward<scalar_t> : selective_scan_backward<scalar_t>;
      backward(shape, p(0), p(1), p(2), p(3), p(4), p(5), p(6), p(7), s[8].dev_data<scalar_t>(), dO.dev_data<scalar_t>(),
               act[0].dev_data<scalar_t>(), act[1].dev_data<scalar_t>(), d_dt_bias.dev_data<scalar_t>(),
               d_A_log.dev_data<scalar_t>(), act[4].dev_data<scalar_t>(), act[5].dev_data<scalar_t>(),
               d_D.dev_data<scalar_t>(), has_z ? act[7].dev_data<scalar_t>() : nullptr);
      for (int i : {0, 1, 4, 5, 7}) {
        if (!nd.needs(i) || !act[i].defined()) continue;
        Tensor g = nd.in_grad(i);
        const int64_t n = act[i].numel();
        if (dev == Device::CUDA) {
          cuda::accumulate<scalar_t>(g.dev_data<scalar_t>(), act[i].dev_data<scalar_t>(), static_cast<size_t>(n));
          continue;
        }
        scalar_t* gp = g.data<scalar_t>();
        const scalar_t* a = act[i].data<scalar_t>();
        parallel_for(n, [&](int64_t j) { gp[j] += a[j]; });
      }
    });
  };
  current_tape().record(std::move(node));
  return out;
}

}  // namespace mg::ops
