#pragma once
// Building blocks shared by the op kernels of cuda/*.cu (CUDA code only, internal):
// grid-stride loops, device math overloads for float/double, warp/block reductions, row
// kernels (a warp or a block per row) and DETERMINISTIC whole-tensor and column reductions.
//
// Determinism: no floating-point atomics. Every reduction sums in a fixed order that depends
// only on the problem size (never on the GPU's SM count or on timing): per-thread strided
// partials, then a fixed shuffle tree, then (across blocks) partials written to a scratch
// buffer and summed in block order by a second kernel. The same inputs give the same bits on
// every run and every GPU of the same architecture.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda/check.h"
#include "cuda/launch.cuh"
#include "cuda/runtime.h"

namespace mg::cuda::detail {

// for (int64_t i = ...; i < n; ...) over the whole grid.
#define MG_GRID_STRIDE(i, n)                                                        \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < int64_t(n); \
       i += int64_t(gridDim.x) * blockDim.x)

// --- device math, one name for float and double (no fast-math: IEEE division and sqrt) ----
__device__ __forceinline__ float d_exp(float x) { return expf(x); }
__device__ __forceinline__ double d_exp(double x) { return ::exp(x); }
__device__ __forceinline__ float d_log(float x) { return logf(x); }
__device__ __forceinline__ double d_log(double x) { return ::log(x); }
__device__ __forceinline__ float d_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double d_log1p(double x) { return ::log1p(x); }
__device__ __forceinline__ float d_erf(float x) { return erff(x); }
__device__ __forceinline__ double d_erf(double x) { return ::erf(x); }
__device__ __forceinline__ float d_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double d_sqrt(double x) { return ::sqrt(x); }
template <class T> __device__ __forceinline__ T d_neg_inf() { return -INFINITY; }
template <> __device__ __forceinline__ double d_neg_inf<double>() { return -HUGE_VAL; }

// --- reductions -----------------------------------------------------------------------
constexpr unsigned kFullMask = 0xffffffffu;

template <class V>
__device__ __forceinline__ V shfl_xor(V v, int lane_mask) {
  return __shfl_xor_sync(kFullMask, v, lane_mask);
}

// Running (max, sum of exp(x - max)) for an online logsumexp. Trivial type (shared memory).
template <class T>
struct MaxSum {
  T m;
  T s;
};
template <class T>
__device__ __forceinline__ MaxSum<T> shfl_xor(MaxSum<T> v, int lane_mask) {
  return {__shfl_xor_sync(kFullMask, v.m, lane_mask), __shfl_xor_sync(kFullMask, v.s, lane_mask)};
}
template <class T>
__device__ __forceinline__ MaxSum<T> maxsum_init() {
  return {d_neg_inf<T>(), T(0)};
}
template <class T>
__device__ __forceinline__ void maxsum_add(MaxSum<T>& a, T x) {
  if (x > a.m) {
    a.s = a.s * d_exp(a.m - x) + T(1);  // a.m = -inf: 0 * 0 + 1
    a.m = x;
  } else if (x != d_neg_inf<T>()) {
    a.s += d_exp(x - a.m);
  }
}

struct SumOp {
  template <class V> __device__ __forceinline__ V operator()(V a, V b) const { return a + b; }
};
struct MaxSumOp {  // symmetric: op(a, b) and op(b, a) give the same bits
  template <class T>
  __device__ __forceinline__ MaxSum<T> operator()(MaxSum<T> a, MaxSum<T> b) const {
    if (a.m == d_neg_inf<T>()) return b;
    if (b.m == d_neg_inf<T>()) return a;
    const T m = a.m > b.m ? a.m : b.m;
    return {m, a.s * d_exp(a.m - m) + b.s * d_exp(b.m - m)};
  }
};

// All-reduce over a group of G threads (G = 32: a warp; G = kBlock: the whole block, which
// must then be exactly kBlock threads and reach this call together). Every thread of the
// group gets the same bits: a butterfly of a commutative op, then warp results in order.
template <int G, class V, class Op>
__device__ __forceinline__ V group_reduce(V v, Op op) {
  static_assert(G == 32 || G == kBlock, "group is a warp or a block");
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, shfl_xor(v, o));
  if constexpr (G > 32) {
    __shared__ V warp_vals[G / 32];
    __syncthreads();  // earlier readers of warp_vals are done
    if (threadIdx.x % 32 == 0) warp_vals[threadIdx.x / 32] = v;
    __syncthreads();
    v = warp_vals[0];
#pragma unroll
    for (int k = 1; k < G / 32; ++k) v = op(v, warp_vals[k]);
  }
  return v;
}

// --- row kernels: G threads per row (a warp for rows up to 1024, else a block) ------------
// Inside a kernel templated on <int G>: `row` and `lane`; returns for rows past M (a whole
// warp or block at once, so group_reduce stays safe).
#define MG_ROW_SETUP(G, M)                                                          \
  const int64_t row = blockIdx.x * int64_t(kBlock / (G)) + threadIdx.x / (G);       \
  const int lane = static_cast<int>(threadIdx.x % (G));                             \
  if (row >= int64_t(M)) return;

// Calls launch(std::integral_constant<int, G>{}, grid) with kBlock threads a block.
template <class F>
void launch_rows(int64_t M, int64_t N, F&& launch) {
  if (M <= 0) return;
  if (N > 1024) {
    launch(std::integral_constant<int, kBlock>{}, static_cast<unsigned>(M));
  } else {
    constexpr int kRowsPerBlock = kBlock / 32;
    launch(std::integral_constant<int, 32>{}, static_cast<unsigned>((M + kRowsPerBlock - 1) / kRowsPerBlock));
  }
}

