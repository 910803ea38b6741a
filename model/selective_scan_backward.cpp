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
// Work split: items = (batch row b, channel group g); a group is a fixed run of lane blocks
// (at most kGroups groups, chosen from the shape alone). Chunks go last to first, and inside
// a chunk every block of the group is recomputed and reversed in turn, its carry G kept per
// block. dB/dC of a chunk are summed over the group's blocks lane-wise into a chunk-local
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

// Channel groups per batch row for the backward's fixed-order dB/dC reduction. 16 groups
// give enough items for a few threads at B = 1 and cost 2*B*16*T*N partial sums.
constexpr int64_t kGroups = 16;

template <class T>
struct ScanGrads {
  const T* dout;        // (B,T,D)
  T *du, *ddt, *dz;     // (B,T,D) written
};

// Per-thread scratch for one group: chunk-local recomputed states and per-block carries.
template <class L>
struct GroupScratch {
  GroupScratch(int64_t chunk_len, int64_t N, int64_t max_blocks)
      : states((chunk_len + 1) * N), decay(chunk_len * N), dB_acc(chunk_len * N),
        dC_acc(chunk_len * N), delta(chunk_len), u(chunk_len), dy(chunk_len), dsp(chunk_len),
        A(max_blocks * N), carry(max_blocks * N), dA_acc(max_blocks * N), dbias_acc(max_blocks),
        dD_acc(max_blocks) {}
  LaneBuffer<L> states;  // (L+1, N): state before the chunk, then after each of its steps
  LaneBuffer<L> decay;   // (L, N): exp(delta*A) of each step
  LaneBuffer<L> dB_acc, dC_acc;               // (L, N): lane-wise sums over the group
  LaneBuffer<L> delta, u, dy, dsp;            // (L): per step of the chunk
  LaneBuffer<L> A, carry, dA_acc;             // (blocks, N): per block of the group
  LaneBuffer<L> dbias_acc, dD_acc;            // (blocks)
};

// Recompute chunk [t0, t0+len) of one block from its saved start state, keeping every state
// and decay, and the gate's gradients (dz written here, dy kept for the reverse pass).
template <class L>
void recompute_chunk(const ScanShape& s, const ScanInputs<typename L::Elem>& in,
                     const typename L::Elem* chunk_states, const ScanGrads<typename L::Elem>& g,
                     int64_t b, int64_t c, int64_t t0, int64_t len, int64_t d0, int lanes,
                     const typename L::V* A, GroupScratch<L>& sc) {
  using V = typename L::V;
  const int64_t D = s.D, N = s.N;
  load_state_block<L>(chunk_states + (b * scan_num_chunks(s) + c) * D * N, d0, lanes, N,
                      sc.states.data());
  const V bias = L::load(in.dt_bias + d0, lanes), dskip = L::load(in.Dskip + d0, lanes);
  for (int64_t i = 0; i < len; ++i) {
    const int64_t row = b * s.T + t0 + i;
    const V u = L::load(in.u + row * D + d0, lanes);
    const V x = L::load(in.dt + row * D + d0, lanes) + bias;
    const V delta = L::softplus(x);
    V y = scan_advance<L, true>(N, A, delta, delta * u, in.Bm + row * N, in.Cm + row * N,
                                sc.states.data() + i * N, sc.states.data() + (i + 1) * N,
                                sc.decay.data() + i * N);
    const V dout = L::load(g.dout + row * D + d0, lanes);
    if (in.z) {
      y = L::fma(dskip, u, y);
      const V z = L::load(in.z + row * D + d0, lanes);
      const V sig = L::sigmoid(z);
      const V one = L::set1(1);
      sc.dy[i] = dout * (z * sig);
      // silu'(z) = sig * (1 + z*(1 - sig))
      L::store(g.dz + row * D + d0, dout * y * (sig * L::fma(z, one - sig, one)), lanes);
    } else {
      sc.dy[i] = dout;
    }
    sc.delta[i] = delta;
    sc.u[i] = u;
    sc.dsp[i] = L::dsoftplus(x);
  }
}

