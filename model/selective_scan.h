#pragma once
// Fused Mamba-1 selective scan (design.md §3): forward, backward and one decoding step.
// Same math as state-spaces/mamba's selective_scan_fn(u, delta, A, B, C, D, z, delta_bias,
// delta_softplus=True) with A = -exp(A_log):
//   delta_t = softplus(dt_t + dt_bias)                 (identity above 20, as PyTorch/mamba)
//   h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      h_0 = 0, state (B,D,N)
//   y_t     = sum_n h_t[n] * C_t[n] + Dskip * u_t
//   out_t   = y_t * silu(z_t)                          (no gating when z == nullptr)
//
// Memory: the (B,T,D,N) states are never stored. The forward saves only the state before
// each chunk of `chunk` steps (chunk_states, B*ceil(T/chunk)*D*N values); the backward
// recomputes the states inside one chunk at a time from them and runs the reverse
// recurrence. Its scratch: 2*B*G*T*N partial sums of dBm/dCm (G channel groups: 16, or
// D/128 above D = 2048) and B*D*(N+2) for the parameter grads, plus ~0.2 MiB per thread at
// chunk 64; never B*T*D*N.
//
// Threads: OpenMP over batch x channel blocks; float runs 8 channels per AVX2 register.
// Results never depend on the thread count or timing: the reductions over channels (dBm,
// dCm) and over batch (parameter grads) are summed in a fixed order.
//
// Legend: B batch, T seq, D d_inner (channels), N d_state. All arrays are dense, row-major.
#include <cstdint>

namespace mg {

struct ScanShape {
  int64_t B, T, D, N;
  int64_t chunk = 64;  // steps between saved states; backward recomputes one chunk at a time
};

// ceil(T / chunk): how many states the forward saves per (batch, channel).
int64_t scan_num_chunks(const ScanShape& s);
// Elements of chunk_states (B, n_chunks, D, N) the forward writes and the backward reads.
int64_t scan_saved_state_elems(const ScanShape& s);
// Elements a naive implementation would keep for the backward: all states, B*T*D*N.
int64_t scan_full_state_elems(const ScanShape& s);

// Forward over the whole sequence from h_0 = 0.
//   u (B,T,D), dt (B,T,D) = dt_proj output WITHOUT its bias, dt_bias (D), A_log (D,N),
//   Bm (B,T,N), Cm (B,T,N), Dskip (D), z (B,T,D) or nullptr (no gating).
//   out (B,T,D).
//   chunk_states (B, n_chunks, D, N): the state BEFORE each chunk's first step (so chunk 0
//     holds zeros), what the backward needs; nullptr when no backward will follow.
//   final_state (B,D,N): the state after step T-1 (to continue with selective_scan_step), or
//     nullptr.
template <class T>
void selective_scan_forward(const ScanShape& s, const T* u, const T* dt, const T* dt_bias,
                            const T* A_log, const T* Bm, const T* Cm, const T* Dskip,
                            const T* z, T* out, T* chunk_states, T* final_state);

// Backward of selective_scan_forward, from the same inputs and its chunk_states.
// Activation grads du, ddt (B,T,D), dBm, dCm (B,T,N), dz (B,T,D) are WRITTEN (=);
// parameter grads ddt_bias (D), dA_log (D,N), dDskip (D) are ACCUMULATED (+=).
// dz is ignored (may be nullptr) when z == nullptr. ddt is the grad of the bias-free dt input.
template <class T>
void selective_scan_backward(const ScanShape& s, const T* u, const T* dt, const T* dt_bias,
                             const T* A_log, const T* Bm, const T* Cm, const T* Dskip,
                             const T* z, const T* chunk_states, const T* dout, T* du, T* ddt,
                             T* ddt_bias, T* dA_log, T* dBm, T* dCm, T* dDskip, T* dz);

// One recurrent step for generation, the same numbers as the forward at that step.
//   state (B,D,N) updated in place; u, dt, z (B,D) (z may be nullptr); Bm, Cm (B,N);
//   dt_bias (D), A_log (D,N), Dskip (D); out (B,D).
template <class T>
void selective_scan_step(int64_t B, int64_t D, int64_t N, T* state, const T* u, const T* dt,
                         const T* dt_bias, const T* A_log, const T* Bm, const T* Cm,
                         const T* Dskip, const T* z, T* out);

#define MG_SCAN_DECLARE(T)                                                                   \
  extern template void selective_scan_forward<T>(const ScanShape&, const T*, const T*,      \
                                                 const T*, const T*, const T*, const T*,    \
                                                 const T*, const T*, T*, T*, T*);           \
  extern template void selective_scan_backward<T>(                                          \
      const ScanShape&, const T*, const T*, const T*, const T*, const T*, const T*,         \
      const T*, const T*, const T*, const T*, T*, T*, T*, T*, T*, T*, T*, T*);              \
  extern template void selective_scan_step<T>(int64_t, int64_t, int64_t, T*, const T*,      \
                                              const T*, const T*, const T*, const T*,       \
                                              const T*, const T*, const T*, T*);
MG_SCAN_DECLARE(float)
MG_SCAN_DECLARE(double)
#undef MG_SCAN_DECLARE

}  // namespace mg
