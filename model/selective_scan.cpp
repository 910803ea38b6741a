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

// Per-thread scratch of forward_group, lane vectors.
template <class L>
struct ForwardScratch {
  ForwardScratch(int64_t blocks, int64_t N)
      : h(blocks * N), A(blocks * N), u(blocks), delta(blocks), silu_z(blocks) {}
  LaneBuffer<L> h, A;              // (blocks, N): states, A * L::kDecayScale
  LaneBuffer<L> u, delta, silu_z;  // (blocks): the current step's inputs
};

// Forward for batch row b and the lane blocks [blk_begin, blk_end), whole sequence. Time is
// the outer loop so each step reads one contiguous run of the group's channels per row.
// Each step runs in two passes over the blocks: first softplus/silu (long dependency chains,
// but independent across blocks), then the recurrences, so neither waits on the other.
template <class L>
void forward_group(const ScanShape& s, const ScanInputs<typename L::Elem>& in, int64_t b,
                   int64_t blk_begin, int64_t blk_end, typename L::Elem* out,
                   typename L::Elem* chunk_states, typename L::Elem* final_state,
                   ForwardScratch<L>& sc) {
  using V = typename L::V;
  const int64_t D = s.D, N = s.N, n_chunks = scan_num_chunks(s), n_blk = blk_end - blk_begin;
  const int64_t c0 = blk_begin * L::W, c1 = std::min(D, blk_end * L::W);  // channels
  auto block_at = [&](int64_t j, int64_t& d0, int& lanes) {
    d0 = (blk_begin + j) * L::W;
    lanes = int(std::min<int64_t>(L::W, D - d0));
  };
  for (int64_t j = 0; j < n_blk; ++j) {
    int64_t d0;
    int lanes;
    block_at(j, d0, lanes);
    load_A_block<L>(in.A_log, d0, lanes, N, sc.A.data() + j * N, nullptr);
    for (int64_t n = 0; n < N; ++n) sc.h[j * N + n] = L::zero();
  }
  for (int64_t t = 0; t < s.T; ++t) {
    const int64_t row = b * s.T + t;
    if (t + 2 < s.T) {  // two steps ahead: the rows are D apart, on another page each step
      prefetch_row(in.u + (row + 2) * D, c0, c1);
      prefetch_row(in.dt + (row + 2) * D, c0, c1);
      if (in.z) prefetch_row(in.z + (row + 2) * D, c0, c1);
    }
    for (int64_t j = 0; j < n_blk; ++j) {
      int64_t d0;
      int lanes;
      block_at(j, d0, lanes);
      sc.u[j] = L::load(in.u + row * D + d0, lanes);
      sc.delta[j] =
          L::softplus(L::load(in.dt + row * D + d0, lanes) + L::load(in.dt_bias + d0, lanes));
      if (in.z) sc.silu_z[j] = silu<L>(L::load(in.z + row * D + d0, lanes));
    }
    for (int64_t j = 0; j < n_blk; ++j) {
      int64_t d0;
      int lanes;
      block_at(j, d0, lanes);
      V* h = sc.h.data() + j * N;
      if (chunk_states && t % s.chunk == 0)  // the state BEFORE this chunk's first step
        store_state_block<L>(h, d0, lanes, N, chunk_states + (b * n_chunks + t / s.chunk) * D * N);
      const V u = sc.u[j], delta = sc.delta[j];
      V y = scan_advance<L, false>(N, sc.A.data() + j * N, delta, delta * u, in.Bm + row * N,
                                   in.Cm + row * N, h, h, nullptr);
      y = L::fma(L::load(in.Dskip + d0, lanes), u, y);
      if (in.z) y = y * sc.silu_z[j];
      L::store(out + row * D + d0, y, lanes);
    }
  }
  if (final_state)
    for (int64_t j = 0; j < n_blk; ++j) {
      int64_t d0;
      int lanes;
      block_at(j, d0, lanes);
      store_state_block<L>(sc.h.data() + j * N, d0, lanes, N, final_state + b * D * N);
    }
}

template <class T>
void forward_impl(const ScanShape& s, const ScanInputs<T>& in, T* out, T* chunk_states,
                  T* final_state) {
  using L = Lanes<T>;
  const GroupSplit split(s.D, L::W);
#pragma omp parallel if (s.B * s.T * s.D * s.N >= kParallelMinWork)
  {
    ForwardScratch<L> sc(split.blocks_per_group, s.N);
    // Every (b, group) is independent: no reduction, any schedule gives the same bits.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < s.B * split.n_groups; ++item) {
      const int64_t b = item / split.n_groups, g = item % split.n_groups;
      forward_group<L>(s, in, b, split.begin(g), split.end(g), out, chunk_states, final_state,
                       sc);
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
#pragma omp parallel if (B * D * N >= kParallelMinWork)
  {
    LaneBuffer<L> h(N), A(N);
#pragma omp for schedule(static)
    for (int64_t item = 0; item < B * n_blocks; ++item) {
      const int64_t b = item / n_blocks, d0 = (item % n_blocks) * L::W;
      const int lanes = int(std::min<int64_t>(L::W, D - d0));
      load_A_block<L>(A_log, d0, lanes, N, A.data(), nullptr);
      load_state_block<L>(state + b * D * N, d0, lanes, N, h.data());
      const V uv = L::load(u + b * D + d0, lanes);
      const V delta = L::softplus(L::load(dt + b * D + d0, lanes) + L::load(dt_bias + d0, lanes));
      V y = scan_advance<L, false>(N, A.data(), delta, delta * uv, Bm + b * N, Cm + b * N,
                                   h.data(), h.data(), nullptr);
      y = L::fma(L::load(Dskip + d0, lanes), uv, y);
      if (z) y = y * silu<L>(L::load(z + b * D + d0, lanes));
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
