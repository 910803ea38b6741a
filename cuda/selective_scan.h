#pragma once
// The fused Mamba-1 selective scan on the GPU: the same functions, math, layouts and
// write (=) / accumulate (+=) contract as mg::selective_scan_forward/backward
// (model/selective_scan.h), except that EVERY pointer is a DEVICE pointer. chunk_states has
// the CPU layout (B, ceil(T/chunk), D, N), so the forward of either backend can feed the
// backward of either, and tests compare buffer for buffer. Kernels run on mg::cuda::stream(),
// asynchronously (errors of a running kernel surface at the next synchronizing call).
// Plain C++ header: no CUDA include. Built only with MAGELLAN_CUDA.
//
// Kernel design (cuda/selective_scan.cu). Layouts are (B,T,D): one time step of a batch row
// is a contiguous row of D channels, so the kernels are parallel over (batch, channel, state)
// and sequential over time, the state h living in registers for the whole sequence:
//   * Thread mapping. A block is 4 warps for one batch row and a group of DG consecutive
//     channels. P consecutive lanes serve one channel, each holding NPT of its N states
//     (n = q*NPT + i, q = lane % P). float: N<=4 -> (P,NPT) = (4,1), <=8 (4,2), <=16 (4,4),
//     <=32 (8,4), <=64 (16,4), <=128 (32,4); double: (4,1), (4,2), <=16 (8,2), <=32 (16,2),
//     <=64 (32,2). For N = 16 float: 8 channels a warp, DG = 32 channels a block, grid =
//     B * ceil(D/32) blocks (384 for B=8, D=1536: ~3 resident blocks per H100 SM).
//   * Staging. Time advances in tiles (forward: 32 steps; backward: 16-step segments). A tile
//     of u, dt, z (, dout) for the block's channels (128-byte rows) and of B, C is copied to
//     shared memory with cp.async, double buffered (the next tile loads while this one is
//     scanned). One pass over the tile then computes the per-(t,d) terms once (delta =
//     softplus(dt + dt_bias), delta*u, silu(z), dy, softplus', silu') into shared records,
//     so the P lanes of a channel do not repeat the transcendental work.
//   * The recurrence, 4 steps at a time: each lane updates its NPT states (one ex2 each) and
//     forms its part of y_t = sum_n h C; a reduce-scatter over the P lanes (3 shuffles for
//     4 steps) leaves y of step k in lane k, which writes out (or dz). Nothing of size
//     (B,T,D,N) ever reaches global memory.
//   * Backward, per chunk of L steps (L = s.chunk when <= 64, else 64, see below), last
//     chunk first: pass F re-runs the chunk from its saved start state (chunk_states) and
//     keeps the state every 4 steps in shared memory (checkpoints, per thread) and writes dz;
//     pass R walks the chunk backwards 4 steps at a time: recompute those 4 states from the
//     checkpoint in registers, then the reverse recurrence with the carry dL/dh in
//     registers; du, ddt from reduce-scatters over the state lanes; dA and the ddt_bias /
//     dDskip sums in registers over the whole sequence. Each chunk's data is staged twice
//     (pass R re-reads it, from L2). When s.chunk > 64, the backward first re-runs the
//     forward with chunk 64 into scratch states (the same bits the forward saves) and uses
//     those.
//   * Cross-channel sums (dBm, dCm): a reduce-scatter over the warp's channels (shuffles),
//     then a fixed-order sum over the block's 4 warps in shared memory, written per
//     (batch, channel group) to scratch; a second small kernel sums the groups in index
//     order. Parameter grads: per-batch-row partials in scratch, summed over the batch rows in
//     index order by a third kernel and ADDED to ddt_bias, dA_log, dDskip.
//
// Memory: forward: no scratch (48 KiB shared memory a block, float N=16). Backward scratch
// (device_alloc, freed after the launches): 2*B*G*T*N (dBm/dCm partials, G = ceil(D/DG)
// channel groups: 48 for D=1536, N=16) + B*(D*N+2D) values, plus B*ceil(T/64)*D*N when
// s.chunk > 64; ~72 KiB shared memory a block (float N=16, chunk <= 64).
//
// Determinism: no atomics. Every reduction (over state lanes, channels, warps, groups,
// batch rows) runs in a fixed order that depends on the shape only, so results are
// bit-identical run to run. They are not bit-identical to the CPU kernels (different order
// of sums, hardware ex2 for float decays): within ~1e-6 relative in float.
//
// Supported: any B, T, D >= 1, chunk >= 1; 1 <= N <= 128 (float) or 64 (double).
#include <cstdint>

#include "model/selective_scan.h"

namespace mg::cuda {

template <class T>
void selective_scan_forward(const ScanShape& s, const T* u, const T* dt, const T* dt_bias,
                            const T* A_log, const T* Bm, const T* Cm, const T* Dskip,
                            const T* z, T* out, T* chunk_states, T* final_state);

template <class T>
void selective_scan_backward(const ScanShape& s, const T* u, const T* dt, const T* dt_bias,
                             const T* A_log, const T* Bm, const T* Cm, const T* Dskip,
                             const T* z, const T* chunk_states, const T* dout, T* du, T* ddt,
                             T* ddt_bias, T* dA_log, T* dBm, T* dCm, T* dDskip, T* dz);

#define MG_CUDA_SCAN_DECLARE(T)                                                              \
  extern template void selective_scan_forward<T>(const ScanShape&, const T*, const T*,      \
                                                 const T*, const T*, const T*, const T*,    \
                                                 const T*, const T*, T*, T*, T*);           \
  extern template void selective_scan_backward<T>(                                          \
      const ScanShape&, const T*, const T*, const T*, const T*, const T*, const T*,         \
      const T*, const T*, const T*, const T*, T*, T*, T*, T*, T*, T*, T*, T*);
MG_CUDA_SCAN_DECLARE(float)
MG_CUDA_SCAN_DECLARE(double)
#undef MG_CUDA_SCAN_DECLARE

}  // namespace mg::cuda
