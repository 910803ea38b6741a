// Selective scan backward (design.md §3), the reverse of selective_scan_forward.
// Reference followed: state-spaces/mamba csrc/selective_scan/selective_scan_bwd_kernel.cuh
// (recompute the states of a chunk from its saved start state, then the reverse recurrence).
//
// With G_t = dL/dh_t (all paths) and decay_t = exp(delta_t*A):
//   dy_t      = dout_t * silu(z_t)                dz_t = dout_t * y_t * silu'(z_t)
//   G_t[n]    = dy_t*C_t[n] + decay_{t+1}[n]*G_{t+1}[n]          (G_T = 0)
//   dC_t[n]  += dy_t*h_t[n]                       dB_t[n] += G_t[n]*delta_t*u_t   (sum over D)
//   w_t[n]    = G_t[n]*h_{t-1}[n]*decay_t[n]      dA[n] += w_t[n]*delta_t
//   ddelta_t  = sum_n w_t[n]*A[n] + u_t*sum_n G_t[n]*B_t[n]
//   du_t      = dy_t*Dskip + delta_t*sum_n G_t[n]*B_t[n]           dDskip += dy_t*u_t
//   ddt_t     = ddelta_t * softplus'(dt_t + dt_bias)               ddt_bias += ddt_t
//   dA_log    = dA * A                                              (A = -exp(A_log))
//
// Work split: items = (batch row b, channel group g), groups as in GroupSplit (from the
// shape alone). Chunks go last to first; a chunk's rows for the group's channels are first
// copied contiguous (the stage), then every block of the group is recomputed and reversed in
// turn from it, its carry G kept per block. dB/dC of a chunk are summed over the group's blocks lane-wise into a chunk-local
// buffer, then over lanes into the group's partial (T,N); partials are summed over groups,
// and parameter grads over batch rows, in index order: the same bits for any thread count.
#include <algorithm>
#include <initializer_list>
#include <memory>
#include <utility>

#include "autograd/error.h"
#include "model/selective_scan.h"
#include "model/selective_scan_lanes.h"

