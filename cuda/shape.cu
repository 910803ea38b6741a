// Column-range copies and the batched transpose (cuda/shape.h); the transpose goes through a
// 32 x 33 shared tile so both its reads and its writes are coalesced.
#include "cuda/kernel_util.cuh"
#include "cuda/shape.h"

namespace mg::cuda {

using namespace detail;

namespace {

template <class T, bool ACC>
__global__ void copy_columns_kernel(const T* src, int64_t src_ld, int64_t src_off, T* dst, int64_t dst_ld,
                                    int64_t dst_off, int64_t M, int64_t width) {
  MG_GRID_STRIDE(k, M * width) {
    const int64_t i = k / width, j = k - i * width;
    const T v = src[i * src_ld + src_off + j];
    T& d = dst[i * dst_ld + dst_off + j];
    if constexpr (ACC) d += v;
    else d = v;
  }
}

constexpr int kTile = 32, kTileRows = 8;

template <class T, bool ACC>
__global__ void transpose_kernel(const T* src, T* dst, int64_t nb, int64_t R, int64_t S) {
  __shared__ T tile[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t s0 = blockIdx.x * int64_t(kTile), r0 = blockIdx.y * int64_t(kTile);
  for (int64_t b = blockIdx.z; b < nb; b += gridDim.z) {
    const T* in = src + b * R * S;
    T* out = dst + b * R * S;
    for (int k = ty; k < kTile; k += kTileRows) {
      const int64_t r = r0 + k, s = s0 + tx;
      if (r < R && s < S) tile[k][tx] = in[r * S + s];
    }
    __syncthreads();
    for (int k = ty; k < kTile; k += kTileRows) {
      const int64_t s = s0 + k, r = r0 + tx;
      if (r < R && s < S) {
        if constexpr (ACC) out[s * R + r] += tile[tx][k];
        else out[s * R + r] = tile[tx][k];
      }
    }
    __syncthreads();
  }
}

}  // namespace

template <class T>
void copy_columns(const T* src, int64_t src_ld, int64_t src_off, T* dst, int64_t dst_ld, int64_t dst_off,
                  int64_t M, int64_t width, bool accumulate) {
  const int64_t n = M * width;
  if (n <= 0) return;
  if (accumulate)
    copy_columns_kernel<T, true><<<grid_for(n), kBlock, 0, compute_stream()>>>(src, src_ld, src_off, dst, dst_ld,
                                                                               dst_off, M, width);
  else
    copy_columns_kernel<T, false><<<grid_for(n), kBlock, 0, compute_stream()>>>(src, src_ld, src_off, dst, dst_ld,
                                                                                dst_off, M, width);
  MG_CUDA_CHECK_LAUNCH("copy_columns_kernel");
}

template <class T>
void transpose_last2(const T* src, T* dst, int64_t nb, int64_t R, int64_t S, bool accumulate) {
  if (nb <= 0 || R <= 0 || S <= 0) return;
  const int64_t gx = (S + kTile - 1) / kTile, gy = (R + kTile - 1) / kTile;
  MG_CHECK(gx <= 0x7fffffff && gy <= 65535, "[cuda transpose] ({}, {}) is too large", R, S);
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy),
                  static_cast<unsigned>(std::min<int64_t>(nb, 65535)));
  const dim3 block(kTile, kTileRows);
  if (accumulate) transpose_kernel<T, true><<<grid, block, 0, compute_stream()>>>(src, dst, nb, R, S);
  else transpose_kernel<T, false><<<grid, block, 0, compute_stream()>>>(src, dst, nb, R, S);
  MG_CUDA_CHECK_LAUNCH("transpose_kernel");
}

#define MG_INSTANTIATE(T)                                                                                     \
  template void copy_columns<T>(const T*, int64_t, int64_t, T*, int64_t, int64_t, int64_t, int64_t, bool); \
  template void transpose_last2<T>(const T*, T*, int64_t, int64_t, int64_t, bool);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace mg::cuda
