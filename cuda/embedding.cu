// Row gather and deterministic row scatter (cuda/embedding.h).
#include <vector>

#include "cuda/embedding.h"
#include "cuda/kernel_util.cuh"

namespace mg::cuda {

using namespace detail;

namespace {

template <class T>
__global__ void gather_rows_kernel(const int32_t* rows, int64_t n, const T* src, T* dst, int64_t C) {
  MG_GRID_STRIDE(k, n * C) {
    const int64_t i = k / C, c = k - i * C;
    dst[k] = src[static_cast<int64_t>(rows[i]) * C + c];
  }
}

template <class T>
__global__ void gather_rows_accumulate_kernel(const int32_t* rows, int64_t n, const T* src, const T* w, T* dst,
                                              int64_t C) {
  MG_GRID_STRIDE(k, n * C) {
    const int64_t i = k / C, c = k - i * C;
    const T v = src[static_cast<int64_t>(rows[i]) * C + c];
    dst[k] += w ? w[i] * v : v;
  }
}

// Block (u, y): destination row urows[u], columns y*kBlock + threadIdx.x; adds the positions
// pos[off[u] .. off[u+1]) in order, starting from dst's value (as the CPU's serial loop).
template <class T>
__global__ void scatter_rows_kernel(const int32_t* urows, const int32_t* off, const int32_t* pos, const T* src,
                                    const T* w, T* dst, int64_t C) {
  const int64_t c = blockIdx.y * int64_t(kBlock) + threadIdx.x;
  if (c >= C) return;
  const int64_t u = blockIdx.x;
  T* d = dst + static_cast<int64_t>(urows[u]) * C + c;
  T acc = *d;
  for (int32_t k = off[u]; k < off[u + 1]; ++k) {
    const int64_t p = pos[k];
    const T v = src[p * C + c];
    acc += w ? w[p] * v : v;
  }
  *d = acc;
}

template <class T, int G>
__global__ void gathered_row_dot_kernel(const int32_t* rows, int64_t n, const T* a, const T* b, T* out, int64_t C) {
  MG_ROW_SETUP(G, n)
  const T* ar = a + static_cast<int64_t>(rows[row]) * C;
  const T* br = b + row * C;
  T dot = 0;
  for (int64_t c = lane; c < C; c += G) dot += ar[c] * br[c];
  dot = group_reduce<G>(dot, SumOp{});
  if (lane == 0) out[row] += dot;
}

}  // namespace

template <class T>
void gather_rows(const int32_t* rows, int64_t n, const T* src, T* dst, int64_t C) {
  if (n * C <= 0) return;
  gather_rows_kernel<<<grid_for(n * C), kBlock, 0, compute_stream()>>>(rows, n, src, dst, C);
  MG_CUDA_CHECK_LAUNCH("gather_rows_kernel");
}

template <class T>
void gather_rows_accumulate(const int32_t* rows, int64_t n, const T* src, const T* w, T* dst, int64_t C) {
  if (n * C <= 0) return;
  gather_rows_accumulate_kernel<<<grid_for(n * C), kBlock, 0, compute_stream()>>>(rows, n, src, w, dst, C);
  MG_CUDA_CHECK_LAUNCH("gather_rows_accumulate_kernel");
}

template <class T>
void scatter_add_rows(const int32_t* host_rows, int64_t n, const T* src, const T* w, T* dst, int64_t C) {
  if (n <= 0 || C <= 0) return;
  MG_CHECK(n < (int64_t(1) << 31), "[cuda scatter_add_rows] {} rows is too many", n);
  // Stable counting sort by destination row: [urows (nu) | off (nu + 1) | pos (n)].
  int32_t max_row = 0;
  for (int64_t i = 0; i < n; ++i) {
    MG_CHECK(host_rows[i] >= 0, "[cuda scatter_add_rows] row index {} at position {} is negative", host_rows[i], i);
    max_row = std::max(max_row, host_rows[i]);
  }
  std::vector<int32_t> count(static_cast<size_t>(max_row) + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++count[host_rows[i]];
  int64_t nu = 0;
  for (int32_t c : count) nu += c > 0;
  std::vector<int32_t> packed(static_cast<size_t>(2 * nu + 1 + n));
  int32_t* urows = packed.data();
  int32_t* off = urows + nu;
  int32_t* pos = off + nu + 1;
  std::vector<int32_t> start(count.size(), 0);  // first slot in pos of each row
  int64_t u = 0;
  int32_t running = 0;
  for (size_t r = 0; r < count.size(); ++r) {
    if (count[r] == 0) continue;
    urows[u] = static_cast<int32_t>(r);
    off[u] = running;
    start[r] = running;
    running += count[r];
    ++u;
  }
  off[nu] = running;
  for (int64_t i = 0; i < n; ++i) pos[start[host_rows[i]]++] = static_cast<int32_t>(i);

  Scratch<int32_t> dev(packed.size());
  copy_host_to_device(dev.ptr, packed.data(), packed.size() * sizeof(int32_t));
  const unsigned col_blocks = static_cast<unsigned>((C + kBlock - 1) / kBlock);
  MG_CHECK(col_blocks <= 65535 && nu <= 0x7fffffff, "[cuda scatter_add_rows] ({}, {}) is too large", nu, C);
  scatter_rows_kernel<<<dim3(static_cast<unsigned>(nu), col_blocks), kBlock, 0, compute_stream()>>>(
      dev.ptr, dev.ptr + nu, dev.ptr + 2 * nu + 1, src, w, dst, C);
  MG_CUDA_CHECK_LAUNCH("scatter_rows_kernel");
}

template <class T>
void gathered_row_dot(const int32_t* rows, int64_t n, const T* a, const T* b, T* out, int64_t C) {
  launch_rows(n, C, [&](auto g, unsigned grid) {
    gathered_row_dot_kernel<T, decltype(g)::value><<<grid, kBlock, 0, compute_stream()>>>(rows, n, a, b, out, C);
  });
  MG_CUDA_CHECK_LAUNCH("gathered_row_dot_kernel");
}

#define MG_INSTANTIATE(T)                                                                               \
  template void gather_rows<T>(const int32_t*, int64_t, const T*, T*, int64_t);                        \
  template void gather_rows_accumulate<T>(const int32_t*, int64_t, const T*, const T*, T*, int64_t);   \
  template void scatter_add_rows<T>(const int32_t*, int64_t, const T*, const T*, T*, int64_t);         \
  template void gathered_row_dot<T>(const int32_t*, int64_t, const T*, const T*, T*, int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace mg::cuda