namespace mg {
namespace {
using namespace scan_detail;

template <class T>
struct ScanGrads {
  const T* dout;     // (B,T,D)
  T *du, *ddt, *dz;  // (B,T,D) written
};

// Per-thread scratch for one (b, group) item.
template <class L>
struct GroupScratch {
  using T = typename L::Elem;
  GroupScratch(int64_t chunk_len, int64_t N, int64_t max_blocks)
      : stage_width(max_blocks * L::W), stage(new T[7 * chunk_len * stage_width]),
        states((chunk_len + 1) * N), decay(chunk_len * N), dB_acc(chunk_len * N),
        dC_acc(chunk_len * N), delta(chunk_len), u(chunk_len), dy(chunk_len), dsp(chunk_len),
        gate_grad(chunk_len), sum_GB(chunk_len), sum_wA(chunk_len),
        A(max_blocks * N), A_scaled(max_blocks * N), carry(max_blocks * N), dA_acc(max_blocks * N),
        dbias_acc(max_blocks), dD_acc(max_blocks) {}
  // The chunk's rows of u, dt, z, dout for the group's channels, copied contiguous, and of
  // du, ddt, dz, copied out when the chunk is done: 7 x (L, width). In place, every step of
  // every block would touch a new page (rows are D apart).
  int64_t stage_width;
  std::unique_ptr<T[]> stage;
  LaneBuffer<L> states;             // (L+1, N): state before the chunk, then after each step
  LaneBuffer<L> decay;              // (L, N): exp(delta*A) of each step
  LaneBuffer<L> dB_acc, dC_acc;     // (L, N): lane-wise sums over the group's blocks
  LaneBuffer<L> delta, u, dy, dsp;  // (L): per step, for the current block
  LaneBuffer<L> gate_grad;          // (L): dout * silu'(z)
  LaneBuffer<L> sum_GB, sum_wA;     // (L): per step, sum_n G*B and sum_n w*A
  LaneBuffer<L> A, A_scaled;        // (blocks, N): A, and A * L::kDecayScale for the decays
  LaneBuffer<L> carry, dA_acc;      // (blocks, N): per block of the group
  LaneBuffer<L> dbias_acc, dD_acc;  // (blocks)
};

// The group's columns [c0, c1) of rows [t0, t0+len) of batch b: (len, ld) views into the stage.
template <class T>
struct ChunkTile {
  const T *u, *dt, *z, *dout;  // inputs; z null when not gated
  T *du, *ddt, *dz;            // outputs, copied to (B,T,D) by unstage_chunk
  int64_t ld, c0, t0, len;
};

template <class L>
ChunkTile<typename L::Elem> stage_chunk(const ScanShape& s, const ScanInputs<typename L::Elem>& in,
                                        const typename L::Elem* dout, int64_t b, int64_t t0,
                                        int64_t len, int64_t c0, int64_t c1,
                                        GroupScratch<L>& sc) {
  using T = typename L::Elem;
  const int64_t ld = c1 - c0, plane = len * ld;
  T* st = sc.stage.get();
  const T* srcs[4] = {in.u, in.dt, in.z, dout};
  for (int a = 0; a < 4; ++a) {
    if (!srcs[a]) continue;
    for (int64_t i = 0; i < len; ++i) {
      const T* row = srcs[a] + (b * s.T + t0 + i) * s.D;
      if (i + 4 < len) prefetch_row(row + 4 * s.D, c0, c1);  // rows are pages apart
      std::copy(row + c0, row + c1, st + a * plane + i * ld);
    }
  }
  return {st,         st + plane,     in.z ? st + 2 * plane : nullptr, st + 3 * plane,
          st + 4 * plane, st + 5 * plane, st + 6 * plane, ld, c0, t0, len};
}

template <class L>
void unstage_chunk(const ScanShape& s, const ChunkTile<typename L::Elem>& tile,
                   const ScanGrads<typename L::Elem>& g, int64_t b) {
  using T = typename L::Elem;
  const std::pair<const T*, T*> planes[3] = {{tile.du, g.du}, {tile.ddt, g.ddt}, {tile.dz, g.dz}};
  for (auto [src, dst] : planes) {
    if (!dst || (src == tile.dz && !tile.z)) continue;  // no dz without z (ignored then)
    for (int64_t i = 0; i < tile.len; ++i)
      std::copy(src + i * tile.ld, src + (i + 1) * tile.ld,
                dst + (b * s.T + tile.t0 + i) * s.D + tile.c0);
  }
}

// Recompute the tile's steps for the block at channel d0 from the chunk's saved start state,
// keeping every state and decay, and the gate's gradients (dz staged here, dy kept). Two
// passes: the per-step softplus/sigmoid first (independent across steps), then the
// recurrence, so its steps do not wait on those long dependency chains.
template <class L>
void recompute_chunk(const ScanShape& s, const ScanInputs<typename L::Elem>& in,
                     const typename L::Elem* chunk_states, const ChunkTile<typename L::Elem>& tile,
                     int64_t b, int64_t c, int64_t d0, int lanes, const typename L::V* A_scaled,
                     GroupScratch<L>& sc) {
  using V = typename L::V;
  const int64_t D = s.D, N = s.N, col = d0 - tile.c0;
  const V bias = L::load(in.dt_bias + d0, lanes), dskip = L::load(in.Dskip + d0, lanes);
  const V one = L::set1(1);
  for (int64_t i = 0; i < tile.len; ++i) {
    const int64_t at = i * tile.ld + col;
    const V x = L::load(tile.dt + at, lanes) + bias;
    sc.u[i] = L::load(tile.u + at, lanes);
    L::softplus_with_grad(x, sc.delta[i], sc.dsp[i]);
    const V dout = L::load(tile.dout + at, lanes);
    if (tile.z) {
      const V z = L::load(tile.z + at, lanes), sig = L::sigmoid(z);
      sc.dy[i] = dout * (z * sig);
      sc.gate_grad[i] = dout * (sig * L::fma(z, one - sig, one));  // dout * silu'(z)
    } else {
      sc.dy[i] = dout;
    }
  }
  load_state_block<L>(chunk_states + (b * scan_num_chunks(s) + c) * D * N, d0, lanes, N,
                      sc.states.data());
  for (int64_t i = 0; i < tile.len; ++i) {
    const int64_t row = b * s.T + tile.t0 + i;
    const V u = sc.u[i], delta = sc.delta[i];
    const V y = scan_advance<L, true>(N, A_scaled, delta, delta * u, in.Bm + row * N,
                                      in.Cm + row * N, sc.states.data() + i * N,
                                      sc.states.data() + (i + 1) * N, sc.decay.data() + i * N);
    if (tile.z) L::store(tile.dz + i * tile.ld + col, L::fma(dskip, u, y) * sc.gate_grad[i], lanes);
  }
}

// Reverse recurrence for the K state entries [n0, n0+K) of block j over the tile's steps.
// Their carry (decay_{t+1} * G_{t+1}) and dA sums stay in registers across steps; the per-step
// sums over n, sum_GB = sum G*B and sum_wA = sum w*A, add up over the tiles of n.
template <class L, int K>
void reverse_tile(const ScanInputs<typename L::Elem>& in, int64_t row0, int64_t len, int64_t N,
                  int64_t n0, const typename L::V* A, typename L::V* carry,
                  typename L::V* dA_acc, GroupScratch<L>& sc) {
  using V = typename L::V;
  V c[K], dA[K];
  for (int k = 0; k < K; ++k) {
    c[k] = carry[n0 + k];
    dA[k] = dA_acc[n0 + k];
  }
  for (int64_t i = len - 1; i >= 0; --i) {
    const auto* Brow = in.Bm + (row0 + i) * N + n0;
    const auto* Crow = in.Cm + (row0 + i) * N + n0;
    const V dy = sc.dy[i], delta = sc.delta[i], delta_u = delta * sc.u[i];
    const V* h_prev = sc.states.data() + i * N + n0;
    const V* h = h_prev + N;
    const V* decay = sc.decay.data() + i * N + n0;
    V* dB_acc = sc.dB_acc.data() + i * N + n0;
    V* dC_acc = sc.dC_acc.data() + i * N + n0;
    V GB = L::zero(), wA = L::zero();
    for (int k = 0; k < K; ++k) {
      const V G = L::fma(dy, L::set1(Crow[k]), c[k]);  // dL/dh_t
      dC_acc[k] = L::fma(dy, h[k], dC_acc[k]);
      dB_acc[k] = L::fma(G, delta_u, dB_acc[k]);
      GB = L::fma(G, L::set1(Brow[k]), GB);
      c[k] = decay[k] * G;
      const V w = c[k] * h_prev[k];  // G*decay*h_prev = dL/d(delta*A) through the decay
      wA = L::fma(w, A[n0 + k], wA);
      dA[k] = L::fma(w, delta, dA[k]);
    }
    sc.sum_GB[i] = sc.sum_GB[i] + GB;
    sc.sum_wA[i] = sc.sum_wA[i] + wA;
  }
  for (int k = 0; k < K; ++k) {
    carry[n0 + k] = c[k];
    dA_acc[n0 + k] = dA[k];
  }
}

// Reverse recurrence over the tile's steps for block j (channel d0), in tiles of 4 state
// entries (carry and dA in registers: far fewer stores than a loop over all N per step);
// carry comes in from the later chunk and goes out to the earlier one.
template <class L>
void reverse_chunk(const ScanShape& s, const ScanInputs<typename L::Elem>& in,
                   const ChunkTile<typename L::Elem>& tile, int64_t b, int64_t d0, int lanes,
                   int64_t j, GroupScratch<L>& sc) {
  using V = typename L::V;
  const int64_t N = s.N, row0 = b * s.T + tile.t0, len = tile.len;
  const V* A = sc.A.data() + j * N;
  V* carry = sc.carry.data() + j * N;
  V* dA_acc = sc.dA_acc.data() + j * N;
  for (int64_t i = 0; i < len; ++i) sc.sum_GB[i] = sc.sum_wA[i] = L::zero();
  int64_t n0 = 0;
  for (; n0 + 4 <= N; n0 += 4) reverse_tile<L, 4>(in, row0, len, N, n0, A, carry, dA_acc, sc);
  switch (N - n0) {
    case 3: reverse_tile<L, 3>(in, row0, len, N, n0, A, carry, dA_acc, sc); break;
    case 2: reverse_tile<L, 2>(in, row0, len, N, n0, A, carry, dA_acc, sc); break;
    case 1: reverse_tile<L, 1>(in, row0, len, N, n0, A, carry, dA_acc, sc); break;
    default: break;
  }
  const V dskip = L::load(in.Dskip + d0, lanes);
  V dbias_acc = sc.dbias_acc[j], dD_acc = sc.dD_acc[j];
  for (int64_t i = len - 1; i >= 0; --i) {
    const V dy = sc.dy[i], delta = sc.delta[i], u = sc.u[i];
    const int64_t at = i * tile.ld + (d0 - tile.c0);
    L::store(tile.du + at, L::fma(dy, dskip, delta * sc.sum_GB[i]), lanes);
    const V ddt = L::fma(u, sc.sum_GB[i], sc.sum_wA[i]) * sc.dsp[i];
    L::store(tile.ddt + at, ddt, lanes);
    dbias_acc = dbias_acc + ddt;
    dD_acc = L::fma(dy, u, dD_acc);
  }
  sc.dbias_acc[j] = dbias_acc;
  sc.dD_acc[j] = dD_acc;
}

// One (b, group) item. dB_part, dC_part (T,N): this item's sums over its channels (=).
// param_part: this batch row's dA_log (D,N), ddt_bias (D), dDskip (D), its channels only (=).
template <class L>
void backward_group(const ScanShape& s, const ScanInputs<typename L::Elem>& in,
                    const typename L::Elem* chunk_states, const ScanGrads<typename L::Elem>& g,
                    int64_t b, int64_t blk_begin, int64_t blk_end, GroupScratch<L>& sc,
                    typename L::Elem* dB_part, typename L::Elem* dC_part,
                    typename L::Elem* param_part) {
  using T = typename L::Elem;
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
    load_A_block<L>(in.A_log, d0, lanes, N, sc.A_scaled.data() + j * N, sc.A.data() + j * N);
    for (int64_t n = 0; n < N; ++n) sc.carry[j * N + n] = sc.dA_acc[j * N + n] = L::zero();
    sc.dbias_acc[j] = sc.dD_acc[j] = L::zero();
  }
  for (int64_t c = n_chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * s.chunk, len = std::min(s.chunk, s.T - t0);
    const ChunkTile<T> tile = stage_chunk<L>(s, in, g.dout, b, t0, len, c0, c1, sc);
    for (int64_t k = 0; k < len * N; ++k) sc.dB_acc[k] = sc.dC_acc[k] = L::zero();
    for (int64_t j = 0; j < n_blk; ++j) {
      int64_t d0;
      int lanes;
      block_at(j, d0, lanes);
      recompute_chunk<L>(s, in, chunk_states, tile, b, c, d0, lanes, sc.A_scaled.data() + j * N,
                         sc);
      reverse_chunk<L>(s, in, tile, b, d0, lanes, j, sc);
    }
    unstage_chunk<L>(s, tile, g, b);
    L::write_lane_sums(sc.dB_acc.data(), len * N, dB_part + t0 * N);
    L::write_lane_sums(sc.dC_acc.data(), len * N, dC_part + t0 * N);
  }
  T* dA_log_part = param_part;
  T* dbias_part = param_part + D * N;
  T* dD_part = dbias_part + D;
  for (int64_t j = 0; j < n_blk; ++j) {
    int64_t d0;
    int lanes;
    block_at(j, d0, lanes);
    V* dA_log = sc.decay.data();  // free now: (N) scratch for dL/dA_log = dL/dA * A
    for (int64_t n = 0; n < N; ++n) dA_log[n] = sc.dA_acc[j * N + n] * sc.A[j * N + n];
    store_state_block<L>(dA_log, d0, lanes, N, dA_log_part);
    L::store(dbias_part + d0, sc.dbias_acc[j], lanes);
    L::store(dD_part + d0, sc.dD_acc[j], lanes);
  }
}

}  // namespace

