// Selective scan forward and the one-step recurrence (design.md §3). The backward is in
// selective_scan_backward.cpp; the lane type and the shared per-step code in
// selective_scan_lanes.h. Reference followed: state-spaces/mamba
// csrc/selective_scan/selective_scan_fwd_kernel.cuh (chunked scan, delta_softplus, z gate).
#include "model/selective_scan.h"

#include <algorithm>

#include "autograd/error.h"
#include "model/selective_scan_lanes.h"

namespace mg {

int64_t scan_num_chunks(const ScanShape& s) { return (s.T + s.chunk - 1) / s.chunk; }

int64_t scan_saved_state_elems(const ScanShape& s) {
  return s.B * scan_num_chunks(s) * s.D * s.N;
}

int64_t scan_full_state_elems(const ScanShape& s) { return s.B * s.T * s.D * s.N; }

namespace scan_detail {

void check_scan_shape(const ScanShape& s, const char* where) {
  MG_CHECK(s.B >= 1 && s.T >= 1 && s.D >= 1 && s.N >= 1,
           "[{}] shape B={} T={} D={} N={}: every dimension must be >= 1", where, s.B, s.T, s.D,
           s.N);
  MG_CHECK(s.chunk >= 1, "[{}] chunk={} must be >= 1 (64 is a good default)", where, s.chunk);
}

void check_not_null(const void* p, const char* where, const char* name) {
  MG_CHECK(p != nullptr, "[{}] `{}` is null; pass a buffer of the documented shape", where,
           name);
}

}  // namespace scan_detail

namespace {
using namespace scan_detail;

constexpr int64_t kPrefetchSteps = 8;

// Forward for one batch row b and the channel block [d0, d0+lanes), whole sequence.
// h (N) and A (N) are scratch lane vectors.
template <class L>
void forward_block(const ScanShape& s, const ScanInputs<typename L::Elem>& in, int64_t b,
                   int64_t d0, int lanes, typename L::Elem* out, typename L::Elem* chunk_states,
                   typename L::Elem* final_state, typename L::V* h, typename L::V* A) {
  using V = typename L::V;
  const int64_t D = s.D, N = s.N, n_chunks = scan_num_chunks(s);
  load_A_block<L>(in.A_log, d0, lanes, N, A);
  const V bias = L::load(in.dt_bias + d0, lanes), dskip = L::load(in.Dskip + d0, lanes);
  for (int64_t n = 0; n < N; ++n) h[n] = L::zero();
  for (int64_t t = 0; t < s.T; ++t) {
    if (chunk_states && t % s.chunk == 0)  // the state BEFORE this chunk's first step
      store_state_block<L>(h, d0, lanes, N,
                           chunk_states + (b * n_chunks + t / s.chunk) * D * N);
    const int64_t row = b * s.T + t;
    if (t + kPrefetchSteps < s.T) {  // rows are D apart: a new page each step, prefetch ahead
      const int64_t ahead = (row + kPrefetchSteps) * D + d0;
      __builtin_prefetch(in.u + ahead);
      __builtin_prefetch(in.dt + ahead);
      if (in.z) __builtin_prefetch(in.z + ahead);
      __builtin_prefetch(out + ahead, 1);
    }
    const V u = L::load(in.u + row * D + d0, lanes);
    const V delta = L::softplus(L::load(in.dt + row * D + d0, lanes) + bias);
    V y = scan_advance<L, false>(N, A, delta, delta * u, in.Bm + row * N, in.Cm + row * N, h, h,
                                 nullptr);
    y = L::fma(dskip, u, y);
    if (in.z) y = gate_silu<L>(y, L::load(in.z + row * D + d0, lanes));
    L::store(out + row * D + d0, y, lanes);
  }
  if (final_state) store_state_block<L>(h, d0, lanes, N, final_state + b * D * N);
}

template <class T>
void forward_impl(const ScanShape& s, const ScanInputs<T>& in, T* out, T* chunk_states,
                  T* final_state) {
  using L = Lanes<T>;
  const int64_t n_blocks = (s.D + L::W - 1) / L::W;
#pragma omp parallel
  {
    LaneBuffer<L> h(s.N), A(s.N);
    // Every (b, block) is independent: no reduction, any schedule gives the same bits.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < s.B * n_blocks; ++item) {
      const int64_t b = item / n_blocks, d0 = (item % n_blocks) * L::W;
      const int lanes = int(std::min<int64_t>(L::W, s.D - d0));
      forward_block<L>(s, in, b, d0, lanes, out, chunk_states, final_state, h.data(), A.data());
    }
  }
}

}  // namespace