// Device scratch from the caching pool, returned stream-ordered (safe after queued kernels).
template <class T>
struct Scratch {
  explicit Scratch(size_t n) : ptr(static_cast<T*>(device_alloc(std::max<size_t>(n, 1) * sizeof(T)))) {}
  ~Scratch() { device_free(ptr); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* ptr;
};

// --- whole-tensor sum: store(sum_{i<n} load(i)) in Acc --------------------------------------
template <class Acc, class Load>
__global__ void partial_sum_kernel(int64_t n, Load load, Acc* partial) {
  Acc acc = 0;
  MG_GRID_STRIDE(i, n) acc += static_cast<Acc>(load(i));
  acc = group_reduce<kBlock>(acc, SumOp{});
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

template <class Acc, class Store>
__global__ void final_sum_kernel(const Acc* partial, int nparts, Store store) {
  Acc acc = 0;
  for (int i = threadIdx.x; i < nparts; i += blockDim.x) acc += partial[i];
  acc = group_reduce<kBlock>(acc, SumOp{});
  if (threadIdx.x == 0) store(acc);
}

// The block count depends on n only: the same summation tree on any GPU.
template <class Acc, class Load, class Store>
void full_sum(int64_t n, Load load, Store store) {
  const int64_t per_block = int64_t(kBlock) * 8;
  const int blocks = static_cast<int>(std::min<int64_t>(std::max<int64_t>(1, (n + per_block - 1) / per_block), 1024));
  Scratch<Acc> partial(blocks);
  partial_sum_kernel<Acc><<<blocks, kBlock, 0, compute_stream()>>>(n, load, partial.ptr);
  MG_CUDA_CHECK_LAUNCH("partial_sum_kernel");
  final_sum_kernel<Acc><<<1, kBlock, 0, compute_stream()>>>(partial.ptr, blocks, store);
  MG_CUDA_CHECK_LAUNCH("final_sum_kernel");
}

// --- column sums: store(j, sum_{r<M} load(r, j)) for j < N, in Acc --------------------------
// Blocks of 32 columns x 8 row lanes over a chunk of rows (coalesced over j); the 8 lanes are
// combined in order; with several row chunks, each writes its partial row to scratch and a
// second kernel adds the chunks in order.
constexpr int kColTile = 32, kColLanes = 8;

template <class Acc, class Load, class Store>
__global__ void colsum_kernel(int64_t M, int64_t N, int64_t rows_per_chunk, Load load, Store store,
                              Acc* partial) {
  __shared__ Acc sh[kColLanes][kColTile];
  const int tx = threadIdx.x % kColTile, ty = threadIdx.x / kColTile;
  const int64_t j = blockIdx.x * int64_t(kColTile) + tx;
  const int64_t r0 = blockIdx.y * rows_per_chunk, r1 = std::min(M, r0 + rows_per_chunk);
  Acc acc = 0;
  if (j < N)
    for (int64_t r = r0 + ty; r < r1; r += kColLanes) acc += static_cast<Acc>(load(r, j));
  sh[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && j < N) {
    Acc s = sh[0][tx];
#pragma unroll
    for (int k = 1; k < kColLanes; ++k) s += sh[k][tx];
    if (partial) partial[blockIdx.y * N + j] = s;
    else store(j, s);
  }
}

template <class Acc, class Store>
__global__ void colsum_chunks_kernel(const Acc* partial, int64_t chunks, int64_t N, Store store) {
  MG_GRID_STRIDE(j, N) {
    Acc s = partial[j];
    for (int64_t c = 1; c < chunks; ++c) s += partial[c * N + j];
    store(j, s);
  }
}

template <class Acc, class Load, class Store>
void colsum(int64_t M, int64_t N, Load load, Store store) {
  if (N <= 0) return;
  const int64_t col_blocks = (N + kColTile - 1) / kColTile;
  // Enough blocks to fill the GPU, at least 64 rows a chunk; a function of (M, N) only.
  int64_t chunks = std::min<int64_t>({std::max<int64_t>(1, (M + 63) / 64),
                                      std::max<int64_t>(1, 2048 / col_blocks), 65535});
  const int64_t rows_per_chunk = std::max<int64_t>(1, (M + chunks - 1) / chunks);
  chunks = std::max<int64_t>(1, (M + rows_per_chunk - 1) / rows_per_chunk);
  MG_CHECK(col_blocks <= 0x7fffffff, "[cuda colsum] {} columns is too many", N);
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks));
  if (chunks == 1) {
    colsum_kernel<Acc><<<grid, kColTile * kColLanes, 0, compute_stream()>>>(M, N, rows_per_chunk, load,
                                                                            store, static_cast<Acc*>(nullptr));
    MG_CUDA_CHECK_LAUNCH("colsum_kernel");
    return;
  }
  Scratch<Acc> partial(static_cast<size_t>(chunks * N));
  colsum_kernel<Acc><<<grid, kColTile * kColLanes, 0, compute_stream()>>>(M, N, rows_per_chunk, load, store,
                                                                          partial.ptr);
  MG_CUDA_CHECK_LAUNCH("colsum_kernel");
  colsum_chunks_kernel<Acc><<<grid_for(static_cast<size_t>(N)), kBlock, 0, compute_stream()>>>(partial.ptr, chunks,
                                                                                               N, store);
  MG_CUDA_CHECK_LAUNCH("colsum_chunks_kernel");
}

// Common store functors.
template <class T>
struct AddToIndex {  // dst[j] += v
  T* dst;
  template <class Acc> __device__ void operator()(int64_t j, Acc v) const { dst[j] += static_cast<T>(v); }
};
template <class T>
struct SetIndex {  // dst[j] = v
  T* dst;
  template <class Acc> __device__ void operator()(int64_t j, Acc v) const { dst[j] = static_cast<T>(v); }
};

}  // namespace mg::cuda::detail
