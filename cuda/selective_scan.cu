// The fused selective scan on the GPU (cuda/selective_scan.h has the design). Same math as
// model/selective_scan.cpp and model/selective_scan_backward.cpp; the GPU design follows the
// ideas (not the code) of state-spaces/mamba csrc/selective_scan: recompute the states of a
// chunk in the backward instead of storing them, fused softplus / gate.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <type_traits>
#include <utility>

#include "autograd/error.h"
#include "cuda/runtime.h"
#include "cuda/selective_scan.h"

namespace mg::cuda {

namespace {

// ---------------------------------------------------------------------------------------
// Host-side checks
// ---------------------------------------------------------------------------------------
void check_cuda(cudaError_t e, const char* op, const char* what) {
  MG_CHECK(e == cudaSuccess, "[cuda selective_scan] {}: {} failed: {} ({})", op, what,
           cudaGetErrorString(e), cudaGetErrorName(e));
}
void check_launch(const char* op, const char* kernel) {
  check_cuda(cudaGetLastError(), op, kernel);
}
void check_ptr(const void* p, const char* op, const char* name) {
  MG_CHECK(p != nullptr, "[cuda selective_scan] {}: `{}` is null; pass a device buffer of the "
           "documented shape", op, name);
}

// Scratch from the stream-ordered caching allocator, given back when the scope ends (safe
// right after the launches that use it).
struct Scratch {
  void* p = nullptr;
  explicit Scratch(size_t bytes) : p(bytes ? device_alloc(bytes) : nullptr) {}
  ~Scratch() {
    if (p) device_free(p);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kFwdTile = 32;        // forward: steps per staged tile (8 sub-tiles of 4)
constexpr int kSeg = 16;            // backward: steps per staged segment (4 sub-tiles of 4)
constexpr int kMaxWorkChunk = 64;   // backward: longest chunk recomputed from one saved state
constexpr unsigned kFull = 0xffffffffu;

template <class T, int P_, int NPT_>
struct Cfg {
  static constexpr int P = P_;        // lanes per channel (power of 2, 4..32)
  static constexpr int NPT = NPT_;    // states per lane
  static constexpr int CPW = 32 / P;  // channels per warp
  static constexpr int DG = kWarps * CPW;  // channels per block
  static constexpr int NP = P * NPT;       // N padded
  static_assert(P >= 4 && P <= 32 && (P & (P - 1)) == 0, "P: 4, 8, 16 or 32");
};

template <class T>
struct alignas(4 * sizeof(T)) Rec4 {
  T a, b, c, d;
};
template <class T>
struct alignas(2 * sizeof(T)) Rec2 {
  T a, b;
};

// ---------------------------------------------------------------------------------------
// Device math: float uses the hardware ex2 for the decays (x = delta * A * log2(e)) and
// fast exp for softplus / sigmoid; double is the exact path (std::exp semantics).
// ---------------------------------------------------------------------------------------
template <class T>
constexpr double kDecayScale = std::is_same<T, float>::value ? 1.4426950408889634 : 1.0;

__device__ __forceinline__ float decay_exp(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ double decay_exp(double x) { return exp(x); }
__device__ __forceinline__ float dev_exp(float x) { return __expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }
__device__ __forceinline__ float dev_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double dev_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float dev_div(float a, float b) { return __fdividef(a, b); }
__device__ __forceinline__ double dev_div(double a, double b) { return a / b; }

// softplus(x) = log1p(exp(x)), x itself above 20 (PyTorch / mamba); dsp = sigmoid(x).
template <class T>
__device__ __forceinline__ void softplus_with_grad(T x, T& sp, T& dsp) {
  if (x <= T(20)) {
    const T e = dev_exp(x);
    sp = dev_log1p(e);
    dsp = dev_div(e, T(1) + e);
  } else {
    sp = x;
    dsp = T(1);
  }
}
template <class T>
__device__ __forceinline__ T sigmoid(T x) {
  return dev_div(T(1), T(1) + dev_exp(-x));
}

// ---------------------------------------------------------------------------------------
// cp.async (sm_80+): global -> shared without registers; src-size 0 writes zeros.
// ---------------------------------------------------------------------------------------
template <class T>
__device__ __forceinline__ void cp_async(T* smem_dst, const T* gsrc, bool ok) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int src_size = ok ? int(sizeof(T)) : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(gsrc),
               "n"(int(sizeof(T))), "r"(src_size)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Reads NPT consecutive values (16-byte aligned when NPT*sizeof(T) >= 16).
template <class T, int NPT>
__device__ __forceinline__ void load_vec(const T* p, T (&v)[NPT]) {
  if constexpr (std::is_same<T, float>::value && NPT % 4 == 0) {
#pragma unroll
    for (int i = 0; i < NPT; i += 4) {
      const float4 x = *reinterpret_cast<const float4*>(p + i);
      v[i] = x.x, v[i + 1] = x.y, v[i + 2] = x.z, v[i + 3] = x.w;
    }
  } else if constexpr (NPT % 2 == 0 && 2 * sizeof(T) <= 16) {
    using V2 = typename std::conditional<std::is_same<T, float>::value, float2, double2>::type;
#pragma unroll
    for (int i = 0; i < NPT; i += 2) {
      const V2 x = *reinterpret_cast<const V2*>(p + i);
      v[i] = x.x, v[i + 1] = x.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < NPT; ++i) v[i] = p[i];
  }
}

// Sum of 4 per-step values over the P lanes of a channel, scattered: lane q ends with the
// sum of step owner_step(q) (lanes q >= 4 hold copies). 3 shuffles, then log2(P/4) more.
template <int P, class T>
__device__ __forceinline__ T reduce_scatter4(const T (&v)[4], int lane) {
  const bool b0 = lane & 1;
  T k0 = b0 ? v[2] : v[0], k1 = b0 ? v[3] : v[1];
  const T s0 = b0 ? v[0] : v[2], s1 = b0 ? v[1] : v[3];
  k0 += __shfl_xor_sync(kFull, s0, 1);
  k1 += __shfl_xor_sync(kFull, s1, 1);
  const bool b1 = lane & 2;
  T k = b1 ? k1 : k0;
  k += __shfl_xor_sync(kFull, b1 ? k0 : k1, 2);
#pragma unroll
  for (int m = 4; m < P; m <<= 1) k += __shfl_xor_sync(kFull, k, m);
  return k;
}
__device__ __forceinline__ int imin(int x, int y) { return x < y ? x : y; }
__device__ __forceinline__ int owner_step(int q) { return ((q & 1) << 1) | ((q >> 1) & 1); }

// Sum over the channels of a warp (lane bits P..16) of v[M], scattered: each lane ends with
// S = max(1, M*P/32) sums, for the indices off .. off+S-1 of v (same on lanes that differ
// only in channel bits beyond the scatter).
template <int S, int M, int m, class T>
__device__ __forceinline__ void channel_rs(T (&v)[M], int lane, int& off) {
  if constexpr (m < 32) {
    if constexpr (S > 1) {
      const bool hi = lane & m;
#pragma unroll
      for (int r = 0; r < S / 2; ++r) {
        const T send = hi ? v[r] : v[r + S / 2];
        const T keep = hi ? v[r + S / 2] : v[r];
        v[r] = keep + __shfl_xor_sync(kFull, send, m);
      }
      off += hi ? S / 2 : 0;
      channel_rs<S / 2, M, m * 2>(v, lane, off);
    } else {
      v[0] += __shfl_xor_sync(kFull, v[0], m);
      channel_rs<1, M, m * 2>(v, lane, off);
    }
  }
}
template <int P, int M>
__host__ __device__ constexpr int channel_rs_count() {
  int s = M;
  for (int m = P; m < 32; m <<= 1) s = s > 1 ? s / 2 : 1;
  return s;
}

// ---------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------
template <class T>
struct FwdArgs {
  const T *u, *dt, *dt_bias, *A_log, *Bm, *Cm, *Dskip, *z;
  T *out, *chunk_states, *final_state;
  int64_t B, T_, D, N, chunk, n_chunks;
  int groups;
};

template <class T, class C>
constexpr size_t fwd_smem_bytes() {
  constexpr int TS = kFwdTile;
  return size_t(TS) * C::DG * sizeof(Rec4<T>)                          // records
         + 2 * size_t(3 * TS * C::DG + 2 * TS * C::NP) * sizeof(T)    // raw tiles x2
         + size_t(2 * C::DG) * sizeof(T);                               // dt_bias, Dskip
}

// One block: batch row b, channels [d0, d0+DG), all T steps.
template <class T, class C>
__global__ void __launch_bounds__(kThreads) scan_fwd_kernel(const FwdArgs<T> a) {
  constexpr int P = C::P, NPT = C::NPT, DG = C::DG, NP = C::NP, TS = kFwdTile;
  constexpr int RAW = 3 * TS * DG + 2 * TS * NP;
  extern __shared__ __align__(32) unsigned char smem[];
  Rec4<T>* rec = reinterpret_cast<Rec4<T>*>(smem);  // [TS][DG] {delta, delta*u, u, silu(z)}
  T* raw_base = reinterpret_cast<T*>(smem + size_t(TS) * DG * sizeof(Rec4<T>));
  T* prm = raw_base + 2 * RAW;  // dt_bias[DG], Dskip[DG]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int q = lane % P, c = warp * C::CPW + lane / P;
  const int64_t b = blockIdx.x / a.groups;
  const int64_t d0 = int64_t(blockIdx.x % a.groups) * DG, d = d0 + c;
  const int64_t D = a.D, N = a.N, T_ = a.T_;
  const bool dok = d < D;
  const bool has_z = a.z != nullptr;

  for (int i = tid; i < DG; i += kThreads) {
    const bool ok = d0 + i < D;
    prm[i] = ok ? a.dt_bias[d0 + i] : T(0);
    prm[DG + i] = ok ? a.Dskip[d0 + i] : T(0);
  }
  T A2[NPT], h[NPT];
#pragma unroll
  for (int i = 0; i < NPT; ++i) {
    const int64_t n = int64_t(q) * NPT + i;
    A2[i] = (dok && n < N) ? T(-exp(double(a.A_log[d * N + n])) * kDecayScale<T>) : T(0);
    h[i] = T(0);
  }
  const T dskip = dok ? a.Dskip[d] : T(0);

  auto load_tile = [&](int64_t tile, T* raw) {
    T *ru = raw, *rdt = raw + TS * DG, *rz = raw + 2 * TS * DG;
    T *rB = raw + 3 * TS * DG, *rC = rB + TS * NP;
    for (int e = tid; e < TS * DG; e += kThreads) {
      const int tr = e / DG, cc = e % DG;
      const int64_t t = tile * TS + tr, dd = d0 + cc;
      const bool ok = t < T_ && dd < D;
      const int64_t at = ok ? (b * T_ + t) * D + dd : 0;
      cp_async(ru + e, a.u + at, ok);
      cp_async(rdt + e, a.dt + at, ok);
      if (has_z) cp_async(rz + e, a.z + at, ok);
    }
    for (int e = tid; e < TS * NP; e += kThreads) {
      const int tr = e / NP, n = e % NP;
      const int64_t t = tile * TS + tr;
      const bool ok = t < T_ && n < N;
      const int64_t at = ok ? (b * T_ + t) * N + n : 0;
      cp_async(rB + e, a.Bm + at, ok);
      cp_async(rC + e, a.Cm + at, ok);
    }
  };

  const int64_t n_tiles = (T_ + TS - 1) / TS;
  int64_t next_ck = 0, ck = 0;  // next step whose incoming state is saved, its chunk index
  load_tile(0, raw_base);
  cp_async_commit();
  for (int64_t tile = 0; tile < n_tiles; ++tile) {
    T* raw = raw_base + (tile & 1) * RAW;
    cp_async_wait_all();
    __syncthreads();  // tile landed for every thread; the previous tile's records are done
    if (tile + 1 < n_tiles) load_tile(tile + 1, raw_base + ((tile + 1) & 1) * RAW);
    cp_async_commit();
    {
      const T *ru = raw, *rdt = raw + TS * DG, *rz = raw + 2 * TS * DG;
      for (int e = tid; e < TS * DG; e += kThreads) {
        const int tr = e / DG, cc = e % DG;
        Rec4<T> r{T(0), T(0), T(0), T(0)};
        if (tile * TS + tr < T_ && d0 + cc < D) {
          T delta, dsp;
          softplus_with_grad(rdt[e] + prm[cc], delta, dsp);
          const T uu = ru[e];
          T gate = T(1);
          if (has_z) {
            const T zz = rz[e];
            gate = zz * sigmoid(zz);
          }
          r = Rec4<T>{delta, delta * uu, uu, gate};
        }
        rec[e] = r;
      }
    }
    __syncthreads();
    const T* rB = raw + 3 * TS * DG;
    const T* rC = rB + TS * NP;
#pragma unroll 1
    for (int sub = 0; sub < TS / 4; ++sub) {
      const int64_t tb = tile * TS + sub * 4;
      if (tb >= T_) break;
      T y[4];
#pragma unroll
      for (int st = 0; st < 4; ++st) {
        const int64_t t = tb + st;
        if (a.chunk_states && t == next_ck && t < T_) {
#pragma unroll
          for (int i = 0; i < NPT; ++i) {
            const int64_t n = int64_t(q) * NPT + i;
            if (dok && n < N) a.chunk_states[((b * a.n_chunks + ck) * D + d) * N + n] = h[i];
          }
          next_ck += a.chunk;
          ++ck;
        }
        const Rec4<T> r = rec[(sub * 4 + st) * DG + c];
        T Bv[NPT], Cv[NPT];
        load_vec<T, NPT>(rB + (sub * 4 + st) * NP + q * NPT, Bv);
        load_vec<T, NPT>(rC + (sub * 4 + st) * NP + q * NPT, Cv);
        T acc = T(0);
#pragma unroll
        for (int i = 0; i < NPT; ++i) {
          const T dec = decay_exp(r.a * A2[i]);
          h[i] = fma(dec, h[i], r.b * Bv[i]);
          acc = fma(h[i], Cv[i], acc);
        }
        y[st] = acc;
      }
      const T ys = reduce_scatter4<P>(y, lane);
      if (q < 4 && a.out) {
        const int so = owner_step(q);
        const int64_t t = tb + so;
        if (dok && t < T_) {
          const Rec4<T> r = rec[(sub * 4 + so) * DG + c];
          a.out[(b * T_ + t) * D + d] = fma(dskip, r.c, ys) * r.d;
        }
      }
    }
  }
  if (a.final_state) {
#pragma unroll
    for (int i = 0; i < NPT; ++i) {
      const int64_t n = int64_t(q) * NPT + i;
      if (dok && n < N) a.final_state[(b * D + d) * N + n] = h[i];
    }
  }
}

// ---------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------
template <class T>
struct BwdArgs {
  const T *u, *dt, *dt_bias, *A_log, *Bm, *Cm, *Dskip, *z, *states, *dout;
  T *du, *ddt, *dz;
  T *partB, *partC;  // (B, groups, T, N): per channel group sums of dBm, dCm
  T* partP;          // (B, D*N + 2D): per batch row dA_log, ddt_bias, dDskip
  int64_t B, T_, D, N, L, n_chunks;  // L: steps per chunk of `states`
  int groups;
};

template <class T, class C>
struct BwdSmem {
  static constexpr int DG = C::DG, NP = C::NP;
  static constexpr int RAW = 4 * kSeg * DG + 2 * kSeg * NP;
  static constexpr size_t rec4 = 0;
  static constexpr size_t rec2 = rec4 + size_t(kSeg) * DG * sizeof(Rec4<T>);
  static constexpr size_t raw = rec2 + size_t(kSeg) * DG * sizeof(Rec2<T>);
  static constexpr size_t wB = raw + 2 * size_t(RAW) * sizeof(T);
  static constexpr size_t wC = wB + size_t(kWarps) * kSeg * NP * sizeof(T);
  static constexpr size_t prm = wC + size_t(kWarps) * kSeg * NP * sizeof(T);
  static constexpr size_t ckpt = prm + size_t(2 * DG) * sizeof(T);
  static size_t bytes(int64_t L) {  // checkpoints: ceil(L/4) x NPT x threads
    return ckpt + size_t((L + 3) / 4) * C::NPT * kThreads * sizeof(T);
  }
};

// One block: batch row b, channels [d0, d0+DG), chunks last to first. Its work items, in
// order: for each chunk, pass F over the segments ascending, then pass R descending (the
// last segment of pass F is reused by the first of pass R without restaging).
template <class T, class C>
__global__ void __launch_bounds__(kThreads) scan_bwd_kernel(const BwdArgs<T> a) {
  constexpr int P = C::P, NPT = C::NPT, DG = C::DG, NP = C::NP, M = 4 * NPT;
  using SM = BwdSmem<T, C>;
  constexpr int RAW = SM::RAW;
  extern __shared__ __align__(32) unsigned char smem[];
  Rec4<T>* rec4 = reinterpret_cast<Rec4<T>*>(smem + SM::rec4);  // {delta, delta*u, dy, u}
  Rec2<T>* rec2 = reinterpret_cast<Rec2<T>*>(smem + SM::rec2);  // {softplus', dout*silu'(z)}
  T* raw_base = reinterpret_cast<T*>(smem + SM::raw);  // 2 x {u, dt, z, dout [kSeg][DG]; B, C [kSeg][NP]}
  T* wB = reinterpret_cast<T*>(smem + SM::wB);         // [warp][kSeg][NP] per-warp dB sums
  T* wC = reinterpret_cast<T*>(smem + SM::wC);
  T* prm = reinterpret_cast<T*>(smem + SM::prm);       // dt_bias[DG], Dskip[DG]
  T* ckpt = reinterpret_cast<T*>(smem + SM::ckpt);     // [sub-tile][NPT][thread]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int q = lane % P, c = warp * C::CPW + lane / P;
  const int64_t b = blockIdx.x / a.groups;
  const int g = blockIdx.x % a.groups;
  const int64_t d0 = int64_t(g) * DG, d = d0 + c;
  const int64_t D = a.D, N = a.N, T_ = a.T_, L = a.L;
  const bool dok = d < D;
  const bool has_z = a.z != nullptr;

  for (int i = tid; i < DG; i += kThreads) {
    const bool ok = d0 + i < D;
    prm[i] = ok ? a.dt_bias[d0 + i] : T(0);
    prm[DG + i] = ok ? a.Dskip[d0 + i] : T(0);
  }
  T A[NPT], A2[NPT], dA[NPT], carry[NPT], h[NPT];
#pragma unroll
  for (int i = 0; i < NPT; ++i) {
    const int64_t n = int64_t(q) * NPT + i;
    const double av = (dok && n < N) ? -exp(double(a.A_log[d * N + n])) : 0.0;
    A[i] = T(av);
    A2[i] = T(av * kDecayScale<T>);
    dA[i] = carry[i] = h[i] = T(0);
  }
  const T dskip = dok ? a.Dskip[d] : T(0);
  T dbias_acc = T(0), dD_acc = T(0);

  auto chunk_len = [&](int64_t ci) { return int(L < T_ - ci * L ? L : T_ - ci * L); };
  auto load_seg = [&](int64_t ci, int seg, T* raw) {
    const int64_t t0 = ci * L + seg * kSeg;
    const int lim = imin(kSeg, chunk_len(ci) - seg * kSeg);  // steps of this segment
    T* dsts[4] = {raw, raw + kSeg * DG, raw + 2 * kSeg * DG, raw + 3 * kSeg * DG};
    const T* srcs[4] = {a.u, a.dt, a.z, a.dout};
    for (int e = tid; e < kSeg * DG; e += kThreads) {
      const int tr = e / DG, cc = e % DG;
      const bool ok = tr < lim && d0 + cc < D;
      const int64_t at = ok ? (b * T_ + t0 + tr) * D + d0 + cc : 0;
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (srcs[k]) cp_async(dsts[k] + e, srcs[k] + at, ok);
    }
    T* rB = raw + 4 * kSeg * DG;
    T* rC = rB + kSeg * NP;
    for (int e = tid; e < kSeg * NP; e += kThreads) {
      const int tr = e / NP, n = e % NP;
      const bool ok = tr < lim && n < N;
      const int64_t at = ok ? (b * T_ + t0 + tr) * N + n : 0;
      cp_async(rB + e, a.Bm + at, ok);
      cp_async(rC + e, a.Cm + at, ok);
    }
  };
  auto transform = [&](int64_t ci, int seg, const T* raw) {
    const int lim = imin(kSeg, chunk_len(ci) - seg * kSeg);
    const T *ru = raw, *rdt = raw + kSeg * DG, *rz = raw + 2 * kSeg * DG, *rdo = raw + 3 * kSeg * DG;
    for (int e = tid; e < kSeg * DG; e += kThreads) {
      const int tr = e / DG, cc = e % DG;
      Rec4<T> r{T(0), T(0), T(0), T(0)};
      Rec2<T> r2{T(0), T(0)};
      if (tr < lim && d0 + cc < D) {
        T delta, dsp;
        softplus_with_grad(rdt[e] + prm[cc], delta, dsp);
        const T uu = ru[e], dout = rdo[e];
        T dy = dout, gate = T(0);
        if (has_z) {
          const T zz = rz[e], sg = sigmoid(zz);
          dy = dout * (zz * sg);
          gate = dout * (sg * fma(zz, T(1) - sg, T(1)));  // dout * silu'(z)
        }
        r = Rec4<T>{delta, delta * uu, dy, uu};
        r2 = Rec2<T>{dsp, gate};
      }
      rec4[e] = r;
      rec2[e] = r2;
    }
  };

  // Pass F over segment `seg` of chunk ci: states from the chunk start, checkpoints, dz.
  auto pass_f = [&](int64_t ci, int seg, const T* raw) {
    const int len = chunk_len(ci);
    const T* rB = raw + 4 * kSeg * DG;
    const T* rC = rB + kSeg * NP;
    if (seg == 0) {
#pragma unroll
      for (int i = 0; i < NPT; ++i) {
        const int64_t n = int64_t(q) * NPT + i;
        h[i] = (dok && n < N) ? a.states[((b * a.n_chunks + ci) * D + d) * N + n] : T(0);
      }
    }
#pragma unroll 1
    for (int sub = 0; sub < kSeg / 4; ++sub) {
      const int sg = seg * (kSeg / 4) + sub, st0 = sg * 4;
      if (st0 >= len) break;
#pragma unroll
      for (int i = 0; i < NPT; ++i) ckpt[(sg * NPT + i) * kThreads + tid] = h[i];
      T y[4];
#pragma unroll
      for (int st = 0; st < 4; ++st) {
        const Rec4<T> r = rec4[(sub * 4 + st) * DG + c];
        T Bv[NPT], Cv[NPT];
        load_vec<T, NPT>(rB + (sub * 4 + st) * NP + q * NPT, Bv);
        T acc = T(0);
        if (has_z) load_vec<T, NPT>(rC + (sub * 4 + st) * NP + q * NPT, Cv);
#pragma unroll
        for (int i = 0; i < NPT; ++i) {
          const T dec = decay_exp(r.a * A2[i]);
          h[i] = fma(dec, h[i], r.b * Bv[i]);
          if (has_z) acc = fma(h[i], Cv[i], acc);
        }
        y[st] = acc;
      }
      if (has_z) {
        const T ys = reduce_scatter4<P>(y, lane);
        if (q < 4) {
          const int so = owner_step(q), tc = st0 + so;
          if (dok && tc < len) {
            const Rec4<T> r = rec4[(sub * 4 + so) * DG + c];
            const Rec2<T> r2 = rec2[(sub * 4 + so) * DG + c];
            a.dz[(b * T_ + ci * L + tc) * D + d] = fma(dskip, r.d, ys) * r2.b;
          }
        }
      }
    }
  };

  // Pass R over segment `seg` of chunk ci, sub-tiles last to first.
  auto pass_r = [&](int64_t ci, int seg, const T* raw) {
    const int len = chunk_len(ci);
    const T* rB = raw + 4 * kSeg * DG;
    const T* rC = rB + kSeg * NP;
    constexpr int S = channel_rs_count<P, M>();
#pragma unroll 1
    for (int sub = kSeg / 4 - 1; sub >= 0; --sub) {
      const int sg = seg * (kSeg / 4) + sub, st0 = sg * 4;
      if (st0 >= len) continue;
      // Recompute the 4 states of the sub-tile from its checkpoint.
      T hh[5][NPT], dec[4][NPT], delta[4], du_[4], dy[4];
#pragma unroll
      for (int i = 0; i < NPT; ++i) hh[0][i] = ckpt[(sg * NPT + i) * kThreads + tid];
#pragma unroll
      for (int st = 0; st < 4; ++st) {
        const Rec4<T> r = rec4[(sub * 4 + st) * DG + c];
        delta[st] = r.a, du_[st] = r.b, dy[st] = r.c;
        T Bv[NPT];
        load_vec<T, NPT>(rB + (sub * 4 + st) * NP + q * NPT, Bv);
#pragma unroll
        for (int i = 0; i < NPT; ++i) {
          dec[st][i] = decay_exp(r.a * A2[i]);
          hh[st + 1][i] = fma(dec[st][i], hh[st][i], r.b * Bv[i]);
        }
      }
      T v[M];
      // dC_t[n] = dy_t * h_t[n], summed over the block's channels.
#pragma unroll
      for (int st = 0; st < 4; ++st)
#pragma unroll
        for (int i = 0; i < NPT; ++i) v[st * NPT + i] = dy[st] * hh[st + 1][i];
      {
        int off = 0;
        channel_rs<M, M, P>(v, lane, off);
#pragma unroll
        for (int r = 0; r < S; ++r) {
          const int j = off + r;
          wC[(warp * kSeg + sub * 4 + j / NPT) * NP + q * NPT + j % NPT] = v[r];
        }
      }
      // Reverse recurrence.
      T GB[4], wA[4];
#pragma unroll
      for (int st = 3; st >= 0; --st) {
        T Bv[NPT], Cv[NPT];
        load_vec<T, NPT>(rB + (sub * 4 + st) * NP + q * NPT, Bv);
        load_vec<T, NPT>(rC + (sub * 4 + st) * NP + q * NPT, Cv);
        T gb = T(0), wa = T(0);
#pragma unroll
        for (int i = 0; i < NPT; ++i) {
          const T G = fma(dy[st], Cv[i], carry[i]);  // dL/dh_t
          v[st * NPT + i] = G * du_[st];             // dB_t[n] part
          gb = fma(G, Bv[i], gb);
          carry[i] = dec[st][i] * G;
          const T w = carry[i] * hh[st][i];
          wa = fma(w, A[i], wa);
          dA[i] = fma(w, delta[st], dA[i]);
        }
        GB[st] = gb;
        wA[st] = wa;
      }
      const T gbs = reduce_scatter4<P>(GB, lane);
      const T was = reduce_scatter4<P>(wA, lane);
      if (q < 4) {
        const int so = owner_step(q), tc = st0 + so;
        if (dok && tc < len) {
          const Rec4<T> r = rec4[(sub * 4 + so) * DG + c];
          const Rec2<T> r2 = rec2[(sub * 4 + so) * DG + c];
          const int64_t at = (b * T_ + ci * L + tc) * D + d;
          const T ddt = fma(r.d, gbs, was) * r2.a;
          a.du[at] = fma(r.c, dskip, r.a * gbs);
          a.ddt[at] = ddt;
          dbias_acc += ddt;
          dD_acc = fma(r.c, r.d, dD_acc);
        }
      }
      {
        int off = 0;
        channel_rs<M, M, P>(v, lane, off);
#pragma unroll
        for (int r = 0; r < S; ++r) {
          const int j = off + r;
          wB[(warp * kSeg + sub * 4 + j / NPT) * NP + q * NPT + j % NPT] = v[r];
        }
      }
    }
    __syncthreads();
    // The segment's dB/dC sums over the block's warps, in warp order, to the group's partial.
    const int lim = imin(kSeg, len - seg * kSeg);
    const int64_t t0 = ci * L + seg * kSeg;
    for (int e = tid; e < lim * N; e += kThreads) {
      const int tr = e / int(N), n = e % int(N);
      T sb = T(0), sc = T(0);
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        sb += wB[(w * kSeg + tr) * NP + n];
        sc += wC[(w * kSeg + tr) * NP + n];
      }
      const int64_t at = ((b * a.groups + g) * T_ + t0 + tr) * N + n;
      a.partB[at] = sb;
      a.partC[at] = sc;
    }
  };

  auto n_segs = [&](int64_t ci) { return (chunk_len(ci) + kSeg - 1) / kSeg; };
  int64_t ci = a.n_chunks - 1;
  int seg = 0;
  bool rev = false, reuse = false;
  int buf = 0;
  load_seg(ci, 0, raw_base);
  cp_async_commit();
  for (;;) {
    cp_async_wait_all();
    __syncthreads();  // this item's data landed; the previous item is done with every buffer
    // The next work item.
    int64_t nci = ci;
    int nseg = seg;
    bool nrev = rev, has_next = true;
    if (!rev) {
      if (seg + 1 < n_segs(ci)) nseg = seg + 1;
      else nrev = true;  // same segment, now backwards
    } else if (seg > 0) {
      nseg = seg - 1;
    } else if (ci > 0) {
      nci = ci - 1, nseg = 0, nrev = false;
    } else {
      has_next = false;
    }
    const bool next_reuses = has_next && !rev && nrev;
    if (has_next && !next_reuses) load_seg(nci, nseg, raw_base + (buf ^ 1) * RAW);
    cp_async_commit();
    const T* raw = raw_base + buf * RAW;
    if (!reuse) {
      transform(ci, seg, raw);
      __syncthreads();
    }
    if (!rev) pass_f(ci, seg, raw);
    else pass_r(ci, seg, raw);
    if (!has_next) break;
    ci = nci, seg = nseg, rev = nrev;
    if (!next_reuses) buf ^= 1;
    reuse = next_reuses;
  }

  // Parameter partials of this batch row: dA_log = dA * A; ddt_bias, dDskip summed over
  // the channel's lanes (only lanes q < 4 accumulated).
  const int64_t ps = D * N + 2 * D;
  T* part = a.partP + b * ps;
#pragma unroll
  for (int i = 0; i < NPT; ++i) {
    const int64_t n = int64_t(q) * NPT + i;
    if (dok && n < N) part[d * N + n] = dA[i] * A[i];
  }
#pragma unroll
  for (int m = 1; m < P; m <<= 1) {
    dbias_acc += __shfl_xor_sync(kFull, dbias_acc, m);
    dD_acc += __shfl_xor_sync(kFull, dD_acc, m);
  }
  if (q == 0 && dok) {
    part[D * N + d] = dbias_acc;
    part[D * N + D + d] = dD_acc;
  }
}

// dBm, dCm (B,T,N) = sums of the groups' partials in group order (written).
template <class T>
__global__ void reduce_groups_kernel(const T* __restrict__ partB, const T* __restrict__ partC,
                                     T* __restrict__ dBm, T* __restrict__ dCm, int64_t B,
                                     int64_t TN, int groups) {
  const int64_t total = B * TN;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / TN, r = i % TN;
    T sb = T(0), sc = T(0);
    for (int g = 0; g < groups; ++g) {
      sb += partB[(b * groups + g) * TN + r];
      sc += partC[(b * groups + g) * TN + r];
    }
    dBm[i] = sb;
    dCm[i] = sc;
  }
}

// dA_log (D,N), ddt_bias (D), dDskip (D) += sums of the batch rows' partials in row order.
template <class T>
__global__ void reduce_params_kernel(const T* __restrict__ partP, T* dA_log, T* ddt_bias,
                                     T* dDskip, int64_t B, int64_t D, int64_t N) {
  const int64_t ps = D * N + 2 * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < ps;
       i += int64_t(gridDim.x) * blockDim.x) {
    T s = T(0);
    for (int64_t b = 0; b < B; ++b) s += partP[b * ps + i];
    if (i < D * N) dA_log[i] += s;
    else if (i < D * N + D) ddt_bias[i - D * N] += s;
    else dDskip[i - D * N - D] += s;
  }
}

int64_t num_chunks(const ScanShape& s) { return (s.T + s.chunk - 1) / s.chunk; }

unsigned grid_1d(int64_t n, int block) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>((n + block - 1) / block, 8192)));
}