// Reverse recurrence over chunk [t0, t0+len) of block j, carry = decay_{t+1}*G_{t+1} coming
// in from the later chunk and going out to the earlier one.
template <class L>
void reverse_chunk(const ScanShape& s, const ScanInputs<typename L::Elem>& in,
                   const ScanGrads<typename L::Elem>& g, int64_t b, int64_t t0, int64_t len,
                   int64_t d0, int lanes, int64_t j, GroupScratch<L>& sc) {
  using V = typename L::V;
  const int64_t D = s.D, N = s.N;
  const V* A = sc.A.data() + j * N;
  V* carry = sc.carry.data() + j * N;
  V* dA_acc = sc.dA_acc.data() + j * N;
  const V dskip = L::load(in.Dskip + d0, lanes);
  V dbias_acc = sc.dbias_acc[j], dD_acc = sc.dD_acc[j];
  for (int64_t i = len - 1; i >= 0; --i) {
    const int64_t row = b * s.T + t0 + i;
    const auto* Brow = in.Bm + row * N;
    const auto* Crow = in.Cm + row * N;
    const V dy = sc.dy[i], delta = sc.delta[i], u = sc.u[i], delta_u = delta * u;
    const V* h_prev = sc.states.data() + i * N;
    const V* h = sc.states.data() + (i + 1) * N;
    const V* decay = sc.decay.data() + i * N;
    V* dB_acc = sc.dB_acc.data() + i * N;
    V* dC_acc = sc.dC_acc.data() + i * N;
    V sum_GB = L::zero(), sum_wA = L::zero();
    for (int64_t n = 0; n < N; ++n) {
      const V G = L::fma(dy, L::set1(Crow[n]), carry[n]);
      dC_acc[n] = L::fma(dy, h[n], dC_acc[n]);
      dB_acc[n] = L::fma(G, delta_u, dB_acc[n]);
      sum_GB = L::fma(G, L::set1(Brow[n]), sum_GB);
      const V w = G * h_prev[n] * decay[n];
      sum_wA = L::fma(w, A[n], sum_wA);
      dA_acc[n] = L::fma(w, delta, dA_acc[n]);
      carry[n] = decay[n] * G;
    }
    L::store(g.du + row * D + d0, L::fma(dy, dskip, delta * sum_GB), lanes);
    const V ddt = L::fma(u, sum_GB, sum_wA) * sc.dsp[i];
    L::store(g.ddt + row * D + d0, ddt, lanes);
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
  const int64_t D = s.D, N = s.N, n_chunks = scan_num_chunks(s);
  auto block_at = [&](int64_t j, int64_t& d0, int& lanes) {
    d0 = (blk_begin + j) * L::W;
    lanes = int(std::min<int64_t>(L::W, D - d0));
  };
  const int64_t n_blk = blk_end - blk_begin;
  for (int64_t j = 0; j < n_blk; ++j) {
    int64_t d0;
    int lanes;
    block_at(j, d0, lanes);
    load_A_block<L>(in.A_log, d0, lanes, N, sc.A.data() + j * N);
    for (int64_t n = 0; n < N; ++n) sc.carry[j * N + n] = sc.dA_acc[j * N + n] = L::zero();
    sc.dbias_acc[j] = sc.dD_acc[j] = L::zero();
  }
  for (int64_t c = n_chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * s.chunk, len = std::min(s.chunk, s.T - t0);
    for (int64_t k = 0; k < len * N; ++k) sc.dB_acc[k] = sc.dC_acc[k] = L::zero();
    for (int64_t j = 0; j < n_blk; ++j) {
      int64_t d0;
      int lanes;
      block_at(j, d0, lanes);
      recompute_chunk<L>(s, in, chunk_states, g, b, c, t0, len, d0, lanes, sc.A.data() + j * N,
                         sc);
      reverse_chunk<L>(s, in, g, b, t0, len, d0, lanes, j, sc);
    }
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
  const int64_t n_blocks = (D + L::W - 1) / L::W;
  const int64_t n_groups = std::min(n_blocks, kGroups);
  const int64_t max_group_blocks = (n_blocks + n_groups - 1) / n_groups;
  const int64_t chunk_len = std::min(s.chunk, T_);
  const int64_t param_size = D * N + 2 * D;
  // Partial sums, each written exactly once by its item: (B, groups, T, N) x2, (B, D*N+2D).
  std::unique_ptr<T[]> dB_part(new T[B * n_groups * T_ * N]);
  std::unique_ptr<T[]> dC_part(new T[B * n_groups * T_ * N]);
  std::unique_ptr<T[]> param_part(new T[B * param_size]);
  const ScanGrads<T> g{dout, du, ddt, dz};

#pragma omp parallel
  {
    GroupScratch<L> sc(chunk_len, N, max_group_blocks);
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < B * n_groups; ++item) {
      const int64_t b = item / n_groups, grp = item % n_groups;
      // Groups split the blocks as evenly as possible, in order.
      const int64_t blk_begin = grp * n_blocks / n_groups, blk_end = (grp + 1) * n_blocks / n_groups;
      backward_group<L>(s, in, chunk_states, g, b, blk_begin, blk_end, sc,
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
