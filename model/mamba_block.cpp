#include "model/mamba_block.h"

#include <cmath>
#include <cstring>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "model/init.h"
#include "model/selective_scan.h"
#include "model/selective_scan_op.h"

namespace mg {

MambaMixer::MambaMixer(const ModelConfig& cfg, DType dtype, bool meta)
    : C(cfg.d_model),
      D(cfg.d_inner()),
      N(cfg.d_state),
      R(cfg.resolved_dt_rank()),
      K(cfg.d_conv),
      in_proj(C, 2 * D, false, dtype, meta),
      x_proj(D, R + 2 * N, false, dtype, meta),
      dt_proj(R, D, true, dtype, meta),
      out_proj(D, C, false, dtype, meta),
      conv1d(D, K, dtype, meta) {
  A_log = meta ? Tensor::meta({D, N}, dtype) : Tensor::zeros({D, N}, dtype);
  Dskip = meta ? Tensor::meta({D}, dtype) : Tensor::zeros({D}, dtype);
  // Registration order = the order of state-spaces/mamba's module (and of checkpoints).
  register_parameter("A_log", A_log);
  register_parameter("D", Dskip);
  register_module("in_proj", in_proj);
  register_module("conv1d", conv1d);
  register_module("x_proj", x_proj);
  register_module("dt_proj", dt_proj);
  register_module("out_proj", out_proj);
}

void MambaMixer::init(const ModelConfig& cfg, Rng& rng) {
  init_linear_default(in_proj, rng);
  // nn.Conv1d default: kaiming_uniform(a=sqrt 5) with fan_in = (in_channels/groups) * K = K.
  fill_kaiming_uniform_a_sqrt5(conv1d.weight, rng, K);
  fill_kaiming_uniform_a_sqrt5(conv1d.bias, rng, K);
  init_linear_default(x_proj, rng);
  // dt_proj.weight ~ U(-R^-0.5, R^-0.5) (dt_init="random", dt_scale=1).
  const double std = 1.0 / std::sqrt(static_cast<double>(R));
  fill_uniform(dt_proj.weight, rng, -std, std);
  // dt_proj.bias = softplus^-1(dt), dt ~ logUniform(dt_min, dt_max) floored at dt_init_floor.
  if (!dt_proj.bias.is_meta()) {
    MG_DISPATCH_FLOAT(dt_proj.bias.dtype(), "mamba init", [&] {
      scalar_t* b = dt_proj.bias.data<scalar_t>();
      for (int64_t d = 0; d < D; ++d) {
        double dt = std::exp(rng.uniform() * (std::log(cfg.dt_max) - std::log(cfg.dt_min)) + std::log(cfg.dt_min));
        dt = std::max(dt, cfg.dt_init_floor);
        b[d] = static_cast<scalar_t>(dt + std::log(-std::expm1(-dt)));  // inverse softplus
      }
    });
    // A_log = log(1..N) per channel (S4D-Real), D = 1.
    MG_DISPATCH_FLOAT(A_log.dtype(), "mamba init", [&] {
      scalar_t* a = A_log.data<scalar_t>();
      for (int64_t d = 0; d < D; ++d)
        for (int64_t n = 0; n < N; ++n) a[d * N + n] = static_cast<scalar_t>(std::log(static_cast<double>(n + 1)));
    });
    Dskip.fill(1.0);
  }
  init_linear_default(out_proj, rng);
  // out_proj rescaled by 1/sqrt(n_layers) (GPT-2 style prenorm residual rescaling).
  if (!out_proj.weight.is_meta()) {
    const double s = 1.0 / std::sqrt(static_cast<double>(cfg.n_layers()));
    MG_DISPATCH_FLOAT(out_proj.weight.dtype(), "mamba init", [&] {
      scalar_t* w = out_proj.weight.data<scalar_t>();
      for (int64_t i = 0; i < out_proj.weight.numel(); ++i) w[i] = static_cast<scalar_t>(w[i] * s);
    });
  }
}

Tensor MambaMixer::forward(const Tensor& h, Rng* rng, bool training) const {
  Tensor xz = in_proj.forward(h, rng, training);            // (B,T,2D)
  Tensor x = ops::slice_last(xz, 0, D);                       // (B,T,D)
  Tensor z = ops::slice_last(xz, D, D);                       // (B,T,D)
  x = ops::silu(conv1d.forward(x));                           // (B,T,D)
  Tensor x_dbl = x_proj.forward(x, rng, training);            // (B,T,R+2N)
  Tensor dt = ops::slice_last(x_dbl, 0, R);                   // (B,T,R)
  Tensor Bm = ops::slice_last(x_dbl, R, N);                   // (B,T,N)
  Tensor Cm = ops::slice_last(x_dbl, R + N, N);               // (B,T,N)
  dt = dt_proj.forward_no_bias(dt, rng, training);            // (B,T,D); bias fused in the scan
  Tensor y = ops::selective_scan(x, dt, dt_proj.bias, A_log, Bm, Cm, Dskip, z, scan_chunk);  // (B,T,D)
  return out_proj.forward(y, rng, training);                  // (B,T,C)
}

Tensor MambaMixer::prefill(const Tensor& h, MambaState& state) const {
  NoGradGuard no_grad;
  MG_CHECK(h.ndim() == 3, "[mamba prefill] expects (B,T,C), got {}", h.describe());
  MG_CHECK(!state.ssm.defined(), "[mamba prefill] the state must be fresh: a prefill starts a sequence");
  const int64_t B = h.dim(0), T = h.dim(1);
  const DType dt_type = h.dtype();
  const size_t es = dtype_size(dt_type);
  Tensor xz = in_proj.forward(h);                             // (B,T,2D)
  Tensor x = ops::slice_last(xz, 0, D);                       // (B,T,D)
  Tensor z = ops::slice_last(xz, D, D);                       // (B,T,D)
  // The conv state: the last K-1 inputs, zeros where the sequence is shorter (its left padding).
  state.conv = Tensor::zeros({B, K - 1, D}, dt_type);         // (B,K-1,D)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < K - 1; ++j) {
      const int64_t t = T - (K - 1) + j;
      if (t >= 0)
        std::memcpy(static_cast<char*>(state.conv.raw()) + (b * (K - 1) + j) * D * es,
                    static_cast<const char*>(x.raw()) + (b * T + t) * D * es, D * es);
    }
  Tensor xc = ops::silu(conv1d.forward(x));                   // (B,T,D)
  Tensor x_dbl = x_proj.forward(xc);                          // (B,T,R+2N)
  Tensor dt = dt_proj.forward_no_bias(ops::slice_last(x_dbl, 0, R));  // (B,T,D)
  Tensor Bm = ops::slice_last(x_dbl, R, N);                   // (B,T,N)
  Tensor Cm = ops::slice_last(x_dbl, R + N, N);               // (B,T,N)
  state.ssm = Tensor::zeros({B, D, N}, dt_type);              // (B,D,N): the state after step T-1
  Tensor y = Tensor::empty({B, T, D}, dt_type);               // (B,T,D)
  MG_DISPATCH_FLOAT(dt_type, "mamba prefill", [&] {
    selective_scan_forward<scalar_t>(ScanShape{B, T, D, N, scan_chunk}, xc.data<scalar_t>(), dt.data<scalar_t>(),
                                     dt_proj.bias.data<scalar_t>(), A_log.data<scalar_t>(), Bm.data<scalar_t>(),
                                     Cm.data<scalar_t>(), Dskip.data<scalar_t>(), z.data<scalar_t>(),
                                     y.data<scalar_t>(), /*chunk_states=*/nullptr, state.ssm.data<scalar_t>());
  });
  return out_proj.forward(y);                                 // (B,T,C)
}

