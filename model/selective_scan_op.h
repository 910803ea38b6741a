#pragma once
// The selective scan as an autograd op over the fused kernel (model/selective_scan.h).
// Saves its inputs and the chunk-boundary states only: memory grows as B*T*D, not B*T*D*N.
#include "autograd/tensor.h"

namespace mg::ops {

// u (B,T,D), dt (B,T,D) [dt_proj output without bias], dt_bias (D), A_log (D,N),
// Bm (B,T,N), Cm (B,T,N), Dskip (D), z (B,T,D) or undefined -> out (B,T,D)
Tensor selective_scan(const Tensor& u, const Tensor& dt, const Tensor& dt_bias, const Tensor& A_log,
                      const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip, const Tensor& z,
                      int64_t chunk = 64);

}  // namespace mg::ops