template <class T>
void selective_scan_backward(const ScanShape& s, const T* u, const T* dt, const T* dt_bias,
                             const T* A_log, const T* Bm, const T* Cm, const T* Dskip,
                             const T* z, const T* chunk_states, const T* dout, T* du, T* ddt,
                             T* ddt_bias, T* dA_log, T* dBm, T* dCm, T* dDskip, T* dz) {
  using L = Lanes<T>;
  const char* where = "selective_scan_backward";
  check_scan_shape(s, where);
  const ScanInputs<T> in{u, dt, dt_bias, A_log, Bm, Cm, Dskip, z};
  check_inputs(in, where);
  check_not_null(chunk_states, where, "chunk_states (from selective_scan_forward)");
  for (auto [p, name] : {std::pair<const void*, const char*>{dout, "dout"}, {du, "du"},
                         {ddt, "ddt"}, {ddt_bias, "ddt_bias"}, {dA_log, "dA_log"},
                         {dBm, "dBm"}, {dCm, "dCm"}, {dDskip, "dDskip"}})
    check_not_null(p, where, name);
  if (z) check_not_null(dz, where, "dz (z was given)");

  const int64_t B = s.B, T_ = s.T, D = s.D, N = s.N;
  const GroupSplit split(D, L::W);
  const int64_t n_groups = split.n_groups;
  const int64_t chunk_len = std::min(s.chunk, T_);
  const int64_t param_size = D * N + 2 * D;
  // Partial sums, each written exactly once by its item: (B, groups, T, N) x2, (B, D*N+2D).
  std::unique_ptr<T[]> dB_part(new T[B * n_groups * T_ * N]);
  std::unique_ptr<T[]> dC_part(new T[B * n_groups * T_ * N]);
  std::unique_ptr<T[]> param_part(new T[B * param_size]);
  const ScanGrads<T> g{dout, du, ddt, dz};

#pragma omp parallel if (B * T_ * D * N >= kParallelMinWork)
  {
    GroupScratch<L> sc(chunk_len, N, split.blocks_per_group);
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < B * n_groups; ++item) {
      const int64_t b = item / n_groups, grp = item % n_groups;
      backward_group<L>(s, in, chunk_states, g, b, split.begin(grp), split.end(grp), sc,
                        dB_part.get() + item * T_ * N, dC_part.get() + item * T_ * N,
                        param_part.get() + b * param_size);
    }
    // Fixed-order reductions: over groups for dBm/dCm (written), over batch for params (+=).
#pragma omp for schedule(static)
    for (int64_t row = 0; row < B * T_; ++row) {
      const int64_t b = row / T_, t = row % T_;
      for (int64_t n = 0; n < N; ++n) {
        T sum_B = 0, sum_C = 0;
        for (int64_t grp = 0; grp < n_groups; ++grp) {
          const int64_t at = ((b * n_groups + grp) * T_ + t) * N + n;
          sum_B += dB_part[at];
          sum_C += dC_part[at];
        }
        dBm[row * N + n] = sum_B;
        dCm[row * N + n] = sum_C;
      }
    }
#pragma omp for schedule(static)
    for (int64_t d = 0; d < D; ++d) {
      for (int64_t n = 0; n < N; ++n) {
        T acc = 0;
        for (int64_t b = 0; b < B; ++b) acc += param_part[b * param_size + d * N + n];
        dA_log[d * N + n] += acc;
      }
      T acc_bias = 0, acc_D = 0;
      for (int64_t b = 0; b < B; ++b) {
        acc_bias += param_part[b * param_size + D * N + d];
        acc_D += param_part[b * param_size + D * N + D + d];
      }
      ddt_bias[d] += acc_bias;
      dDskip[d] += acc_D;
    }
  }
}

template void selective_scan_backward<float>(const ScanShape&, const float*, const float*,
                                             const float*, const float*, const float*,
                                             const float*, const float*, const float*,
                                             const float*, const float*, float*, float*, float*,
                                             float*, float*, float*, float*, float*);
template void selective_scan_backward<double>(const ScanShape&, const double*, const double*,
                                              const double*, const double*, const double*,
                                              const double*, const double*, const double*,
                                              const double*, const double*, double*, double*,
                                              double*, double*, double*, double*, double*,
                                              double*);

}  // namespace mg