Tensor MambaMixer::step(const Tensor& h, MambaState& state) const {
  NoGradGuard no_grad;
  MG_CHECK(h.ndim() == 3 && h.dim(1) == 1, "[mamba step] expects one token (B,1,C), got {}", h.describe());
  const int64_t B = h.dim(0);
  const DType dt_type = h.dtype();
  if (!state.ssm.defined()) {
    state.conv = Tensor::zeros({B, K - 1, D}, dt_type);
    state.ssm = Tensor::zeros({B, D, N}, dt_type);
  }
  Tensor xz = in_proj.forward(h);                             // (B,1,2D)
  Tensor x = ops::slice_last(xz, 0, D);                       // (B,1,D)
  Tensor z = ops::slice_last(xz, D, D);                       // (B,1,D)
  // The conv over the window [last K-1 inputs, x] is the training op on K steps; its last
  // output is this step's.
  Tensor window = Tensor::empty({B, K, D}, dt_type);          // (B,K,D)
  const size_t es = dtype_size(dt_type);
  for (int64_t b = 0; b < B; ++b) {
    char* w = static_cast<char*>(window.raw()) + b * K * D * es;
    std::memcpy(w, static_cast<const char*>(state.conv.raw()) + b * (K - 1) * D * es, (K - 1) * D * es);
    std::memcpy(w + (K - 1) * D * es, static_cast<const char*>(x.raw()) + b * D * es, D * es);
    // Shift: the state keeps the newest K-1 inputs.
    std::memcpy(static_cast<char*>(state.conv.raw()) + b * (K - 1) * D * es, w + D * es, (K - 1) * D * es);
  }
  Tensor conv_all = conv1d.forward(window);                   // (B,K,D)
  Tensor xc = Tensor::empty({B, 1, D}, dt_type);
  for (int64_t b = 0; b < B; ++b)
    std::memcpy(static_cast<char*>(xc.raw()) + b * D * es,
                static_cast<const char*>(conv_all.raw()) + (b * K + K - 1) * D * es, D * es);
  xc = ops::silu(xc);                                         // (B,1,D)
  Tensor x_dbl = x_proj.forward(xc);                          // (B,1,R+2N)
  Tensor dt = dt_proj.forward_no_bias(ops::slice_last(x_dbl, 0, R));  // (B,1,D)
  Tensor Bm = ops::slice_last(x_dbl, R, N);                   // (B,1,N)
  Tensor Cm = ops::slice_last(x_dbl, R + N, N);               // (B,1,N)
  Tensor y = Tensor::empty({B, 1, D}, dt_type);
  MG_DISPATCH_FLOAT(dt_type, "mamba step", [&] {
    selective_scan_step<scalar_t>(B, D, N, state.ssm.data<scalar_t>(), xc.data<scalar_t>(), dt.data<scalar_t>(),
                                  dt_proj.bias.data<scalar_t>(), A_log.data<scalar_t>(), Bm.data<scalar_t>(),
                                  Cm.data<scalar_t>(), Dskip.data<scalar_t>(), z.data<scalar_t>(),
                                  y.data<scalar_t>());
  });
  return out_proj.forward(y);                                 // (B,1,C)
}

}  // namespace mg