template <class T>
void selective_scan_forward(const ScanShape& s, const T* u, const T* dt, const T* dt_bias,
                            const T* A_log, const T* Bm, const T* Cm, const T* Dskip,
                            const T* z, T* out, T* chunk_states, T* final_state) {
  const char* where = "selective_scan_forward";
  check_scan_shape(s, where);
  const ScanInputs<T> in{u, dt, dt_bias, A_log, Bm, Cm, Dskip, z};
  check_inputs(in, where);
  check_not_null(out, where, "out");
  forward_impl<T>(s, in, out, chunk_states, final_state);
}

template <class T>
void selective_scan_step(int64_t B, int64_t D, int64_t N, T* state, const T* u, const T* dt,
                         const T* dt_bias, const T* A_log, const T* Bm, const T* Cm,
                         const T* Dskip, const T* z, T* out) {
  using L = Lanes<T>;
  using V = typename L::V;
  const char* where = "selective_scan_step";
  check_scan_shape(ScanShape{B, 1, D, N}, where);
  const ScanInputs<T> in{u, dt, dt_bias, A_log, Bm, Cm, Dskip, z};
  check_inputs(in, where);
  check_not_null(state, where, "state");
  check_not_null(out, where, "out");
  const int64_t n_blocks = (D + L::W - 1) / L::W;
  // Same lane blocks and the same scan_advance as forward_block: bit-identical results.
#pragma omp parallel if (B * D * N >= 16384)
  {
    LaneBuffer<L> h(N), A(N);
#pragma omp for schedule(static)
    for (int64_t item = 0; item < B * n_blocks; ++item) {
      const int64_t b = item / n_blocks, d0 = (item % n_blocks) * L::W;
      const int lanes = int(std::min<int64_t>(L::W, D - d0));
      load_A_block<L>(A_log, d0, lanes, N, A.data());
      load_state_block<L>(state + b * D * N, d0, lanes, N, h.data());
      const V uv = L::load(u + b * D + d0, lanes);
      const V delta = L::softplus(L::load(dt + b * D + d0, lanes) + L::load(dt_bias + d0, lanes));
      V y = scan_advance<L, false>(N, A.data(), delta, delta * uv, Bm + b * N, Cm + b * N,
                                   h.data(), h.data(), nullptr);
      y = L::fma(L::load(Dskip + d0, lanes), uv, y);
      if (z) y = gate_silu<L>(y, L::load(z + b * D + d0, lanes));
      L::store(out + b * D + d0, y, lanes);
      store_state_block<L>(h.data(), d0, lanes, N, state + b * D * N);
    }
  }
}

template void selective_scan_forward<float>(const ScanShape&, const float*, const float*,
                                            const float*, const float*, const float*,
                                            const float*, const float*, const float*, float*,
                                            float*, float*);
template void selective_scan_forward<double>(const ScanShape&, const double*, const double*,
                                             const double*, const double*, const double*,
                                             const double*, const double*, const double*,
                                             double*, double*, double*);
template void selective_scan_step<float>(int64_t, int64_t, int64_t, float*, const float*,
                                         const float*, const float*, const float*, const float*,
                                         const float*, const float*, const float*, float*);
template void selective_scan_step<double>(int64_t, int64_t, int64_t, double*, const double*,
                                          const double*, const double*, const double*,
                                          const double*, const double*, const double*,
                                          const double*, double*);

}  // namespace mg
