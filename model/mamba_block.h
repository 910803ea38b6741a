#pragma once
// The Mamba-1 mixer (Gu & Dao 2023; state-spaces/mamba `Mamba` module), design.md §3:
//   xz = in_proj(h); x, z = split(xz)                    (B,T,2D) -> (B,T,D) x 2
//   x  = silu(causal_conv1d(x))                          (B,T,D)
//   dt, Bm, Cm = split(x_proj(x), [R, N, N])             (B,T,R), (B,T,N), (B,T,N)
//   y  = selective_scan(x, dt_proj(dt) [bias fused], A_log, Bm, Cm, D, gate z)
//   out = out_proj(y)                                    (B,T,C)
#include <memory>

#include "autograd/module.h"
#include "experiments/config.h"
#include "model/linear.h"
#include "model/rmsnorm.h"

namespace mg {

// Per-layer decoding state for recurrent generation: the last K-1 conv inputs and the SSM state.
struct MambaState {
  Tensor conv;  // (B, K-1, D): x before the conv, most recent last
  Tensor ssm;   // (B, D, N)
};

class MambaMixer : public Module {
 public:
  MambaMixer(const ModelConfig& cfg, DType dtype, bool meta = false);

  // h (B,T,C) -> (B,T,C)
  Tensor forward(const Tensor& h, Rng* rng = nullptr, bool training = false) const;

  // Recurrent decoding, reusing the same Linear layers and scan math: one token per call.
  // h (B,1,C) -> (B,1,C); `state` is created zeroed on the first call.
  Tensor step(const Tensor& h, MambaState& state) const;

  // Starts decoding with a whole prompt at once: the forward's batched products and chunked
  // scan, leaving in `state` (which must be fresh) what `step` continues from: the last K-1
  // conv inputs and the scan's final state. h (B,T,C) -> (B,T,C), the forward's output.
  Tensor prefill(const Tensor& h, MambaState& state) const;

  // Init as state-spaces/mamba (design.md §3), drawing from rng in a fixed order.
  void init(const ModelConfig& cfg, Rng& rng);

  int64_t C, D, N, R, K;
  Linear in_proj, x_proj, dt_proj, out_proj;
  DepthwiseConv1d conv1d;
  Tensor A_log;  // [D, N]
  Tensor Dskip;  // [D]  (parameter name "D")
  int64_t scan_chunk = 64;
};

}  // namespace mg