// ---------------------------------------------------------------------------------------
// Launchers
// ---------------------------------------------------------------------------------------
template <class T, class C>
void launch_forward(const FwdArgs<T>& a, cudaStream_t stream) {
  const char* op = "selective_scan_forward";
  constexpr size_t smem = fwd_smem_bytes<T, C>();
  static std::once_flag once;
  std::call_once(once, [&] {
    check_cuda(cudaFuncSetAttribute(scan_fwd_kernel<T, C>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
               op, "cudaFuncSetAttribute(max dynamic shared memory)");
  });
  const int64_t blocks = a.B * a.groups;
  MG_CHECK(blocks <= 0x7fffffff, "[cuda selective_scan] {}: B*ceil(D/{}) = {} blocks is too many",
           op, C::DG, blocks);
  scan_fwd_kernel<T, C><<<unsigned(blocks), kThreads, smem, stream>>>(a);
  check_launch(op, "scan_fwd_kernel");
}

template <class T, class C>
void launch_backward(const BwdArgs<T>& a, cudaStream_t stream) {
  const char* op = "selective_scan_backward";
  using SM = BwdSmem<T, C>;
  static std::once_flag once;
  std::call_once(once, [&] {
    check_cuda(cudaFuncSetAttribute(scan_bwd_kernel<T, C>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(SM::bytes(kMaxWorkChunk))),
               op, "cudaFuncSetAttribute(max dynamic shared memory)");
  });
  const int64_t blocks = a.B * a.groups;
  MG_CHECK(blocks <= 0x7fffffff, "[cuda selective_scan] {}: B*ceil(D/{}) = {} blocks is too many",
           op, C::DG, blocks);
  scan_bwd_kernel<T, C><<<unsigned(blocks), kThreads, SM::bytes(a.L), stream>>>(a);
  check_launch(op, "scan_bwd_kernel");
}

// Calls f(Cfg<T, P, NPT>{}) for the configuration serving N.
template <class T, class F>
void with_config(int64_t N, const char* op, F&& f) {
  if constexpr (std::is_same<T, float>::value) {
    if (N <= 4) return f(Cfg<T, 4, 1>{});
    if (N <= 8) return f(Cfg<T, 4, 2>{});
    if (N <= 16) return f(Cfg<T, 4, 4>{});
    if (N <= 32) return f(Cfg<T, 8, 4>{});
    if (N <= 64) return f(Cfg<T, 16, 4>{});
    if (N <= 128) return f(Cfg<T, 32, 4>{});
  } else {
    if (N <= 4) return f(Cfg<T, 4, 1>{});
    if (N <= 8) return f(Cfg<T, 4, 2>{});
    if (N <= 16) return f(Cfg<T, 8, 2>{});
    if (N <= 32) return f(Cfg<T, 16, 2>{});
    if (N <= 64) return f(Cfg<T, 32, 2>{});
  }
  MG_CHECK(false, "[cuda selective_scan] {}: d_state N={} is not supported on the GPU (at most {})",
           op, N, std::is_same<T, float>::value ? 128 : 64);
}

void check_shape(const ScanShape& s, const char* op) {
  MG_CHECK(s.B >= 1 && s.T >= 1 && s.D >= 1 && s.N >= 1,
           "[cuda selective_scan] {}: shape B={} T={} D={} N={}: every dimension must be >= 1", op,
           s.B, s.T, s.D, s.N);
  MG_CHECK(s.chunk >= 1, "[cuda selective_scan] {}: chunk={} must be >= 1", op, s.chunk);
  MG_CHECK(s.T <= (int64_t(1) << 40) && s.D <= (int64_t(1) << 30),
           "[cuda selective_scan] {}: shape T={} D={} too large", op, s.T, s.D);
}

template <class T, class C>
FwdArgs<T> forward_args(const ScanShape& s, const T* u, const T* dt, const T* dt_bias,
                        const T* A_log, const T* Bm, const T* Cm, const T* Dskip, const T* z,
                        T* out, T* chunk_states, T* final_state) {
  return FwdArgs<T>{u,    dt,  dt_bias, A_log, Bm,  Cm,      Dskip,        z,
                    out,  chunk_states, final_state, s.B, s.T, s.D, s.N, s.chunk,
                    num_chunks(s), int((s.D + C::DG - 1) / C::DG)};
}

}  // namespace

template <class T>
void selective_scan_forward(const ScanShape& s, const T* u, const T* dt, const T* dt_bias,
                            const T* A_log, const T* Bm, const T* Cm, const T* Dskip,
                            const T* z, T* out, T* chunk_states, T* final_state) {
  const char* op = "selective_scan_forward";
  require("cuda selective_scan");
  check_shape(s, op);
  for (auto [p, name] : {std::pair<const void*, const char*>{u, "u"}, {dt, "dt"},
                         {dt_bias, "dt_bias"}, {A_log, "A_log"}, {Bm, "Bm"}, {Cm, "Cm"},
                         {Dskip, "Dskip"}, {out, "out"}})
    check_ptr(p, op, name);
  const cudaStream_t stream = static_cast<cudaStream_t>(mg::cuda::stream());
  with_config<T>(s.N, op, [&](auto cfg) {
    using C = decltype(cfg);
    launch_forward<T, C>(forward_args<T, C>(s, u, dt, dt_bias, A_log, Bm, Cm, Dskip, z, out,
                                            chunk_states, final_state),
                         stream);
  });
}

template <class T>
void selective_scan_backward(const ScanShape& s, const T* u, const T* dt, const T* dt_bias,
                             const T* A_log, const T* Bm, const T* Cm, const T* Dskip,
                             const T* z, const T* chunk_states, const T* dout, T* du, T* ddt,
                             T* ddt_bias, T* dA_log, T* dBm, T* dCm, T* dDskip, T* dz) {
  const char* op = "selective_scan_backward";
  require("cuda selective_scan");
  check_shape(s, op);
  for (auto [p, name] : {std::pair<const void*, const char*>{u, "u"}, {dt, "dt"},
                         {dt_bias, "dt_bias"}, {A_log, "A_log"}, {Bm, "Bm"}, {Cm, "Cm"},
                         {Dskip, "Dskip"}, {chunk_states, "chunk_states (from selective_scan_forward)"},
                         {dout, "dout"}, {du, "du"}, {ddt, "ddt"}, {ddt_bias, "ddt_bias"},
                         {dA_log, "dA_log"}, {dBm, "dBm"}, {dCm, "dCm"}, {dDskip, "dDskip"}})
    check_ptr(p, op, name);
  if (z) check_ptr(dz, op, "dz (z was given)");
  const cudaStream_t stream = static_cast<cudaStream_t>(mg::cuda::stream());
  with_config<T>(s.N, op, [&](auto cfg) {
    using C = decltype(cfg);
    const int64_t B = s.B, T_ = s.T, D = s.D, N = s.N;
    const int groups = int((D + C::DG - 1) / C::DG);
    // Chunks longer than kMaxWorkChunk: re-run the forward with that chunk into scratch
    // states (the same recurrence, so the same states) and recompute from those.
    const bool rechunk = s.chunk > kMaxWorkChunk;
    ScanShape ws = s;
    if (rechunk) ws.chunk = kMaxWorkChunk;
    const int64_t n_chunks = num_chunks(ws);
    const size_t part_bc = size_t(B * groups * T_ * N), part_p = size_t(B * (D * N + 2 * D));
    const size_t states_elems = rechunk ? size_t(B * n_chunks * D * N) : 0;
    Scratch scratch((2 * part_bc + part_p + states_elems) * sizeof(T));
    T* partB = static_cast<T*>(scratch.p);
    T* partC = partB + part_bc;
    T* partP = partC + part_bc;
    const T* states = chunk_states;
    if (rechunk) {
      T* st = partP + part_p;
      // `out` is not needed: pass nullptr (the kernel skips the writes).
      launch_forward<T, C>(forward_args<T, C>(ws, u, dt, dt_bias, A_log, Bm, Cm, Dskip, z,
                                              nullptr, st, nullptr),
                           stream);
      states = st;
    }
    const BwdArgs<T> a{u,     dt,    dt_bias, A_log, Bm, Cm,       Dskip, z, states, dout,
                       du,    ddt,   z ? dz : nullptr, partB, partC, partP,
                       B,     T_,    D,       N,     ws.chunk, n_chunks, groups};
    launch_backward<T, C>(a, stream);
    reduce_groups_kernel<T><<<grid_1d(B * T_ * N, 256), 256, 0, stream>>>(partB, partC, dBm, dCm,
                                                                           B, T_ * N, groups);
    check_launch(op, "reduce_groups_kernel");
    reduce_params_kernel<T><<<grid_1d(D * N + 2 * D, 256), 256, 0, stream>>>(
        partP, dA_log, ddt_bias, dDskip, B, D, N);
    check_launch(op, "reduce_params_kernel");
  });
}

template void selective_scan_forward<float>(const ScanShape&, const float*, const float*,
                                            const float*, const float*, const float*,
                                            const float*, const float*, const float*, float*,
                                            float*, float*);
template void selective_scan_forward<double>(const ScanShape&, const double*, const double*,
                                             const double*, const double*, const double*,
                                             const double*, const double*, const double*,
                                             double*, double*, double*);
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

}  // namespace mg::cuda
